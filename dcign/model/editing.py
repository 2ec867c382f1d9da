"""Editing a code: the operations behind novel-view re-rendering (paper Figure 7).

To re-render image a as it would look with factor f of image b, DC-IGN takes a's code and
replaces f's latent group by b's. The entangled baseline has no named latents, so the paper
(section 4.1.1) uses the latent(s) with the largest variance over a group in which only f
varies. These functions are shared by the metrics, the callbacks and the evaluation report, so
the number in a table and the picture in a dashboard are computed the same way.
"""

from __future__ import annotations

import torch


def transfer(codes_a: torch.Tensor, codes_b: torch.Tensor, dims: torch.Tensor) -> torch.Tensor:
    """``codes_a`` with the latents marked by ``dims`` taken from ``codes_b``.

    ``dims`` is a boolean mask broadcastable to the codes' shape (``[D]`` for one set of latents
    for every row, ``[N, D]`` for one per row).
    """
    return torch.where(dims, codes_b, codes_a)


def top_latents(scores: torch.Tensor, count: int | torch.Tensor) -> torch.Tensor:
    """Mask ``[G, D]`` of the ``count`` highest-scoring latents of each row of ``scores``.

    ``count`` is one number or one per row (``[G]``, e.g. the size of DC-IGN's latent group for
    each row's factor).
    """
    order = scores.argsort(dim=1, descending=True)
    positions = torch.arange(scores.shape[1], device=scores.device).expand_as(order)
    rank = torch.empty_like(order).scatter_(1, order, positions)
    return rank < torch.as_tensor(count, device=scores.device).reshape(-1, 1)


def max_variance_latents(group_codes: torch.Tensor, count: int | torch.Tensor) -> torch.Tensor:
    """Mask ``[G, D]`` of the ``count`` latents with the largest variance within each group.

    ``group_codes`` is ``[G, S, D]``; with ``count=1`` this is the paper's choice of the
    baseline's "azimuth" latent, made on one group.
    """
    return top_latents(group_codes.var(dim=1, unbiased=False), count)


def pair_with_next(group_codes: torch.Tensor) -> torch.Tensor:
    """Partner of every image in its group: image s is paired with image (s + 1) mod S.

    Within a group only one factor varies, so (s, s + 1) is a pair of the same scene that
    differs only in that factor: the pairs ``novel_view_mse`` needs, with no extra data.
    """
    return group_codes.roll(shifts=-1, dims=1)


def distinct_pairs(keys: torch.Tensor) -> torch.Tensor:
    """``[G, S]``: True where pair (s, s + 1) of a group is the first of its kind in the group.

    ``keys [G, S, K]`` name each image (its identity and factor values). A group larger than
    its factor's number of values repeats views, and then :func:`pair_with_next` pairs the same
    two images more than once, or an image with itself; counting each pair of two different
    images once keeps a score from weighing some pairs double, from scoring "edits" that
    change nothing, and its standard error from treating copies as independent evidence.
    """
    partner = pair_with_next(keys)
    pairs = torch.cat([keys, partner], dim=-1)  # [G, S, 2K]
    same = (pairs[:, :, None, :] == pairs[:, None, :, :]).all(dim=-1)  # [G, S, S]
    earlier = torch.ones_like(same[0]).tril(diagonal=-1)
    itself = (keys == partner).all(dim=-1)
    return ~(same & earlier).any(dim=-1) & ~itself
