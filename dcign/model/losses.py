"""Per-image terms of the SGVB objective.

Kept apart from the networks so that DC-IGN and the entangled baseline share one definition of
the likelihood and the KL term, and so tests can check each term against its closed form.
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import torch
import torch.nn.functional as F

Likelihood = Literal["bernoulli", "gaussian"]


def reconstruction_nll(
    logits: torch.Tensor,
    target: torch.Tensor,
    likelihood: Likelihood = "bernoulli",
    sigma: float = 0.1,
) -> torch.Tensor:
    """``-log P(x | z)`` summed over pixels, one value per image (leading dims kept).

    Bernoulli on [0, 1] pixels is the paper's choice (binary cross-entropy). The Gaussian option
    treats ``sigmoid(logits)`` as the mean with a fixed ``sigma``, for users who prefer an MSE
    flavoured likelihood on grey-level images.
    """
    if likelihood == "bernoulli":
        per_pixel = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    elif likelihood == "gaussian":
        mean = torch.sigmoid(logits)
        per_pixel = 0.5 * ((target - mean) / sigma).square() + math.log(
            sigma * math.sqrt(2 * math.pi)
        )
    else:
        raise ValueError(f"Unknown likelihood {likelihood!r}; expected bernoulli or gaussian.")
    return per_pixel.flatten(-3).sum(dim=-1)


def kl_per_latent(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, exp(logvar)) || N(0, 1))`` of each latent, shaped like ``mu``."""
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar)


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, exp(logvar)) || N(0, I))`` summed over latents, one value per image."""
    return kl_per_latent(mu, logvar).sum(dim=-1)


# The binomial 5-tap filter (1 4 6 4 1) / 16: the classic Laplacian pyramid's low-pass, which
# separates a face's features (a few pixels wide) from its outline and shading.
_BINOMIAL = (1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16)


@functools.cache
def _blur_matrix(side: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The binomial filter along one side of ``side`` pixels, edges reflected, as a matrix.

    A blur is then ``M @ image @ M.T``: two small matrix products, several times faster on a
    CPU than a one-channel convolution and its backward pass at these sizes. Kept per device
    and dtype, so a training step copies nothing to the device.
    """
    if side < 3:
        raise ValueError(f"An image side of {side} pixels is too small to blur (at least 3).")
    matrix = torch.zeros(side, side, dtype=torch.float64)
    for row in range(side):
        for offset, tap in zip(range(-2, 3), _BINOMIAL, strict=True):
            column = abs(row + offset)  # reflected at the first pixel
            if column > side - 1:  # and at the last
                column = 2 * (side - 1) - column
            matrix[row, column] += tap
    return matrix.to(device=device, dtype=dtype)


def laplacian_bands(images: torch.Tensor, smallest: int = 8) -> list[torch.Tensor]:
    """The band-pass levels of a Laplacian pyramid of ``images [..., H, W]``, finest first.

    Each level is the image at that scale minus its blur; the next scale is the blur taken at
    every second pixel. Levels stop before a side would fall below ``smallest`` pixels, so a
    32x32 image has bands at 32, 16 and 8. The low-pass rest is left out: the likelihood
    already weighs it.
    """
    bands = []
    current = images
    while min(current.shape[-2:]) >= smallest:
        height, width = current.shape[-2:]
        rows = _blur_matrix(height, current.device, current.dtype)
        columns = _blur_matrix(width, current.device, current.dtype)
        blurred = rows @ current @ columns.T
        bands.append(current - blurred)
        current = blurred[..., ::2, ::2]
    return bands


def detail_error(logits: torch.Tensor, target: torch.Tensor, smallest: int = 8) -> torch.Tensor:
    """Summed absolute error between the pyramid bands of the drawn and the true images.

    One value per image (leading dims kept). A pixel likelihood weighs a face's eyes, nose and
    mouth by the few low-contrast pixels they cover, so a decoder can leave them out for a
    small loss; the bands hold only such detail, so this term asks for it in its own right
    (the Lap1 loss of generative latent optimisation). The bands are linear, so the bands of
    the difference are taken. Computed in at least float32 whatever the autocast, so small
    differences are not rounded away.
    """
    dtype = torch.promote_types(logits.dtype, torch.float32)
    difference = torch.sigmoid(logits.to(dtype)) - target.to(dtype)
    total = torch.zeros(target.shape[:-3], device=target.device, dtype=dtype)
    for band in laplacian_bands(difference, smallest):
        total = total + band.abs().flatten(-3).sum(dim=-1)
    return total
