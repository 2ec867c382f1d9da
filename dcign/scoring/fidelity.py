"""Fidelity of a re-rendered view: is it still this face, and does it look like the true view?

The novel-view gain compares an edit with the network's own reconstructions, so it cannot see
detail the network never draws: a network that decodes every face to the same smooth head can
turn it perfectly and score a gain near 1. These measures compare with the true images:

* **identity kept**: the re-render is put in a line-up of the true images of every identity of
  the split at exactly the target's factor values; the scene counts as kept when the nearest
  one (pixel MSE) is the target's own identity. Two references bound it: the network's
  reconstruction of the true target (what the edit could at best keep) and the unchanged
  source image (what not editing at all keeps); chance is one over the line-up's size.
  The edit takes the factor's latents from the true target, an image of the same face, so
  identity that leaks into those latents comes back with them and scores as kept. **Identity
  kept with the view from another face** reads them instead from another identity's image at
  the target's view, as a user turning a face to the view of some other picture does: only a
  code whose factor latents hold the factor and nothing of the face keeps it there.
* **SSIM** of the re-render against the true view (structure, not only mean error), beside
  the SSIM of the reconstruction of the true view. At 32x32 it is dominated by the outline and
  the shading: a blur that wipes out the eyes still scores above 0.8.
* **detail drawn**: the share of the true view's fine detail (the image minus its blur: eyes,
  nose, mouth) that the re-render reproduces. SSIM at these sizes is dominated by the outline
  and shading and scores a featureless head highly; this measure scores it near 0.

All are torchmetrics metrics whose states are per-group-type sums, so they are the same
under DDP as on one process.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torchmetrics import Metric
from torchmetrics.functional.image import structural_similarity_index_measure

from dcign.scoring.metrics import check_group_type

# The candidates identity kept is measured for, and what each is.
KEPT_CANDIDATES = ("model", "oracle", "source")
# The edit whose factor latents come from another face at the target's view (optional: only
# same-face pairs have one).
OTHER_FACE = "other_face"
# Identity kept is also reported by the size of the change, in this many equal shares of the
# factor's largest change: where an edit loses the face (a small turn or a large one) is what
# tells a code that keeps the face apart from one that keeps it only near the source's view.
CHANGE_BINS = 4
_SSIM_KERNEL = 11
_SSIM_SIGMA = 1.5
# Pixels at most this bright are background (the renderers draw on black).
_BACKGROUND = 0.02


def nearest_identity(
    images: torch.Tensor, gallery: torch.Tensor, gallery_identity: torch.Tensor
) -> torch.Tensor:
    """The identity of the gallery image nearest (pixel MSE) to each image.

    ``images [N, C, H, W]`` (or ``[N, M, C, H, W]``: M candidates for the same line-up),
    ``gallery [N, K, C, H, W]`` (image n's own line-up), ``gallery_identity [N, K]`` with
    ``-1`` for absent entries, which are never nearest. Returns ``[N]`` (or ``[N, M]``; ``-1``
    when a line-up is empty). The squared distances are expanded as ``|g|^2 - 2 g.x`` (``|x|^2``
    is the same across a line-up): one batched product instead of an ``[N, K, C, H, W]``
    difference per candidate.
    """
    single = images.ndim == 4
    candidates = images.float().unsqueeze(1) if single else images.float()
    lineup = gallery.float().flatten(2)  # [N, K, P]
    products = torch.bmm(lineup, candidates.flatten(2).transpose(1, 2))  # [N, K, M]
    distance = lineup.square().sum(dim=2, keepdim=True) - 2 * products
    distance = distance.masked_fill(gallery_identity[:, :, None] < 0, float("inf"))
    found = gallery_identity.gather(1, distance.argmin(dim=1))  # [N, M]
    return found[:, 0] if single else found


def rival_in_lineup(lineup_identity: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
    """Which member of each line-up to read a view from: another face than ``identity``.

    ``lineup_identity [..., K]`` (``-1``: absent), ``identity [...]``; returns the position
    ``[...]`` of a present member of another identity, ``-1`` where the line-up has none. The
    scenes take turns through their rivals (scene n takes rival n mod their count), so the
    views come from every face of the line-up instead of always its first.
    """
    rivals = (lineup_identity >= 0) & (lineup_identity != identity[..., None])
    count = rivals.sum(dim=-1)
    turn = torch.arange(count.numel(), device=count.device).view_as(count) % count.clamp_min(1)
    rank = rivals.long().cumsum(dim=-1) - 1
    chosen = (rivals & (rank == turn[..., None])).long().argmax(dim=-1)
    return torch.where(count > 0, chosen, torch.full_like(chosen, -1))


class PerTypeSums(Metric):
    """A metric whose states are float64 sums per group type, ``<name>_sum`` for each of
    ``sums``: summed over ranks under DDP, divided in ``compute``."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    sums: tuple[str, ...] = ()

    def __init__(self, group_types: list[str], **kwargs) -> None:
        super().__init__(**kwargs)
        self.group_types = list(group_types)
        zeros = torch.zeros(len(group_types), dtype=torch.float64)
        for name in self.sums:
            self.add_state(f"{name}_sum", default=zeros.clone(), dist_reduce_fx="sum")


class IdentityKept(PerTypeSums):
    """Share of re-rendered views whose nearest true image at the target view is the target's
    identity, per group type, for the edit and its two references, with chance.

    ``compute()`` returns ``identity_kept/<t>`` (the edit), ``identity_kept_oracle/<t>`` (the
    reconstruction of the true target), ``identity_kept_source/<t>`` (the true source image,
    unchanged), ``identity_kept_chance/<t>`` (mean of one over the line-up's size) and
    ``identity_kept_lineup/<t>`` (mean line-up size), for every type with a scored scene. A
    scene is scored when its line-up holds the target's identity and at least one other.
    With an ``other_face`` candidate (the edit with the factor's latents from another face at
    the target's view) it also returns ``identity_kept_other_face/<t>`` over the scored scenes
    that ``other_face_counted`` marks. Given the size of each pair's change (``change``, a
    share of the factor's largest change) it returns the edit's
    ``identity_kept_change<q>/<t>``: over the scenes whose change lies in the q-th of
    :data:`CHANGE_BINS` equal shares (q = 1: the smallest changes).
    """

    sums = (*KEPT_CANDIDATES, "chance", "lineup", "scored", OTHER_FACE, "other_face_scored")

    def __init__(self, group_types: list[str], **kwargs) -> None:
        super().__init__(group_types, **kwargs)
        zeros = torch.zeros(len(group_types), CHANGE_BINS, dtype=torch.float64)
        for name in ("change_kept", "change_scored"):
            self.add_state(name, default=zeros.clone(), dist_reduce_fx="sum")

    def update(
        self,
        group_type: torch.Tensor,
        candidates: Mapping[str, torch.Tensor],
        gallery: torch.Tensor,
        gallery_identity: torch.Tensor,
        target_identity: torch.Tensor,
        counted: torch.Tensor | None = None,
        other_face_counted: torch.Tensor | None = None,
        change: torch.Tensor | None = None,
    ) -> None:
        """``G`` groups: ``candidates`` name (``model``, ``oracle``, ``source``, optionally
        ``other_face``) -> ``[G, S, C, H, W]``; ``gallery [G, S, K, C, H, W]`` and
        ``gallery_identity [G, S, K]`` are the line-ups at each target's view;
        ``target_identity [G, S]``; ``counted [G, S]`` the pairs that count (default all);
        ``other_face_counted [G, S]`` those of them the ``other_face`` candidate is scored on;
        ``change [G, S]`` the size of each pair's change in [0, 1] (NaN: not binned)."""
        names = [*KEPT_CANDIDATES, OTHER_FACE] if OTHER_FACE in candidates else KEPT_CANDIDATES
        if set(candidates) != set(names):
            raise ValueError(
                f"IdentityKept needs the candidates {KEPT_CANDIDATES} (and optionally "
                f"{OTHER_FACE!r}), got {sorted(candidates)}."
            )
        if (OTHER_FACE in candidates) != (other_face_counted is not None):
            raise ValueError(
                f"IdentityKept needs other_face_counted with an {OTHER_FACE!r} candidate, and "
                "only then."
            )
        groups, size = target_identity.shape
        if gallery.shape[:2] != (groups, size) or gallery_identity.shape[:2] != (groups, size):
            raise ValueError(
                f"IdentityKept needs line-ups [G, S, K, ...] for target identities [G, S] = "
                f"{(groups, size)}; got gallery {tuple(gallery.shape)} and identities "
                f"{tuple(gallery_identity.shape)}."
            )
        index = check_group_type(group_type, groups, len(self.group_types))
        lineup_ids = gallery_identity.flatten(0, 1)
        members = (lineup_ids >= 0).sum(dim=1)
        has_target = (lineup_ids == target_identity.reshape(-1, 1)).any(dim=1)
        scored = (has_target & (members >= 2)).view(groups, size)
        if counted is not None:
            scored = scored & counted.to(scored.device, torch.bool)
        scored = scored.double()
        per_group = {"scored": scored.sum(dim=1)}
        per_group["chance"] = (scored / members.clamp_min(1).view(groups, size)).sum(dim=1)
        per_group["lineup"] = (scored * members.view(groups, size)).sum(dim=1)
        stacked = torch.stack([candidates[name].flatten(0, 1) for name in names], 1)
        found = nearest_identity(stacked, gallery.flatten(0, 1), lineup_ids)
        kept = (found == target_identity.reshape(-1, 1)).view(groups, size, -1).double()
        for column, name in enumerate(KEPT_CANDIDATES):
            per_group[name] = (kept[..., column] * scored).sum(dim=1)
        if other_face_counted is not None:
            other_scored = scored * other_face_counted.to(scored.device, scored.dtype)
            per_group["other_face_scored"] = other_scored.sum(dim=1)
            per_group[OTHER_FACE] = (kept[..., -1] * other_scored).sum(dim=1)
        for name, values in per_group.items():
            getattr(self, f"{name}_sum").index_add_(0, index, values)
        if change is not None:
            self._add_by_change(index, change.to(scored.device), scored, kept[..., 0])

    def _add_by_change(
        self, index: torch.Tensor, change: torch.Tensor, scored: torch.Tensor, kept: torch.Tensor
    ) -> None:
        """Add the scored scenes ``[G, S]`` and the edit's kept ones to the bins of ``change``;
        a change of 0 (no edit) or NaN is left out."""
        binned = scored * (change > 0)
        share = torch.nan_to_num(change, nan=0.0).clamp(0, 1)
        # The tolerance keeps a change of exactly one share (one of four elevation steps) in
        # its own bin despite the rounding of float32 factor values.
        bins = (share * CHANGE_BINS - 1e-5).ceil().long().clamp(1, CHANGE_BINS) - 1
        cells = (index[:, None] * CHANGE_BINS + bins).flatten()
        self.change_scored.view(-1).index_add_(0, cells, binned.flatten())
        self.change_kept.view(-1).index_add_(0, cells, (binned * kept).flatten())

    def compute(self) -> dict[str, torch.Tensor]:
        scored = self.scored_sum.clamp_min(1)
        names = {
            "identity_kept": self.model_sum,
            "identity_kept_oracle": self.oracle_sum,
            "identity_kept_source": self.source_sum,
            "identity_kept_chance": self.chance_sum,
            "identity_kept_lineup": self.lineup_sum,
        }
        results = {
            f"{key}/{name}": total[index] / scored[index]
            for index, name in enumerate(self.group_types)
            if self.scored_sum[index] > 0
            for key, total in names.items()
        }
        results.update(
            {
                f"identity_kept_other_face/{name}": self.other_face_sum[index] / count
                for index, (name, count) in enumerate(
                    zip(self.group_types, self.other_face_scored_sum, strict=True)
                )
                if count > 0
            }
        )
        results.update(
            {
                f"identity_kept_change{q + 1}/{name}": self.change_kept[index, q] / count
                for index, name in enumerate(self.group_types)
                for q, count in enumerate(self.change_scored[index])
                if count > 0
            }
        )
        return results


def ssim_per_image(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """SSIM of each image ``[N, C, H, W]`` in [0, 1] against its target: ``[N]``.

    The usual 11-pixel Gaussian window (sigma 1.5), narrowed to the largest odd size that fits
    images smaller than that, with the sigma scaled alike.
    """
    side = min(_SSIM_KERNEL, *images.shape[-2:])
    kernel = side if side % 2 else side - 1
    if kernel < 3:
        raise ValueError(f"SSIM needs images of at least 3x3 pixels, got {tuple(images.shape)}.")
    return structural_similarity_index_measure(
        images.float(),
        targets.float(),
        kernel_size=kernel,
        sigma=_SSIM_SIGMA * kernel / _SSIM_KERNEL,
        data_range=1.0,
        reduction="none",
    )


class ViewComparison(PerTypeSums):
    """A per-group-type comparison of re-rendered views and of the reconstructions of the true
    views with the true views themselves: checks the shapes and the pairs that count once, then
    hands the flattened stacks to :meth:`accumulate`."""

    def update(
        self,
        group_type: torch.Tensor,
        model: torch.Tensor,
        oracle: torch.Tensor,
        target: torch.Tensor,
        counted: torch.Tensor | None = None,
    ) -> None:
        """``G`` groups: re-renders, reconstructions of the targets and targets ``[G, S, C, H,
        W]``; ``counted [G, S]`` the pairs that count (default all)."""
        if model.shape != target.shape or oracle.shape != target.shape or target.ndim != 5:
            raise ValueError(
                f"{type(self).__name__} needs model, oracle and target of one shape "
                f"[G, S, C, H, W], got {tuple(model.shape)}, {tuple(oracle.shape)} and "
                f"{tuple(target.shape)}."
            )
        groups, size = target.shape[:2]
        index = check_group_type(group_type, groups, len(self.group_types))
        if min(target.shape[-2:]) < 3:
            return
        weight = (
            torch.ones(groups, size, device=target.device)
            if counted is None
            else counted.to(target.device, torch.float)
        ).double()
        sums = self.accumulate(model.flatten(0, 1), oracle.flatten(0, 1), target.flatten(0, 1))
        for name, per_image in sums.items():
            per_group = (per_image.double().view(groups, size) * weight).sum(dim=1)
            getattr(self, f"{name}_sum").index_add_(0, index, per_group)

    def accumulate(
        self, model: torch.Tensor, oracle: torch.Tensor, target: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Per-image values ``[N]`` of each of ``sums``, for images ``[N, C, H, W]``."""
        raise NotImplementedError


class ViewSSIM(ViewComparison):
    """Mean SSIM of re-rendered views against the true views per group type, beside the SSIM of
    the reconstruction of the true views: ``novel_view_ssim/<t>``, ``novel_view_ssim_oracle/<t>``.

    Images smaller than 3x3 pixels have no structure to compare and are not scored (the keys
    are then absent).
    """

    sums = ("model", "oracle", "count")

    def accumulate(
        self, model: torch.Tensor, oracle: torch.Tensor, target: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        # One call for both stacks: the window filters run once over all of them.
        both = ssim_per_image(torch.cat([model, oracle]), target.repeat(2, 1, 1, 1))
        scores = both.view(2, -1)
        return {"model": scores[0], "oracle": scores[1], "count": torch.ones_like(scores[0])}

    def compute(self) -> dict[str, torch.Tensor]:
        count = self.count_sum.clamp_min(1)
        return {
            f"{key}/{name}": total[index] / count[index]
            for index, name in enumerate(self.group_types)
            if self.count_sum[index] > 0
            for key, total in (
                ("novel_view_ssim", self.model_sum),
                ("novel_view_ssim_oracle", self.oracle_sum),
            )
        }


def _detail_sigma(images: torch.Tensor) -> float:
    return max(images.shape[-1], images.shape[-2]) / 32.0


def _detail_radius(images: torch.Tensor) -> int:
    return max(1, round(2 * _detail_sigma(images)))


def gaussian_blur(images: torch.Tensor, sigma: float, radius: int) -> torch.Tensor:
    """Images ``[N, C, H, W]`` blurred by a Gaussian of ``sigma`` pixels, cut at ``radius``.

    Separable (a row pass, then a column pass) and padded by replication, so a flat image
    stays exactly as it is. Returns float32.
    """
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64, device=images.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(torch.float32)
    flat = images.float().flatten(0, 1)[:, None]  # [N * C, 1, H, W]
    padded = F.pad(flat, (radius, radius, radius, radius), mode="replicate")
    blurred = F.conv2d(F.conv2d(padded, kernel.view(1, 1, 1, -1)), kernel.view(1, 1, -1, 1))
    return blurred.view_as(images.float())


def detail_band(images: torch.Tensor) -> torch.Tensor:
    """The fine detail of images ``[N, C, H, W]``: each image minus its Gaussian blur.

    The blur's sigma is one pixel per 32 pixels of image side, so the band holds features of
    the same size relative to the face (eyes, nostrils, the mouth) at every resolution. Edges
    are padded by replication, so a flat image has no detail at all.
    """
    blurred = gaussian_blur(images, _detail_sigma(images), _detail_radius(images))
    return images.float() - blurred


def detail_errors(
    renders: list[torch.Tensor], target: torch.Tensor
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Per image ``[N]``: each render's squared detail error ``|D(render) - D(target)|^2``, and
    the target's detail energy ``|D(target)|^2`` (``D``: :func:`detail_band`), both summed over
    the inside of the target's object (:func:`interior`)."""
    bands = detail_band(torch.cat([*renders, target])).flatten(1)
    bands = bands.view(len(renders) + 1, len(target), -1) * interior(target).flatten(1)
    truth = bands[-1]
    errors = [(band - truth).square().sum(dim=1) for band in bands[:-1]]
    return errors, truth.square().sum(dim=1)


def interior(images: torch.Tensor) -> torch.Tensor:
    """``[N, C, H, W]`` mask of the pixels at least a blur radius inside the object.

    The object's outline against the black background is the strongest detail of a render and
    the easiest to draw; measured with it, a smooth head scores as if it had a face. Where an
    image has no black background the whole image counts.
    """
    radius = _detail_radius(images)
    background = (images.float() <= _BACKGROUND).float().flatten(0, 1)[:, None]
    near = F.max_pool2d(background, 2 * radius + 1, stride=1, padding=radius)
    return (1.0 - near).view_as(images.float())


def detail_drawn(rendered: torch.Tensor, target: torch.Tensor) -> float:
    """``1 - sum |D(rendered) - D(target)|^2 / sum |D(target)|^2`` over images ``[N, C, H,
    W]``: the share of the targets' fine detail that the renders reproduce (see
    :class:`ViewDetail`). nan when the targets have no detail inside an object, as
    :class:`ViewDetail` leaves such a type out."""
    (error,), energy = detail_errors([rendered], target)
    total = energy.double().sum()
    return float(1.0 - error.double().sum() / total) if total > 0 else float("nan")


class ViewDetail(ViewComparison):
    """How much of the true view's fine detail a re-render draws, per group type.

    ``novel_view_detail/<t> = 1 - sum |D(render) - D(truth)|^2 / sum |D(truth)|^2`` over the
    scored pairs and the inside of each true view's object, where ``D`` is
    :func:`detail_band`. SSIM and pixel errors are dominated by the
    head's outline and shading, so a smooth head without eyes, nose or mouth still scores well
    on them; on this measure it scores about 0 (a flat image exactly 0), the true view 1, and
    detail drawn in the wrong place below 0. ``novel_view_detail_oracle/<t>`` is the same for
    the reconstruction of the true view: what the network draws at all.
    """

    sums = ("model", "oracle", "energy")

    def accumulate(
        self, model: torch.Tensor, oracle: torch.Tensor, target: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        (model_error, oracle_error), energy = detail_errors([model, oracle], target)
        return {"model": model_error, "oracle": oracle_error, "energy": energy}

    def compute(self) -> dict[str, torch.Tensor]:
        return {
            f"{key}/{name}": 1.0 - total[index] / self.energy_sum[index]
            for index, name in enumerate(self.group_types)
            if self.energy_sum[index] > 0
            for key, total in (
                ("novel_view_detail", self.model_sum),
                ("novel_view_detail_oracle", self.oracle_sum),
            )
        }
