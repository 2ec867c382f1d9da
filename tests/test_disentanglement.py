"""Disentanglement scores on codes whose answer is known without running the scores.

A full grid of 4 factors; a code equal to the factors must score near 1, an independent random
code near 0 or chance, and the scores must respect the symmetries their definitions promise.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from dcign.errors import ConfigError
from dcign.scoring.disentanglement import (
    _ValueGroups,
    _weighted_specialisation,
    disentanglement_scores,
    factor_vae_score,
    mig,
    mig_per_factor,
)

SIZES = (6, 5, 4, 4)
NUM_FACTORS = len(SIZES)
CHANCE = 1.0 / NUM_FACTORS
FAST_FACTOR_VAE = {"num_train": 300, "num_eval": 200, "num_variance_estimate": 1000}


@pytest.fixture(scope="module")
def grid() -> np.ndarray:
    """Every combination of factor values once: factors independent and uniform."""
    return np.array(list(itertools.product(*(range(n) for n in SIZES))), dtype=np.int64)


@pytest.fixture(scope="module")
def disentangled(grid) -> np.ndarray:
    """One latent per factor: the factor's value index plus noise far below the value spacing."""
    return grid + 0.01 * np.random.default_rng(1).standard_normal(grid.shape)


@pytest.fixture(scope="module")
def scores_of(grid):
    """Fast-preset scores of a code on the grid, computed once per code."""
    cache: dict[bytes, dict[str, float]] = {}

    def _scores(codes: np.ndarray) -> dict[str, float]:
        key = codes.tobytes()
        if key not in cache:
            cache[key] = disentanglement_scores(codes, grid, seed=0, preset="fast")
        return cache[key]

    return _scores


def _entangled(grid: np.ndarray) -> np.ndarray:
    """Latents are 45-degree rotations of factor pairs: all information kept, none separated."""
    unit = grid / (np.array(SIZES) - 1) * 2 - 1
    first, second, third, fourth = unit.T
    rotated = np.stack([first + second, first - second, third + fourth, third - fourth], axis=1)
    return rotated / np.sqrt(2) + 0.01 * np.random.default_rng(2).standard_normal(grid.shape)


def test_disentangled_code_scores_near_one(disentangled, scores_of):
    scores = scores_of(disentangled)
    assert scores["mig"] > 0.9
    assert scores["dci/disentanglement"] > 0.9
    assert scores["dci/completeness"] > 0.9
    assert scores["dci/informativeness"] > 0.9
    # One-vs-rest linear SVMs on one latent cannot carve out the middle values of a factor, so
    # even a perfect code scores well below 1; it must still be far above a random code.
    assert scores["sap"] > 0.3
    assert scores["beta_vae"] > 0.95
    assert scores["factor_vae"] > 0.95


def test_random_code_scores_near_zero_or_chance(grid, scores_of):
    codes = np.random.default_rng(3).standard_normal((len(grid), NUM_FACTORS))
    scores = scores_of(codes)
    assert scores["mig"] < 0.05
    assert scores["dci/disentanglement"] < 0.2
    assert scores["sap"] < 0.05
    assert scores["beta_vae"] < CHANCE + 0.15
    assert scores["factor_vae"] < CHANCE + 0.15


def test_permuting_latents_keeps_order_invariant_scores(disentangled, scores_of):
    reference = scores_of(disentangled)
    permuted = scores_of(disentangled[:, [2, 0, 3, 1]])
    assert permuted["mig"] == pytest.approx(reference["mig"], abs=1e-12)
    assert permuted["dci/disentanglement"] == pytest.approx(reference["dci/disentanglement"], 0.02)
    assert permuted["factor_vae"] == pytest.approx(reference["factor_vae"], abs=1e-12)


def test_entangled_code_has_much_lower_mig(grid, disentangled, scores_of):
    entangled = scores_of(_entangled(grid))
    assert entangled["mig"] < scores_of(disentangled)["mig"] - 0.5
    # The rotation keeps every factor decodable; only the separation is lost.
    assert entangled["dci/informativeness"] > 0.8


def test_factor_encoded_twice_has_no_mutual_information_gap(grid, disentangled):
    codes = np.concatenate([disentangled, disentangled[:, :1]], axis=1)
    gaps = mig_per_factor(codes, grid)
    assert gaps[0] == pytest.approx(0.0, abs=1e-12)
    assert np.all(gaps[1:] > 0.9)


def test_mig_ignores_monotone_rescaling_of_a_latent(grid, disentangled):
    rescaled = disentangled.copy()
    rescaled[:, 1] = 5.0 * rescaled[:, 1] - 3.0
    assert mig(rescaled, grid) == pytest.approx(mig(disentangled, grid), abs=1e-12)


def test_collapsed_latents_do_not_change_factor_vae(grid, disentangled):
    noisy = disentangled + 2.0 * np.random.default_rng(4).standard_normal(disentangled.shape)
    constant = np.full((len(grid), 2), 0.7)
    with_collapsed = np.concatenate([constant[:, :1], noisy, constant[:, 1:]], axis=1)
    reference = factor_vae_score(noisy, grid, seed=5, **FAST_FACTOR_VAE)
    assert 0.4 < reference < 0.9  # noisy enough that a change would show
    assert factor_vae_score(with_collapsed, grid, seed=5, **FAST_FACTOR_VAE) == reference


def test_factor_vae_of_fully_collapsed_code_is_zero(grid):
    codes = np.zeros((len(grid), 3))
    assert factor_vae_score(codes, grid, seed=0, **FAST_FACTOR_VAE) == 0.0


def test_matching_rows_share_the_fixed_value(grid):
    groups = _ValueGroups.of(grid[:, 2])
    rng = np.random.default_rng(0)
    rows = rng.integers(0, len(grid), size=(50, 8))
    partners = groups.draw_matching(rows, rng)
    assert np.array_equal(grid[partners, 2], grid[rows, 2])
    assert len(np.unique(partners)) > 100  # drawn across the group, not the row itself


def test_specialisation_is_one_for_one_to_one_and_zero_for_uniform_importance():
    assert _weighted_specialisation(np.eye(4)) == pytest.approx(1.0)
    assert _weighted_specialisation(np.ones((4, 4))) == pytest.approx(0.0, abs=1e-9)


def test_same_seed_gives_same_scores(grid, disentangled, scores_of):
    noisy = disentangled + 0.5 * np.random.default_rng(6).standard_normal(disentangled.shape)
    again = disentanglement_scores(noisy, grid, seed=0, preset="fast")
    assert again == scores_of(noisy)


def test_factor_names_add_per_factor_keys(grid, disentangled):
    names = ["identity", "azimuth", "elevation", "light"]
    scores = disentanglement_scores(disentangled, grid, preset="fast", factor_names=names)
    for name in names:
        assert scores[f"mig/{name}"] > 0.9
        assert f"sap/{name}" in scores
    assert np.mean([scores[f"mig/{name}"] for name in names]) == pytest.approx(scores["mig"])


@pytest.mark.parametrize(
    ("codes", "factors", "message"),
    [
        (np.zeros((60, 3, 1)), np.zeros((60, 2), int), r"codes must be \[N, D\]"),
        (np.zeros((60, 3)), np.zeros((59, 2), int), "same observations"),
        (np.zeros((10, 3)), np.arange(20).reshape(10, 2), "at least 50 observations"),
        (np.zeros((60, 1)), np.arange(120).reshape(60, 2), "at least 2 latents"),
        (np.full((60, 3), np.nan), np.arange(120).reshape(60, 2), "finite"),
        (np.zeros((60, 3)), np.arange(120.0).reshape(60, 2), "integer value indices"),
        (np.zeros((60, 3)), np.stack([np.arange(60), np.zeros(60, int)], 1), r"column\(s\) \[1\]"),
    ],
)
def test_bad_inputs_raise_helpful_errors(codes, factors, message):
    with pytest.raises(ValueError, match=message):
        disentanglement_scores(codes, factors, preset="fast")


def test_bad_preset_and_factor_names_raise(grid, disentangled):
    with pytest.raises(ConfigError, match="preset must be one of"):
        disentanglement_scores(disentangled, grid, preset="slow")
    with pytest.raises(ConfigError, match="4 distinct names"):
        disentanglement_scores(disentangled, grid, preset="fast", factor_names=["a", "b"])
