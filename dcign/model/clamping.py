"""Forward clamping and invariance targeting (paper, sections 3.1 and 3.2).

Within a group of images in which only one factor varies, every latent that does not belong to
that factor ("inactive") is replaced by a per-group target before decoding, so the decoder must
explain all variation in the group with the active latents alone. Inactive latents are pulled
together by the invariance-targeting gradient ``invariance_weight * (z - target)``. Whether
the decoder's gradient also reaches them depends on ``detach``: a detached target (the
paper's step 7, ``clamp_gradient=invariance``) keeps it away, so the invariance gradient is
all they get; an attached one (the default, ``clamp_gradient=decoder``) lets the decoder's
gradient flow into the latents the target was taken from. Both operations work on
``[G, S, D]`` tensors with a ``[G, D]`` active mask, so any number of groups is handled
without a Python loop.
"""

from __future__ import annotations

from typing import Literal

import torch

ClampTarget = Literal["mean", "first", "partner"]
CLAMP_TARGETS: tuple[str, ...] = ("mean", "first", "partner")


def group_target(
    values: torch.Tensor, target: ClampTarget = "mean", detach: bool = True
) -> torch.Tensor:
    """What each image's inactive latents are replaced by: ``[G, 1, D]`` or ``[G, S, D]``.

    ``mean`` is the paper's rule; ``first`` (the first image of each group) is what the authors'
    released code did. ``partner`` gives image s the values of image (s + 1) mod S of its group:
    the decoder then renders image s from another image's code for everything the group holds
    fixed, which is exactly the edit of novel-view re-rendering, and every image is decoded
    from a single image's code as at test time (never from an average that no single image
    produces). ``detach`` cuts the decoder's gradient to the target (the paper's step 7).
    """
    if target == "mean":
        reference = values.mean(dim=1, keepdim=True)
    elif target == "first":
        reference = values[:, :1]
    elif target == "partner":
        reference = values.roll(shifts=-1, dims=1)
    else:
        raise ValueError(f"Unknown clamp target {target!r}; expected one of {CLAMP_TARGETS}.")
    return reference.detach() if detach else reference


def clamp(
    values: torch.Tensor, active: torch.Tensor, target: ClampTarget = "mean", detach: bool = True
) -> torch.Tensor:
    """Replace inactive latents of ``values [G, S, D]`` by their group target.

    ``active [G, D]`` is True on the latents the group's factor trains. Active latents pass
    through untouched, so the decoder's gradient reaches them unchanged; with ``detach=False``
    it also reaches the latents the target was taken from.
    """
    reference = group_target(values, target, detach)
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
