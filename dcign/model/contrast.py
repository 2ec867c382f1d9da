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
