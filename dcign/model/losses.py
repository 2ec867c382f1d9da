"""Per-image terms of the SGVB objective.

Kept apart from the networks so that DC-IGN and the entangled baseline share one definition of
the likelihood and the KL term, and so tests can check each term against its closed form.
"""

from __future__ import annotations

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
