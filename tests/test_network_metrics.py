"""The evaluation suite's conventions for DC-IGN and for the entangled baseline."""

from __future__ import annotations

import pytest
import torch

from dcign.batch import GroupedBatch
from dcign.model.layout import LatentLayout
from dcign.scoring.network_metrics import FactorInfo, NetworkMetrics, discrete_factors

LAYOUT = LatentLayout.from_sizes({"azimuth": 1, "intrinsic": None}, 3)
FACTORS = [FactorInfo("azimuth", 0, periodic=False)]


class LinearNet:
    """Encoder: code = (azimuth, identity, 0) read from the 'image'; decoder: the reverse."""

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = x.flatten(1)
        mu = torch.stack([flat[:, 0], flat[:, 1], torch.zeros_like(flat[:, 0])], dim=1)
        return mu, torch.zeros_like(mu)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        image = torch.zeros(z.shape[0], 1, 1, 2)
        image[:, 0, 0, 0], image[:, 0, 0, 1] = z[:, 0], z[:, 1]
        return image


def azimuth_batch() -> GroupedBatch:
    # Two azimuth groups of 3 images: pixel 0 = azimuth, pixel 1 = identity (fixed per group).
    azimuth = torch.tensor([[0.1, 0.5, 0.9], [0.2, 0.4, 0.8]])
    identity = torch.tensor([[0.3] * 3, [0.7] * 3])
    images = torch.stack([azimuth, identity], dim=-1).view(2, 3, 1, 1, 2)
    return GroupedBatch(
        images=images,
        factors=azimuth[..., None],
        identity=torch.tensor([[0] * 3, [1] * 3]),
        group_type=torch.tensor([0, 0]),
    )


def test_perfect_code_transfers_exactly_and_is_invariant():
    metrics = NetworkMetrics(LAYOUT, FACTORS)
    metrics.update(LinearNet(), azimuth_batch())
    results = metrics.compute(scores_preset=None)
    assert results["novel_view_mse/azimuth"] == 0.0
    assert results["novel_view_gain/azimuth"] == 1.0
    assert abs(results["equivariance/azimuth"] - 1.0) < 1e-9
    assert results["invariance/azimuth"] == 0.0


def test_baseline_is_scored_with_latents_chosen_on_other_groups():
    metrics = NetworkMetrics(LAYOUT, FACTORS, entangled=True)
    assert not metrics.ready
    with pytest.raises(RuntimeError, match="observe"):
        metrics.update(LinearNet(), azimuth_batch())
    # Groups seen before scoring in which latent 1 (not 0) varies: latent 1 becomes "azimuth",
    # and the scored groups, where only latent 0 moves, cannot change that choice.
    misleading = torch.tensor([[[0.0, 0.1, 0.0], [0.0, 0.9, 0.0], [0.0, 0.4, 0.0]]])
    metrics.selection.observe(misleading, torch.tensor([0]))
    assert metrics.selection.choose()[0].tolist() == [False, True, False]
    metrics.update(LinearNet(), azimuth_batch())
    results = metrics.compute(scores_preset=None)
    # Moving latent 1 (identity) between views of one scene re-renders nothing: gain 0. Latent 1
    # is constant within each group, so it predicts azimuth no better than the group means do.
    assert results["novel_view_gain/azimuth"] == 0.0
    assert results["equivariance/azimuth"] < 0.5
    # A choice made on groups where latent 0 varies transfers exactly; it survives reset().
    right = torch.tensor([[[0.1, 0.0, 0.0], [0.9, 0.0, 0.0], [0.4, 0.0, 0.0]]])
    metrics.selection.observe(right, torch.tensor([0]))
    metrics.selection.choose()
    metrics.reset()
    assert metrics.ready
    metrics.update(LinearNet(), azimuth_batch())
    results = metrics.compute(scores_preset=None)
    assert results["novel_view_gain/azimuth"] == 1.0
    assert abs(results["equivariance/azimuth"] - 1.0) < 1e-9


def test_discrete_factors_drops_constant_columns():
    labels = torch.tensor([[0.5, 1.0, 3.0], [0.7, 1.0, 3.0], [0.5, 1.0, 4.0]]).numpy()
    codes, names = discrete_factors(labels, ["azimuth", "light", "identity"])
    assert names == ["azimuth", "identity"]
    assert codes.tolist() == [[0, 0], [1, 0], [0, 1]]


def test_a_group_larger_than_its_values_counts_each_pair_once():
    """Five elevations in a group of 10 come twice each (the sampler cycles through them): of
    the ten (s, s + 1) pairs, five are distinct, and only those are scored."""
    from dcign.model.editing import distinct_pairs

    values = torch.tensor([3.0, 1.0, 4.0, 0.0, 2.0] * 2)
    keys = torch.stack([torch.zeros(10), values], dim=-1)[None]
    assert distinct_pairs(keys).tolist() == [[True] * 5 + [False] * 5]
    # Seven light values in 10: pairs 7, 8 repeat pairs 0, 1; pair 9 (value 2 -> 0) is new.
    light = torch.tensor([0.0, 1, 2, 3, 4, 5, 6, 0, 1, 2])
    keys = torch.stack([torch.zeros(10), light], dim=-1)[None]
    assert distinct_pairs(keys).tolist() == [[True] * 7 + [False, False, True]]
    # Three values in 4: the last image is the first again, a pair of an image with itself.
    keys = torch.tensor([0.0, 1, 2, 0]).view(1, 4, 1)
    assert distinct_pairs(keys).tolist() == [[True, True, True, False]]
