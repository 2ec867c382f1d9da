"""Evaluation metrics against closed-form values, merged rank states and bad inputs."""

from __future__ import annotations

import math

import pytest
import torch

from dcign.model.editing import pair_with_next, transfer
from dcign.scoring.metrics import CodeUse, Equivariance, Invariance, NovelViewMSE, PixelMSE

TYPES = ["azimuth", "elevation", "light", "intrinsic"]


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _full_turn(count: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(count, generator=_generator(seed), dtype=torch.float64) * 2 * math.pi


# --- PixelMSE ---------------------------------------------------------------------------------


def test_pixel_mse_hand_computed() -> None:
    target = torch.tensor([0.1, 0.2, 0.3, 0.4]).reshape(1, 1, 2, 2)
    metric = PixelMSE()
    metric.update(torch.zeros_like(target), target)
    # (0.01 + 0.04 + 0.09 + 0.16) / 4 elements
    assert metric.compute().item() == pytest.approx(0.075)


def test_pixel_mse_weights_every_element_equally_across_updates() -> None:
    pred = torch.rand(5, 1, 4, 4, generator=_generator(1))
    target = torch.rand(5, 1, 4, 4, generator=_generator(2))
    split = PixelMSE()
    split.update(pred[:1], target[:1])
    split.update(pred[1:], target[1:])
    whole = PixelMSE()
    whole.update(pred, target)
    assert split.compute().item() == pytest.approx(whole.compute().item(), rel=1e-6)
    assert whole.compute().item() == pytest.approx(((pred - target) ** 2).mean().item(), rel=1e-6)


# --- CodeUse ----------------------------------------------------------------------------------


def test_code_use_by_hand() -> None:
    # Two images per update, one pixel: images 0 and 1 (variance 0.5), reconstructions 0.25 and
    # 0.75 (variance 0.125) -> 0.25; a network that decodes both to 0.5 scores 0 (collapsed).
    images = torch.tensor([0.0, 1.0]).view(2, 1, 1, 1)
    halfway = CodeUse()
    halfway.update(torch.tensor([0.25, 0.75]).view(2, 1, 1, 1), images)
    halfway.update(torch.tensor([0.25, 0.75]).view(2, 1, 1, 1), images)
    assert halfway.compute().item() == pytest.approx(0.25)
    collapsed = CodeUse()
    collapsed.update(torch.full((2, 1, 1, 1), 0.5), images)
    assert collapsed.compute().item() == 0.0
    faithful = CodeUse()
    faithful.update(images.expand(2, 3, 2, 2), images.expand(2, 3, 2, 2))
    assert faithful.compute().item() == pytest.approx(1.0)
    assert math.isnan(CodeUse().compute().item())


# --- NovelViewMSE -----------------------------------------------------------------------------


def _stack(*values: float) -> torch.Tensor:
    """``[G, S=2, C=1, H=2, W=2]`` images, group g filled with ``values[g]``."""
    return torch.tensor(values).reshape(-1, 1, 1, 1, 1).expand(-1, 2, 1, 2, 2).clone()


def test_novel_view_gain_cases_by_hand() -> None:
    # Targets are 0, so each MSE is the square of the filled value.
    # group 0 (azimuth): edit reproduces the target, as the oracle does -> gain 1
    # group 1 (light): edit halfway between nochange (0.16) and oracle (0.01) -> gain 0.5
    # group 2 (azimuth): same as group 0
    # group 3 (elevation): edit equals no edit -> gain 0
    halfway = math.sqrt((0.16 + 0.01) / 2)
    metric = NovelViewMSE(TYPES)
    metric.update(
        group_type=torch.tensor([0, 2, 0, 1]),
        model=_stack(0.0, halfway, 0.0, 0.4),
        oracle=_stack(0.0, 0.1, 0.0, 0.1),
        nochange=_stack(0.4, 0.4, 0.4, 0.4),
        target=_stack(0.0, 0.0, 0.0, 0.0),
        source=_stack(0.5, 0.5, 0.5, 0.5),
    )
    result = {key: value.item() for key, value in metric.compute().items()}
    expected = {
        "azimuth": (0.0, 0.0, 0.16, 1.0),
        "light": (0.085, 0.01, 0.16, 0.5),
        "elevation": (0.16, 0.01, 0.16, 0.0),
    }
    assert len(result) == 5 * len(expected)
    assert not any(key.endswith("/intrinsic") for key in result)
    # Each group holds S pairs; azimuth had two groups.
    size = _stack(0.0, 0.0, 0.0, 0.0).shape[1]
    assert [result[f"novel_view_pairs/{n}"] for n in expected] == [2 * size, size, size]
    for name, (model, oracle, nochange, gain) in expected.items():
        assert result[f"novel_view_mse/{name}"] == pytest.approx(model, abs=1e-6)
        assert result[f"novel_view_oracle/{name}"] == pytest.approx(oracle, abs=1e-6)
        assert result[f"novel_view_nochange/{name}"] == pytest.approx(nochange, abs=1e-6)
        assert result[f"novel_view_gain/{name}"] == pytest.approx(gain, abs=1e-5)


def test_novel_view_mse_averages_groups_of_a_type_over_updates() -> None:
    metric = NovelViewMSE(TYPES)
    for value in (0.2, 0.0):
        metric.update(
            torch.tensor([3]), _stack(value), _stack(0.0), _stack(0.5), _stack(0.0), _stack(0.5)
        )
    result = metric.compute()
    assert result["novel_view_mse/intrinsic"].item() == pytest.approx(0.02)
    assert result["novel_view_gain/intrinsic"].item() == pytest.approx((0.25 - 0.02) / 0.25)


def test_novel_view_gain_is_nan_when_the_factor_does_not_change_the_image() -> None:
    # a == b (source == target): the bounds coincide and there is nothing to gain.
    metric = NovelViewMSE(TYPES)
    metric.update(
        torch.tensor([0]), _stack(0.1), _stack(0.3), _stack(0.3), _stack(0.0), _stack(0.0)
    )
    assert math.isnan(metric.compute()["novel_view_gain/azimuth"].item())


def test_novel_view_gain_of_a_collapsed_network_is_zero_not_nan() -> None:
    # a != b but the network decodes every code to the same image (oracle == nochange == model):
    # editing cannot help, and a comparison with this network must stay a number.
    metric = NovelViewMSE(TYPES)
    blank = _stack(0.3)
    metric.update(torch.tensor([0]), blank, blank, blank, _stack(0.0), _stack(0.6))
    assert metric.compute()["novel_view_gain/azimuth"].item() == 0.0


def test_novel_view_from_edited_codes() -> None:
    """The intended use: pairs from ``pair_with_next``, edits from ``transfer``.

    With the identity as decoder, images are codes. Within a group only latent 0 varies, so
    moving latent 0 from b into a re-renders b exactly (gain 1) and moving latent 1 changes
    nothing (gain 0).
    """
    codes = torch.randn(3, 1, 3, generator=_generator(3)).expand(-1, 4, -1).clone()
    codes[..., 0] = torch.randn(3, 4, generator=_generator(4))
    partners = pair_with_next(codes)
    right, wrong = torch.tensor([True, False, False]), torch.tensor([False, True, False])

    def as_images(group_codes: torch.Tensor) -> torch.Tensor:
        return group_codes[:, :, None, None, :]

    gains = []
    for dims in (right, wrong):
        metric = NovelViewMSE(["factor"])
        metric.update(
            torch.zeros(3, dtype=torch.long),
            as_images(transfer(codes, partners, dims)),
            as_images(partners),
            as_images(codes),
            as_images(partners),
            as_images(codes),
        )
        gains.append(metric.compute()["novel_view_gain/factor"].item())
    assert gains == pytest.approx([1.0, 0.0], abs=1e-6)


# --- Equivariance -----------------------------------------------------------------------------


def _equivariance(latents: torch.Tensor, values: torch.Tensor, **kwargs) -> float:
    metric = Equivariance(**kwargs)
    metric.update(latents, values)
    return metric.compute().item()


def test_equivariance_exact_linear_code_scores_one() -> None:
    values = _full_turn(200)
    assert _equivariance(3 * values[:, None] + 1, values) == pytest.approx(1.0, abs=1e-9)


def test_equivariance_ignores_a_collapsed_latent() -> None:
    values = _full_turn(50)
    latents = torch.stack([torch.full_like(values, 0.3), values], dim=1)
    assert _equivariance(latents, values) == pytest.approx(1.0, abs=1e-9)


def test_equivariance_independent_noise_scores_near_zero() -> None:
    values = _full_turn(2000)
    noise = torch.randn(2000, 1, generator=_generator(5))
    assert 0.0 <= _equivariance(noise, values) < 0.01


def test_equivariance_noisy_code_matches_signal_to_noise_ratio() -> None:
    values = torch.randn(20_000, generator=_generator(6), dtype=torch.float64)
    noise = 0.5 * torch.randn(20_000, generator=_generator(7), dtype=torch.float64)
    # R^2 of a linear fit is corr^2 = var(signal) / (var(signal) + var(noise)) = 1 / 1.25
    assert _equivariance((values + noise)[:, None], values) == pytest.approx(0.8, abs=0.01)


def test_equivariance_periodic_rewards_the_circle_not_the_angle() -> None:
    values = _full_turn(2000)
    circle = torch.stack([values.cos(), values.sin()], dim=1)
    rotation = torch.tensor([[0.6, -0.8], [0.8, 0.6]], dtype=torch.float64)
    latents = 2.5 * circle @ rotation.T + torch.tensor([1.0, -3.0], dtype=torch.float64)
    assert _equivariance(latents, values, periodic=True) == pytest.approx(1.0, abs=1e-9)
    # v itself jumps from 2*pi to 0 at the same view. For uniform v, cov(v, cos v) = 0 and
    # cov(v, sin v) = -1 with var(v) = pi^2/3, var(sin v) = 1/2: R^2 is 0 and 6/pi^2.
    angle = _equivariance(values[:, None], values, periodic=True)
    assert angle == pytest.approx(3 / math.pi**2, abs=0.05)
    assert angle < 0.5


def test_equivariance_best_single_picks_the_informative_column() -> None:
    values = _full_turn(1000)
    latents = torch.randn(1000, 4, generator=_generator(8), dtype=torch.float64)
    latents[:, 2] = 2 * values - 1 + 0.1 * latents[:, 2]
    best = _equivariance(latents, values, mode="best_single")
    assert best == pytest.approx(_equivariance(latents[:, 2:3], values), abs=1e-12)
    assert best > 0.99
    assert _equivariance(latents[:, [0, 1, 3]], values, mode="best_single") < 0.02


def test_equivariance_is_nan_without_enough_samples_or_spread() -> None:
    values = _full_turn(4)
    latents = torch.randn(4, 2, generator=_generator(9), dtype=torch.float64)
    assert math.isnan(_equivariance(latents[:3], values[:3]))
    assert not math.isnan(_equivariance(latents, values))
    assert math.isnan(_equivariance(latents, torch.full((4,), 0.7)))


# --- Invariance -------------------------------------------------------------------------------

MASKS = torch.tensor(
    [[True, False, False, False], [False, True, False, False], [False, False, True, True]]
)
NAMES = ["azimuth", "light", "intrinsic"]


def _grouped_codes(group_type: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    """Codes whose inactive latents are fixed within each group and differ between groups."""
    generator = _generator(seed)
    base = torch.randn(len(group_type), 1, 4, generator=generator).expand(-1, size, -1)
    varying = torch.randn(len(group_type), size, 4, generator=generator)
    return torch.where(MASKS[group_type][:, None, :], varying, base)


def test_invariance_hand_computed_mixed_types() -> None:
    metric = Invariance(torch.tensor([[True, False], [False, True], [True, True]]), ["x", "y", "z"])
    codes = torch.tensor([[[0.0, 0.0], [1.0, 2.0]], [[0.0, 1.0], [0.0, 1.0]]])
    metric.update(codes, torch.tensor([0, 1]))
    result = metric.compute()
    # Total (unbiased) variances: latent 0 over (0, 1, 0, 0) is 0.25, latent 1 over
    # (0, 2, 1, 1) is 2/3. Group x varies latent 1 by 2; group y keeps latent 0 at 0.
    assert set(result) == {"invariance/x", "invariance/y"}
    assert result["invariance/x"].item() == pytest.approx(2 / (2 / 3))
    assert result["invariance/y"].item() == pytest.approx(0.0)


def test_invariance_zero_for_an_invariant_code() -> None:
    group_type = torch.tensor([0, 1, 2, 0, 1, 2, 2, 0])
    metric = Invariance(MASKS, NAMES)
    metric.update(_grouped_codes(group_type, size=5, seed=10), group_type)
    assert all(value.item() == pytest.approx(0.0, abs=1e-12) for value in metric.compute().values())


def test_invariance_near_one_when_latents_ignore_the_group() -> None:
    group_type = torch.arange(300) % 2
    metric = Invariance(MASKS)
    metric.update(torch.randn(300, 3, 4, generator=_generator(11)), group_type)
    result = metric.compute()
    assert set(result) == {"invariance/0", "invariance/1"}
    assert all(value.item() == pytest.approx(1.0, abs=0.1) for value in result.values())


def test_invariance_nan_when_inactive_latents_never_vary() -> None:
    codes = torch.zeros(2, 3, 4)
    codes[..., 0] = torch.randn(2, 3, generator=_generator(12))
    metric = Invariance(MASKS, NAMES)
    metric.update(codes, torch.tensor([0, 0]))
    assert math.isnan(metric.compute()["invariance/azimuth"].item())


# --- Two ranks: merged states equal one metric fed everything ---------------------------------


def _assert_same(merged, single) -> None:
    if isinstance(single, dict):
        assert merged.keys() == single.keys()
        for key in single:
            _assert_same(merged[key], single[key])
    else:
        torch.testing.assert_close(merged, single, equal_nan=True)


def _check_two_ranks(make, batches: list[tuple]) -> None:
    """Feed ``batches`` to two "ranks" alternately, merge as DDP's sync would, compare."""
    ranks, single = (make(), make()), make()
    for index, batch in enumerate(batches):
        ranks[index % 2].update(*batch)
        single.update(*batch)
    ranks[0].merge_state(ranks[1])
    _assert_same(ranks[0].compute(), single.compute())


def test_two_ranks_pixel_mse() -> None:
    images = torch.rand(4, 6, 1, 3, 3, generator=_generator(13))
    _check_two_ranks(PixelMSE, [(images[i], images[i].flip(0)) for i in range(4)])


def test_two_ranks_novel_view_mse() -> None:
    stacks = torch.rand(4, 5, 3, 2, 1, 3, 3, generator=_generator(14))
    types = torch.tensor([[0, 2, 2], [1, 0, 0], [0, 0, 2], [2, 2, 2]])
    batches = [(types[i], *stacks[i]) for i in range(4)]
    _check_two_ranks(lambda: NovelViewMSE(TYPES), batches)


@pytest.mark.parametrize(("periodic", "mode"), [(False, "group"), (True, "best_single")])
def test_two_ranks_equivariance(periodic: bool, mode: str) -> None:
    values = _full_turn(40, seed=15).reshape(4, 10)
    latents = torch.randn(4, 10, 3, generator=_generator(16), dtype=torch.float64)
    latents[..., 0] += values
    batches = [(latents[i], values[i]) for i in range(4)]
    _check_two_ranks(lambda: Equivariance(periodic=periodic, mode=mode), batches)


def test_two_ranks_invariance() -> None:
    types = [torch.tensor([0, 1, 2]), torch.tensor([2, 2, 0]), torch.tensor([1, 0, 1])]
    batches = [
        (_grouped_codes(t, 4, seed) + 0.3 * torch.randn(3, 4, 4, generator=_generator(seed)), t)
        for seed, t in enumerate(types)
    ]
    _check_two_ranks(lambda: Invariance(MASKS, NAMES), batches)


# --- Bad inputs -------------------------------------------------------------------------------


def test_bad_shapes_raise_helpful_errors() -> None:
    images = torch.zeros(2, 3, 1, 4, 4)
    novel = NovelViewMSE(TYPES)
    cases = [
        (lambda: PixelMSE().update(torch.zeros(2, 3), torch.zeros(3, 2)), "same shape"),
        (
            lambda: novel.update(torch.tensor([0, 1]), images[0], images, images, images, images),
            "model",
        ),
        (
            lambda: novel.update(torch.tensor([0]), images, images, images, images, images),
            "group_type",
        ),
        (
            lambda: novel.update(torch.tensor([0, 4]), images, images, images, images, images),
            r"\[0, 4\)",
        ),
        (lambda: novel.update(torch.zeros(2), images, images, images, images, images), "integer"),
        (lambda: Equivariance().update(torch.zeros(5), torch.zeros(5)), r"latents\[:, None\]"),
        (lambda: Equivariance().update(torch.zeros(5, 1), torch.zeros(4)), r"\[N, k\]"),
        (lambda: Invariance(MASKS).update(torch.zeros(2, 3, 5), torch.tensor([0, 1])), "D=4"),
        (lambda: Invariance(MASKS).update(torch.zeros(2, 1, 4), torch.tensor([0, 1])), "S >= 2"),
        (lambda: Invariance(MASKS.float()), "boolean"),
        (lambda: Invariance(MASKS, ["a", "b"]), "3 distinct"),
        (lambda: NovelViewMSE([]), "distinct names"),
        (lambda: Equivariance(mode="best"), "best_single"),
    ]
    for action, message in cases:
        with pytest.raises(ValueError, match=message):
            action()


def test_equivariance_rejects_a_changing_group_width() -> None:
    metric = Equivariance()
    metric.update(torch.zeros(3, 2), torch.zeros(3))
    with pytest.raises(ValueError, match="one group"):
        metric.update(torch.zeros(3, 1), torch.zeros(3))


def test_novel_view_counts_only_the_pairs_it_is_told_to() -> None:
    # One azimuth group of 4 pairs with squared errors 1, 4, 1, 4 (as if pairs 0 and 1 came
    # twice); counting pairs 0 and 1 only gives the distinct pairs' mean, (1 + 4) / 2.
    target = torch.zeros(1, 4, 1, 1, 1)
    model = torch.tensor([1.0, 2.0, 1.0, 2.0]).view(1, 4, 1, 1, 1)
    metric = NovelViewMSE(TYPES)
    metric.update(
        torch.tensor([0]),
        model,
        target,
        model,
        target,
        model,
        counted=torch.tensor([[True, True, False, False]]),
    )
    result = metric.compute()
    assert float(result["novel_view_mse/azimuth"]) == pytest.approx(2.5)
    assert float(result["novel_view_pairs/azimuth"]) == 2
