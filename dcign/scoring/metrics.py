"""Evaluation metrics (docs/evaluation.md) as torchmetrics ``Metric`` classes.

Every metric takes tensors its caller has already computed (reconstructions, edited images,
codes, ground-truth values) and never calls a network. That keeps one definition of each number
for validation, test and the evaluation report, and lets the tests check it against closed-form
values. States are sums (``dist_reduce_fx="sum"``) or lists of rows (``"cat"``), so under DDP
every rank contributes its share and ``compute`` sees the whole evaluation set.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

EquivarianceMode = Literal["group", "best_single"]

# Float32 sums carry a relative rounding error of about 1e-7 per addition; two MSEs closer than
# this fraction of their size are the same number, and a gain divided by their gap is noise.
_GAIN_RTOL = 1e-5
# A float64 variance below this fraction of the mean square is cancellation error, not spread.
_FLAT_RTOL = 1e-12


def check_group_type(group_type: torch.Tensor, num_groups: int, num_types: int) -> torch.Tensor:
    """``group_type`` as a long index, after checking it names one known type per group.

    ``index_add_`` with an out-of-range index fails deep inside the kernel (or asserts on a GPU)
    without saying which argument was wrong, so the check happens here.
    """
    if group_type.ndim != 1 or group_type.shape[0] != num_groups:
        raise ValueError(
            f"group_type must be [G] with G={num_groups} (one type per group), "
            f"got shape {tuple(group_type.shape)}."
        )
    if group_type.is_floating_point() or group_type.dtype == torch.bool:
        raise ValueError(f"group_type must hold integer type ids, got dtype {group_type.dtype}.")
    if num_groups and (group_type.min() < 0 or group_type.max() >= num_types):
        raise ValueError(
            f"group_type ids must be in [0, {num_types}) for the {num_types} known group types, "
            f"got values from {int(group_type.min())} to {int(group_type.max())}."
        )
    return group_type.long()


def _squared_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Element-wise squared error in float32, so half-precision outputs are summed accurately."""
    return (pred.float() - target.float()).square()


class PixelMSE(Metric):
    """Mean squared error per pixel of [0, 1] images: the ``recon_mse`` of the evaluation.

    ``compute()`` is the total squared error divided by the total number of elements, N*C*H*W
    over all images seen (every channel of every pixel counts once), so the value does not
    depend on how the data was split into batches or ranks.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("sum_squared_error", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of predictions and targets of the same (any) shape."""
        if pred.shape != target.shape:
            raise ValueError(
                f"PixelMSE needs pred and target of the same shape, got {tuple(pred.shape)} "
                f"and {tuple(target.shape)}."
            )
        self.sum_squared_error += _squared_error(pred, target).sum()
        self.count += target.numel()

    def compute(self) -> torch.Tensor:
        """Total squared error / N*C*H*W."""
        return self.sum_squared_error / self.count


class CodeUse(Metric):
    """How much of the images' variation a network's reconstructions reproduce.

    ``compute()`` is the per-pixel variance of the reconstructions within each update (a batch
    of many images), summed over pixels and updates, divided by the same sum for the images. A
    network in posterior collapse decodes every code to the same picture and scores ~0,
    whatever its reconstruction error; a faithful autoencoder scores ~1. It is the number
    behind "this network is collapsed", so that a comparison against such a network says so
    instead of carrying near-zero gains that look like a finding. Per-update variances keep the
    states scalar (no image shape to know in advance, the same under DDP).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        zero = torch.tensor(0.0, dtype=torch.float64)
        self.add_state("recon_spread", default=zero.clone(), dist_reduce_fx="sum")
        self.add_state("image_spread", default=zero.clone(), dist_reduce_fx="sum")

    def update(self, recon: torch.Tensor, images: torch.Tensor) -> None:
        """Add reconstructions and images of one shape ``[..., C, H, W]`` (two or more images)."""
        if recon.shape != images.shape or recon.ndim < 4:
            raise ValueError(
                f"CodeUse needs reconstructions and images of one shape [..., C, H, W], got "
                f"{tuple(recon.shape)} and {tuple(images.shape)}."
            )
        for name, stack in (("recon", recon), ("image", images)):
            flat = stack.detach().flatten(end_dim=-4).flatten(1).double()
            if flat.shape[0] > 1:
                state = getattr(self, f"{name}_spread")
                state += flat.var(dim=0).sum()

    def compute(self) -> torch.Tensor:
        """Variance ratio, ~0 (collapsed) to ~1; nan when the images never varied."""
        if self.image_spread <= 0:
            return _nan()
        return self.recon_spread / self.image_spread


class NovelViewMSE(Metric):
    """Novel-view re-rendering error per group type, with its two bounds and the gain.

    For pairs (a, b) of one scene that differ only in the factor of group type t, ``update``
    receives four image stacks aligned with b:

    * ``model``: the decoded code of a with t's latents taken from b's code (see
      :func:`dcign.model.editing.transfer`; for the baseline, the latents of
      :func:`dcign.model.editing.max_variance_latents`),
    * ``oracle``: the reconstruction of b itself, the best an edit could achieve,
    * ``nochange``: the reconstruction of a unchanged, what no edit at all achieves,
    * ``target``: b,
    * ``source``: a (the true image the edit starts from).

    ``compute()`` returns, for every type seen on any rank, ``novel_view_pairs/<t>`` (the
    pairs counted: with ``counted [G, S]`` given to ``update``, only those), ``novel_view_mse/<t>``,
    ``novel_view_oracle/<t>``, ``novel_view_nochange/<t>`` (per-pixel MSEs, denominator
    pairs*C*H*W over the groups of that type) and ``novel_view_gain/<t>`` =
    (nochange - model) / (nochange - oracle): 0 when the edit did nothing useful, 1 when it is as
    good as reconstructing the true view, negative when it made things worse. When the two
    bounds coincide the gain depends on why. If the true images a and b differ, the network
    decodes them alike: its decodes ignore the code (a collapsed network), no edit can help and
    the gain is 0, so a comparison with such a network stays a number. If a and b are the same
    image, the factor does not change the picture, there is nothing to gain and the gain is nan.
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    _PREDICTIONS = ("model", "oracle", "nochange", "source")

    def __init__(self, group_types: list[str], **kwargs) -> None:
        super().__init__(**kwargs)
        if not group_types or len(set(group_types)) != len(group_types):
            raise ValueError(
                f"NovelViewMSE needs the distinct names of the group types in id order (e.g. the "
                f"latent layout's names), got {group_types!r}."
            )
        self.group_types = list(group_types)
        num_types = len(group_types)
        for name in self._PREDICTIONS:
            self.add_state(
                f"{name}_sse",
                default=torch.zeros(num_types, dtype=torch.float64),
                dist_reduce_fx="sum",
            )
        self.add_state(
            "count", default=torch.zeros(num_types, dtype=torch.long), dist_reduce_fx="sum"
        )
        self.add_state(
            "pairs", default=torch.zeros(num_types, dtype=torch.long), dist_reduce_fx="sum"
        )

    def update(
        self,
        group_type: torch.Tensor,
        model: torch.Tensor,
        oracle: torch.Tensor,
        nochange: torch.Tensor,
        target: torch.Tensor,
        source: torch.Tensor,
        counted: torch.Tensor | None = None,
    ) -> None:
        """Add ``G`` groups: ``group_type [G]``, five image stacks ``[G, S, C, H, W]``, and
        which pairs count (``counted [G, S]``, default all; see
        :func:`dcign.model.editing.distinct_pairs`)."""
        stacks = {
            "model": model,
            "oracle": oracle,
            "nochange": nochange,
            "target": target,
            "source": source,
        }
        for name, stack in stacks.items():
            if stack.ndim != 5 or stack.shape != target.shape:
                raise ValueError(
                    f"NovelViewMSE needs model, oracle, nochange, target and source of one shape "
                    f"[G, S, C, H, W]; {name} has shape {tuple(stack.shape)} and target "
                    f"{tuple(target.shape)}."
                )
        index = check_group_type(group_type, target.shape[0], len(self.group_types))
        weight = (
            torch.ones(target.shape[:2], device=target.device)
            if counted is None
            else counted.to(target.device, torch.float)
        ).double()
        for name in self._PREDICTIONS:
            per_pair = _squared_error(stacks[name], target).flatten(2).sum(dim=2).double()
            getattr(self, f"{name}_sse").index_add_(0, index, (per_pair * weight).sum(dim=1))
        pairs = weight.sum(dim=1).long()
        self.pairs.index_add_(0, index, pairs)
        self.count.index_add_(0, index, pairs * target[0, 0].numel())

    def compute(self) -> dict[str, torch.Tensor]:
        """MSEs and gain per type seen; types never seen are absent rather than 0 or nan."""
        count = self.count.clamp_min(1)
        model = self.model_sse / count
        oracle = self.oracle_sse / count
        nochange = self.nochange_sse / count
        gain = _gain(model, oracle, nochange, self.source_sse / count)
        results = {}
        for index, name in enumerate(self.group_types):
            if self.count[index] == 0:
                continue
            results[f"novel_view_pairs/{name}"] = self.pairs[index].double()
            results[f"novel_view_mse/{name}"] = model[index]
            results[f"novel_view_oracle/{name}"] = oracle[index]
            results[f"novel_view_nochange/{name}"] = nochange[index]
            results[f"novel_view_gain/{name}"] = gain[index]
        return results


def _gain(
    model: torch.Tensor, oracle: torch.Tensor, nochange: torch.Tensor, truth: torch.Tensor
) -> torch.Tensor:
    """(nochange - model) / (nochange - oracle); where that denominator is rounding noise, 0 if
    the true pair differs (``truth``, the MSE between a and b, is not 0) and nan if it does not."""
    denominator = nochange - oracle
    flat = denominator.abs() <= _GAIN_RTOL * torch.maximum(nochange, oracle)
    gain = (nochange - model) / torch.where(flat, torch.ones_like(denominator), denominator)
    alike = truth <= _GAIN_RTOL * torch.maximum(nochange, oracle)
    return torch.where(flat, torch.where(alike, math.nan, 0.0), gain)


class Equivariance(Metric):
    """How well latents predict a factor's ground-truth value: paper Figure 6 as one number.

    ``compute()`` is the R^2 of an ordinary least-squares fit with intercept from the latents
    ``[N, k]`` to the value. A full-turn azimuth (``periodic=True``) has no linear relation to
    any code, because 0 and 2*pi are the same view; the target is then the point (cos v, sin v)
    and the score the mean R^2 of the two fits, so a 2-d latent that traces the circle scores ~1
    and a single scalar cannot. ``mode="best_single"`` scores every latent column alone and
    returns the best, which gives the entangled baseline its most favourable latent.

    R^2 is in-sample: k noise latents score about k/N, so use N much larger than k. With fewer
    than p + 2 samples, p being the number of latents in one fit (k, or 1 for best_single), the
    fit is (nearly) exact whatever the data and the result is nan. A constant value has nothing
    to predict and also gives nan.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, periodic: bool = False, mode: EquivarianceMode = "group", **kwargs) -> None:
        super().__init__(**kwargs)
        if mode not in ("group", "best_single"):
            raise ValueError(f"Equivariance mode must be 'group' or 'best_single', got {mode!r}.")
        self.periodic = periodic
        self.mode = mode
        self.add_state("latents", default=[], dist_reduce_fx="cat")
        self.add_state("values", default=[], dist_reduce_fx="cat")

    def update(self, latents: torch.Tensor, values: torch.Tensor) -> None:
        """Add ``latents [N, k]`` (the factor's latent group) and ``values [N]`` in radians."""
        if latents.ndim != 2 or values.ndim != 1 or latents.shape[0] != values.shape[0]:
            raise ValueError(
                f"Equivariance needs latents [N, k] and values [N], got {tuple(latents.shape)} "
                f"and {tuple(values.shape)} (use latents[:, None] for a single latent)."
            )
        if self.latents and self.latents[0].shape[1] != latents.shape[1]:
            raise ValueError(
                f"Equivariance got {latents.shape[1]} latent columns after "
                f"{self.latents[0].shape[1]} in earlier updates; one metric scores one group."
            )
        self.latents.append(latents.detach())
        self.values.append(values.detach())

    def _rows(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Every update's latents and values as float64 on the CPU; None before any update."""
        if isinstance(self.latents, list) and not self.latents:
            return None
        return dim_zero_cat(self.latents).cpu().double(), dim_zero_cat(self.values).cpu().double()

    def compute(self) -> torch.Tensor:
        """R^2 in [0, 1] (mean over cos and sin when periodic); nan without enough samples."""
        rows = self._rows()
        if rows is None:
            return _nan()
        latents, values = rows
        targets = _targets(values, self.periodic)
        if self.mode == "group":
            return _score(latents, targets)
        scores = torch.stack([_score(column[:, None], targets) for column in latents.T])
        scores = scores[~scores.isnan()]
        return scores.max() if scores.numel() else _nan()

    def slope(self) -> torch.Tensor:
        """The least-squares slope of a single latent against a bounded factor's value: for a
        latent read as an angle (a volume decoder's), 1 means it turns as the object does.
        nan for a group of several latents, a full turn, or values without spread. Over every
        rank's rows, as ``compute()`` is."""
        with self.sync_context():
            rows = self._rows()
        if rows is None:
            return _nan()
        latents, values = rows
        spread = values - values.mean()
        if self.periodic or latents.shape[1] != 1 or not spread.square().sum() > 0:
            return _nan()
        return (spread * (latents[:, 0] - latents[:, 0].mean())).sum() / spread.square().sum()

    def turn_agreement(self) -> torch.Tensor:
        """A slope's analogue for a single latent read as an angle on a full turn: the mean
        resultant length of ``latent - value`` (the reading turns with the object, wherever it
        starts), or minus that of ``latent + value`` when that is larger (it turns against the
        object, a mirrored volume). 1 or -1 is a reading that turns exactly as the object does;
        a constant reading, or one that winds twice per turn, scores near 0. A slope means
        nothing on a circle, where 0 and 2*pi are the same view. nan for a bounded factor or
        several latents. Over every rank's rows, as ``compute()`` is."""
        with self.sync_context():
            rows = self._rows()
        if rows is None or not self.periodic or rows[0].shape[1] != 1:
            return _nan()
        latents, values = rows[0][:, 0], rows[1]
        with_object, against = (_resultant(latents - values), _resultant(latents + values))
        return with_object if with_object >= against else -against


def _nan() -> torch.Tensor:
    """The float64 nan every undefined R^2 is reported as."""
    return torch.tensor(math.nan, dtype=torch.float64)


def _resultant(angles: torch.Tensor) -> torch.Tensor:
    """The mean resultant length of ``angles``: 1 when they all agree, near 0 when spread."""
    return torch.complex(angles.cos().mean(), angles.sin().mean()).abs()


def _targets(values: torch.Tensor, periodic: bool) -> torch.Tensor:
    """Regression targets ``[N, m]``: the value itself, or its point on the unit circle."""
    if periodic:
        return torch.stack([values.cos(), values.sin()], dim=1)
    return values[:, None]


def _score(latents: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over target columns of the OLS R^2 from ``latents [N, p]`` (plus an intercept).

    Target columns without spread (e.g. sin v when v only takes 0 and pi) are left out of the
    mean instead of making it nan: there is nothing to predict in them, and the other column
    still says how well the factor is captured.
    """
    count, width = latents.shape
    if count < width + 2:
        return _nan()
    design = torch.cat([torch.ones(count, 1, dtype=latents.dtype), latents], dim=1)
    # SVD-based: a collapsed (constant) latent makes the design rank-deficient, where the default
    # CPU driver (gelsy) can return a poor fit.
    solution = torch.linalg.lstsq(design, targets, driver="gelsd").solution
    residual = (targets - design @ solution).square().sum(dim=0)
    spread = (targets - targets.mean(dim=0)).square().sum(dim=0)
    # "+ count" measures spread against a unit scale too: sin v at v in {0, pi} is ~1e-16 noise.
    flat = spread <= _FLAT_RTOL * (targets.square().sum(dim=0) + count)
    r_squared = 1 - residual / spread
    return r_squared.masked_fill(flat, math.nan).nanmean()


class Invariance(Metric):
    """How much the latents a group type does not train still vary within its groups.

    In a group of type t only t's factor changes, so an ideal code keeps every latent outside
    t's group (the "inactive" ones, ``~active_masks[t]``) fixed. ``compute()`` returns
    ``invariance/<t>`` for every type seen: the mean over groups of the within-group variance
    summed over inactive latents, divided by the total variance of the same latents over all
    images seen. 0 means perfectly invariant; ~1 means a group varies those latents as much as
    the whole data does.

    Both variances are unbiased (divided by S - 1 and N - 1): with the population variance, a
    group of S images would reach only (S - 1) / S of the total even when its latents are
    independent of the group, and the scale would depend on the group size. The total variance
    comes from per-latent sums and sums of squares, accumulated in float64 because their
    difference cancels most digits when a latent's mean is large compared with its spread.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(
        self, active_masks: torch.Tensor, group_types: list[str] | None = None, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        if active_masks.ndim != 2 or active_masks.dtype != torch.bool:
            raise ValueError(
                f"Invariance needs boolean active_masks [T, D] (row t marks the latents group "
                f"type t trains, see LatentLayout.active_masks), got dtype {active_masks.dtype} "
                f"and shape {tuple(active_masks.shape)}."
            )
        num_types, latent_dim = active_masks.shape
        names = [str(index) for index in range(num_types)] if group_types is None else group_types
        if len(names) != num_types or len(set(names)) != num_types:
            raise ValueError(
                f"Invariance needs {num_types} distinct group type names (one per row of "
                f"active_masks), got {group_types!r}."
            )
        self.group_types = list(names)
        self.register_buffer("active_masks", active_masks.clone(), persistent=False)
        float64 = {"dtype": torch.float64}
        self.add_state("within_sum", torch.zeros(num_types, **float64), dist_reduce_fx="sum")
        self.add_state(
            "group_count", torch.zeros(num_types, dtype=torch.long), dist_reduce_fx="sum"
        )
        self.add_state("total_sum", torch.zeros(latent_dim, **float64), dist_reduce_fx="sum")
        self.add_state("total_squares", torch.zeros(latent_dim, **float64), dist_reduce_fx="sum")
        self.add_state("total_count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, group_codes: torch.Tensor, group_type: torch.Tensor) -> None:
        """Add ``group_codes [G, S, D]`` (S >= 2 codes per group) of types ``group_type [G]``."""
        num_types, latent_dim = self.active_masks.shape
        if group_codes.ndim != 3 or group_codes.shape[2] != latent_dim or group_codes.shape[1] < 2:
            raise ValueError(
                f"Invariance needs group_codes [G, S, D] with S >= 2 codes per group and "
                f"D={latent_dim} latents, got shape {tuple(group_codes.shape)}."
            )
        index = check_group_type(group_type, group_codes.shape[0], num_types)
        codes = group_codes.detach().double()
        inactive = ~self.active_masks[index]
        within = (codes.var(dim=1) * inactive).sum(dim=1)
        self.within_sum.index_add_(0, index, within)
        self.group_count += torch.bincount(index, minlength=num_types)
        flat = codes.reshape(-1, latent_dim)
        self.total_sum += flat.sum(dim=0)
        self.total_squares += flat.square().sum(dim=0)
        self.total_count += flat.shape[0]

    def compute(self) -> dict[str, torch.Tensor]:
        """``invariance/<t>`` per type seen; nan when t's inactive latents never varied at all."""
        count = self.total_count
        mean_square = self.total_squares / count.clamp_min(1)
        spread = (self.total_squares - self.total_sum.square() / count.clamp_min(1)).clamp_min(0)
        inactive = (~self.active_masks).double()
        total = inactive @ (spread / (count - 1).clamp_min(1))
        flat = total <= _FLAT_RTOL * (inactive @ mean_square)
        within = self.within_sum / self.group_count.clamp_min(1)
        ratio = (within / total).masked_fill(flat, math.nan)
        return {
            f"invariance/{name}": ratio[index]
            for index, name in enumerate(self.group_types)
            if self.group_count[index] > 0
        }
