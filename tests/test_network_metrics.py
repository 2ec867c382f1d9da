"""The evaluation suite's conventions for DC-IGN and for the entangled baseline."""

from __future__ import annotations

import torch

from dcign.evaluation import FactorInfo, NetworkMetrics, discrete_factors
from dcign.layout import LatentLayout

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


def azimuth_batch() -> dict[str, torch.Tensor]:
    # Two azimuth groups of 3 images: pixel 0 = azimuth, pixel 1 = identity (fixed per group).
    azimuth = torch.tensor([[0.1, 0.5, 0.9], [0.2, 0.4, 0.8]])
    identity = torch.tensor([[0.3] * 3, [0.7] * 3])
    images = torch.stack([azimuth, identity], dim=-1).view(2, 3, 1, 1, 2)
    return {
        "images": images,
        "group_type": torch.tensor([0, 0]),
        "factors": azimuth[..., None],
        "identity": torch.tensor([[0] * 3, [1] * 3]),
    }


def test_perfect_code_transfers_exactly_and_is_invariant():
    metrics = NetworkMetrics(LAYOUT, FACTORS)
    metrics.update(LinearNet(), azimuth_batch())
    results = metrics.compute(scores_preset=None)
    assert results["novel_view_mse/azimuth"] == 0.0
    assert results["novel_view_gain/azimuth"] == 1.0
    assert abs(results["equivariance/azimuth"] - 1.0) < 1e-9
    assert results["invariance/azimuth"] == 0.0


def test_baseline_latents_are_fixed_per_factor_after_a_selection_pass():
    metrics = NetworkMetrics(LAYOUT, FACTORS, entangled=True)
    assert metrics.selection is None
    metrics.update(LinearNet(), azimuth_batch())
    metrics.compute(scores_preset=None)
    # Latent 0 varies within azimuth groups; it is chosen for azimuth from now on.
    assert metrics.selection[0].tolist() == [True, False, False]
    metrics.reset()
    assert metrics.selection is not None  # survives the reset of the running states
    metrics.update(LinearNet(), azimuth_batch())
    assert metrics.compute(scores_preset=None)["novel_view_gain/azimuth"] == 1.0


def test_discrete_factors_drops_constant_columns():
    labels = torch.tensor([[0.5, 1.0, 3.0], [0.7, 1.0, 3.0], [0.5, 1.0, 4.0]]).numpy()
    codes, names = discrete_factors(labels, ["azimuth", "light", "identity"])
    assert names == ["azimuth", "identity"]
    assert codes.tolist() == [[0, 0], [1, 0], [0, 1]]
