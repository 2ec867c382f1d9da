"""The detail term (``model.objective.detail_weight``): a Laplacian pyramid's bands, by hand."""

from __future__ import annotations

import pytest
import torch

from dcign.errors import ConfigError
from dcign.model.losses import detail_error, laplacian_bands
from dcign.model.objectives.base import SGVBObjective
from dcign.model.objectives.dcign import DCIGNObjective

SIDE = 32
BLACK = -60.0  # a logit whose sigmoid is 0 to far below the tolerance


def impulse(side: int = SIDE) -> torch.Tensor:
    """One white pixel in the middle of a black image, ``[1, 1, side, side]``."""
    image = torch.zeros(1, 1, side, side, dtype=torch.float64)
    image[..., side // 2, side // 2] = 1.0
    return image


# The binomial filter's taps, and what an impulse becomes one level down: the blur
# (1 4 6 4 1)/16 in each direction, read at every second pixel (offsets -2, 0, 2: 1, 6, 1).
LEVEL_ONE = [0, 0, 16 / 256, 96 / 256, 16 / 256, 0, 0]
# That level blurred again: (1 6 1)/16 convolved with the taps, worked out by hand.
LEVEL_ONE_BLURRED = [1 / 256, 10 / 256, 31 / 256, 44 / 256, 31 / 256, 10 / 256, 1 / 256]


def test_the_finest_band_of_an_impulse_by_hand():
    # The impulse minus its blur: 1 - 36/256 at the pixel, the blur's other taps around it,
    # which sum to 1 - 36/256 as well.
    error = detail_error(torch.full((1, 1, SIDE, SIDE), BLACK, dtype=torch.float64), impulse(), 32)
    torch.testing.assert_close(error, torch.tensor([2 * (1 - 36 / 256)], dtype=torch.float64))


def test_two_bands_of_an_impulse_by_hand():
    first = 2 * (1 - 36 / 256)
    second = sum(
        abs(LEVEL_ONE[i] * LEVEL_ONE[j] - LEVEL_ONE_BLURRED[i] * LEVEL_ONE_BLURRED[j])
        for i in range(7)
        for j in range(7)
    )
    error = detail_error(torch.full((1, 1, SIDE, SIDE), BLACK, dtype=torch.float64), impulse(), 16)
    torch.testing.assert_close(error, torch.tensor([first + second], dtype=torch.float64))


def test_bands_stop_at_the_smallest_side():
    sides = [band.shape[-1] for band in laplacian_bands(torch.rand(2, 3, 32, 32))]
    assert sides == [32, 16, 8]
    assert [band.shape[-1] for band in laplacian_bands(torch.rand(1, 1, 64, 48), 16)] == [48, 24]


def test_flat_images_and_the_truth_itself_have_no_detail_error():
    flat = torch.full((2, 1, SIDE, SIDE), 0.7, dtype=torch.float64)
    other_flat = torch.full_like(flat, torch.logit(torch.tensor(0.2)).item())
    torch.testing.assert_close(detail_error(other_flat, flat), torch.zeros(2, dtype=torch.float64))
    truth = torch.rand(2, 1, SIDE, SIDE, dtype=torch.float64) * 0.8 + 0.1
    torch.testing.assert_close(
        detail_error(torch.logit(truth), truth), torch.zeros(2, dtype=torch.float64)
    )


def test_a_blur_costs_detail_and_leading_dims_are_kept():
    truth = torch.rand(2, 3, 1, 16, 16, dtype=torch.float64) * 0.8 + 0.1
    blurred = torch.nn.functional.avg_pool2d(truth.flatten(0, 1), 3, 1, 1, count_include_pad=False)
    error = detail_error(torch.logit(blurred.view_as(truth)), truth)
    assert error.shape == (2, 3)
    assert bool((error > 0.1).all())


def test_the_term_is_float32_under_bf16_autocast():
    truth = torch.rand(2, 1, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = torch.nn.functional.conv2d(truth, torch.ones(1, 1, 1, 1))
        assert logits.dtype == torch.bfloat16
        error = detail_error(logits, truth)
    assert error.dtype == torch.float32


class ImageDecoder:
    """A fixed linear map from 4 latents to an 8x8 image: one band of detail."""

    def __init__(self) -> None:
        gen = torch.Generator().manual_seed(3)
        self.weight = torch.randn(64, 4, generator=gen, dtype=torch.float64)

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return (z @ self.weight.T).view(-1, 1, 8, 8)


@pytest.mark.parametrize("objective", [DCIGNObjective, SGVBObjective])
def test_detail_weight_adds_the_weighted_term_to_the_loss(objective):
    gen = torch.Generator().manual_seed(4)
    mu = torch.randn(2, 3, 4, generator=gen, dtype=torch.float64)
    logvar = torch.zeros_like(mu)
    x = torch.rand(2, 3, 1, 8, 8, generator=gen, dtype=torch.float64)
    active = torch.tensor([[True, False, False, False], [False, True, True, True]])
    noise = torch.zeros_like(mu)
    decoder = ImageDecoder()

    def encode(images):
        return mu.flatten(0, 1), logvar.flatten(0, 1)

    off = objective(detail_weight=0.0).loss(encode, decoder, x, active, noise)
    on = objective(detail_weight=2.5).loss(encode, decoder, x, active, noise)
    # What the decoder drew for each image: its own code for the baseline, and for DC-IGN's
    # partner clamping the held latents of image (s + 1) mod 3 of its group.
    drawn = mu.clone()
    if objective is DCIGNObjective:
        partner = mu.roll(-1, dims=1)
        drawn = torch.where(active[:, None, :], mu, partner)
    expected = detail_error(decoder(drawn.flatten(0, 1)).view_as(x), x).mean()
    assert on.detail is not None and off.detail is None
    torch.testing.assert_close(on.detail, expected)
    torch.testing.assert_close(on.total - off.total, 2.5 * expected)
    torch.testing.assert_close(on.reconstruction, off.reconstruction)


@pytest.mark.parametrize("weight", [-1.0, float("nan"), "much", True])
def test_a_detail_weight_that_is_not_a_number_at_least_0_is_a_user_error(weight):
    with pytest.raises(ConfigError, match="model.objective.detail_weight"):
        DCIGNObjective(detail_weight=weight)
