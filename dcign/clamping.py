"""Forward clamping and invariance targeting (paper, sections 3.1 and 3.2).

Within a group of images in which only one factor varies, every latent that does not belong to
that factor ("inactive") is replaced by a per-group target before decoding, so the decoder must
explain all variation in the group with the active latents alone. The target is detached: the
decoder's gradient therefore never reaches inactive latents, and they are trained instead by
the invariance-targeting gradient ``invariance_weight * (z - target)``, which pulls the group
together. Both operations work on ``[G, S, D]`` tensors with a ``[G, D]`` active mask, so any
number of groups is handled without a Python loop.
"""

from __future__ import annotations

from typing import Literal

import torch

ClampTarget = Literal["mean", "first"]


def group_target(values: torch.Tensor, target: ClampTarget = "mean") -> torch.Tensor:
    """Per-group clamp value ``[G, 1, D]``, detached from the graph.

    ``mean`` is the paper's rule; ``first`` (the first image of each group) is what the authors'
    released code did and is offered for reproduction.
    """
    if target == "mean":
        reference = values.mean(dim=1, keepdim=True)
    elif target == "first":
        reference = values[:, :1]
    else:
        raise ValueError(f"Unknown clamp target {target!r}; expected 'mean' or 'first'.")
    return reference.detach()


def clamp(values: torch.Tensor, active: torch.Tensor, target: ClampTarget = "mean") -> torch.Tensor:
    """Replace inactive latents of ``values [G, S, D]`` by their group target.

    ``active [G, D]`` is True on the latents the group's factor trains. Active latents pass
    through untouched, so the decoder's gradient reaches them unchanged.
    """
    reference = group_target(values, target)
    return torch.where(active[:, None, :], values, reference.expand_as(values))


def invariance_penalty(
    values: torch.Tensor, active: torch.Tensor, target: ClampTarget = "mean"
) -> torch.Tensor:
    """Per-image ``0.5 * sum_inactive (v - target)^2``, shape ``[G, S]``.

    Its gradient with respect to an inactive latent is exactly ``v - target`` (the target is
    detached), which is the paper's replacement gradient; active latents get nothing from it.
    """
    deviation = values - group_target(values, target)
    inactive = (~active)[:, None, :].to(values.dtype)
    return 0.5 * (deviation.square() * inactive).sum(dim=-1)
