"""A line-up term on the latents a group holds: same group near, other groups far.

Invariance targeting pulls the latents a group holds fixed towards each other by their
distance. An edit keeps a face when, among all faces, the code read from one view lies nearest
that face's code from the other view: a ranking, which a distance alone does not ask for (a
code that shrinks every distance satisfies it as well). This term asks for the ranking
directly, as a supervised contrastive loss (Khosla et al. 2020) over the batch: each image's
held latents, compared by cosine with every other image's same latents, should pick out the
other images of its own group (the same face, or the same view in a group that varies the
face) against the images of the other groups. It uses only what the groups already say, so
the training stays weakly supervised. ``compared`` narrows it to some latents (DC-IGN's
``contrast_latents``, e.g. the identity's only); by default every held latent is ranked,
the pose latents that a group of faces at one view holds included (docs/results.md).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.distributed.nn.functional import all_gather

_NORM_FLOOR = 1e-6


def held_contrast(
    values: torch.Tensor,
    active: torch.Tensor,
    temperature: float = 0.1,
    compared: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-image contrastive loss ``[G, S]`` of ``values [G, S, D]`` on each group's held latents.

    For image ``i`` of group ``g``, with ``m`` the latents ``g`` holds (``~active[g]``, and
    among them only those of ``compared [D]`` when given) and ``s(i, a)`` the cosine of ``i``'s
    and ``a``'s latents restricted to ``m`` over ``temperature``: the mean, over the other
    images ``p`` of ``g``, of ``-log(exp s(i, p) / sum_{a != i} exp s(i, a))``. An image whose
    group holds none of the compared latents, or has no other image, scores 0. Computed in
    float32 under any autocast: a bf16 cosine over a temperature of 0.1 would round the
    logits by about 0.05.
    """
    groups, size, _ = values.shape
    held_by_group = ~active if compared is None else ~active & compared[None, :]
    with torch.autocast(device_type=values.device.type, enabled=False):
        codes = values.reshape(groups * size, -1).float()
        held = held_by_group.repeat_interleave(size, dim=0).to(codes.dtype)
        dot = (codes * held) @ codes.T
        anchor_norm = (codes.square() * held).sum(dim=-1).clamp_min(_NORM_FLOOR).sqrt()
        other_norm = (held @ codes.square().T).clamp_min(_NORM_FLOOR).sqrt()
        logits = dot / (anchor_norm[:, None] * other_norm) / temperature
        itself = torch.eye(groups * size, dtype=torch.bool, device=codes.device)
        logits = logits.masked_fill(itself, float("-inf"))
        group = torch.arange(groups, device=codes.device).repeat_interleave(size)
        positive = (group[:, None] == group[None, :]) & ~itself
        positive &= held.bool().any(dim=1, keepdim=True)
        log_share = logits - torch.logsumexp(logits, dim=1, keepdim=True)
        per_image = -log_share.masked_fill(~positive, 0.0).sum(dim=1)
        per_image = per_image / positive.sum(dim=1).clamp_min(1)
    return per_image.view(groups, size).to(values.dtype)


def across_ranks(
    values: torch.Tensor, active: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Every DDP rank's ``values [G, S, D]`` and ``active [G, D]``, and where this rank's start.

    The line-up's rivals are the whole step's images, so that two ranks of G groups train what
    one process trains on their 2G groups (tests/test_ddp.py). The gather keeps the gradient
    (``torch.distributed.nn``): each rank's codes get what every rank's terms ask of them, and
    DDP's average of the ranks' gradients is then the gradient of the mean over all images.
    Only while gradients are on: a validation may give the ranks different numbers of batches,
    and its logged value is over the rank's own batch. Without DDP: the batch itself, at 0.
    """
    if not (torch.is_grad_enabled() and dist.is_available() and dist.is_initialized()):
        return values, active, 0
    world = dist.get_world_size()
    if world == 1:
        return values, active, 0
    everyone = torch.cat(all_gather(values.float().contiguous()), dim=0).to(values.dtype)
    masks = [torch.empty_like(active, dtype=torch.uint8) for _ in range(world)]
    dist.all_gather(masks, active.to(torch.uint8).contiguous())
    return everyone, torch.cat(masks).bool(), dist.get_rank() * values.shape[0]
