"""What a loader hands to every consumer: labelled images, and factor-grouped batches of them.

Named tuples, so that Lightning's device transfer, the DataLoader's pinning and pickling to
worker processes all handle them as they handle tuples, while every reader names its field.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class LabelledImages(NamedTuple):
    """Images with their labels; every field shares the leading shape ``[...]``.

    ``images [..., C, H, W]`` in [0, 1], ``factors [..., F]`` (factor values in the data set's
    factor order, radians for angles) and ``identity [...]`` (int64).
    """

    images: torch.Tensor
    factors: torch.Tensor
    identity: torch.Tensor


class GroupedBatch(NamedTuple):
    """``G`` groups of ``S`` images each, in each of which one factor (its type) varies.

    ``images [G, S, C, H, W]``, ``factors [G, S, F]``, ``identity [G, S]`` and ``group_type
    [G]``: the index of the varying factor's latent group in the model's layout. Evaluation
    batches also carry ``gallery``: the true images of every identity of their split at each
    image's factor values (``images [G, S, K, C, H, W]``, ``identity [G, S, K]``, -1 where the
    data lacks that view), against which a re-rendered view is recognised or not.
    ``present`` lists the group types the batch holds, noted where the batch is made on the
    CPU: read from a GPU copy of ``group_type`` it would cost a synchronisation every step.
    """

    images: torch.Tensor
    factors: torch.Tensor
    identity: torch.Tensor
    group_type: torch.Tensor
    gallery: LabelledImages | None = None
    present: tuple[int, ...] = ()

    @classmethod
    def of(
        cls,
        views: LabelledImages,
        group_type: torch.Tensor,
        gallery: LabelledImages | None = None,
    ) -> GroupedBatch:
        present = tuple(sorted(set(group_type.tolist())))
        return cls(views.images, views.factors, views.identity, group_type, gallery, present)

    @property
    def num_images(self) -> int:
        """Images in the batch (groups x group size): the weight of its logged means, which
        Lightning could otherwise only guess from the first tensor it finds (the groups)."""
        return self.images.shape[0] * self.images.shape[1]

    def types_present(self) -> tuple[int, ...]:
        """The group types in the batch: as noted when it was made, else read from it."""
        return self.present or tuple(sorted(set(self.group_type.tolist())))
