"""The evaluation metrics (recon, novel views, equivariance, invariance, disentanglement scores)
for one network on one split, fed batch by batch.

DC-IGN and the entangled baseline are measured the same way; only the choice of "the latents
of factor f" differs: DC-IGN's named latent group, or for the baseline the latents of largest
variance over groups in which only f varies (paper section 4.1.1), chosen on other data than
the scored split and used for novel views and equivariance alike.

Every number comes from torchmetrics states, so it is the same under DDP as on one process.
The disentanglement scores (MIG, DCI, SAP, beta-VAE, FactorVAE) run on the gathered posterior
means at the end of an epoch.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torchmetrics import Metric

from dcign.batch import GroupedBatch
from dcign.errors import ConfigError
from dcign.model.editing import distinct_pairs, pair_with_next, top_latents, transfer
from dcign.model.layout import LatentLayout
from dcign.model.networks import InverseGraphicsNet
from dcign.scoring.disentanglement import disentanglement_scores
from dcign.scoring.fidelity import IdentityKept, ViewDetail, ViewSSIM, rival_in_lineup
from dcign.scoring.metrics import CodeUse, Equivariance, Invariance, NovelViewMSE, PixelMSE

log = logging.getLogger(__name__)

# A network whose reconstructions reproduce less than this share of the images' variation
# (metric ``code_use``) decodes almost every code to the same picture: it is reported collapsed.
COLLAPSED_BELOW = 0.1


@dataclass(frozen=True)
class FactorInfo:
    """A ground-truth factor as evaluation needs it: its column in batches, its topology and
    the values it takes (none given: the size of a change is not known)."""

    name: str
    column: int
    periodic: bool
    values: tuple[float, ...] = ()

    def change(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """How far apart values ``a`` and ``b`` are, as a share of the largest change the data
        holds (1: from one end of the range to the other, or half a turn of a periodic factor,
        whose values are angles in radians over a full turn); NaN without known values."""
        distance = (a.double() - b.double()).abs()
        if self.periodic:
            distance = torch.remainder(distance, 2 * math.pi)
            return torch.minimum(distance, 2 * math.pi - distance) / math.pi
        span = max(self.values, default=0.0) - min(self.values, default=0.0)
        return distance / span if span > 0 else torch.full_like(distance, math.nan)


class CodeCollector(Metric):
    """Gathers posterior means with their factor values (and identities) across ranks."""

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("codes", default=[], dist_reduce_fx="cat")
        self.add_state("labels", default=[], dist_reduce_fx="cat")

    def update(self, codes: torch.Tensor, labels: torch.Tensor) -> None:
        self.codes.append(codes.detach().float())
        self.labels.append(labels.detach().float())

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        return _cat(self.codes), _cat(self.labels)


class GroupVariance(Metric):
    """Mean within-group variance of every latent, per group type: ``[T, D]``."""

    full_state_update = False

    def __init__(self, num_types: int, latent_dim: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("total", default=torch.zeros(num_types, latent_dim), dist_reduce_fx="sum")
        self.add_state("groups", default=torch.zeros(num_types), dist_reduce_fx="sum")

    def update(self, group_codes: torch.Tensor, group_type: torch.Tensor) -> None:
        variance = group_codes.detach().float().var(dim=1)
        self.total.index_add_(0, group_type, variance)
        self.groups.index_add_(0, group_type, torch.ones_like(group_type, dtype=torch.float))

    def compute(self) -> torch.Tensor:
        return self.total / self.groups.clamp(min=1)[:, None]


def _cat(state: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(state) if isinstance(state, list) else state


def discrete_factors(labels: np.ndarray, names: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Value indices per column, keeping only columns that vary (the scores need >= 2 values)."""
    columns, kept = [], []
    for column, name in enumerate(names):
        _, codes = np.unique(labels[:, column], return_inverse=True)
        if codes.max() > 0:
            columns.append(codes)
            kept.append(name)
    return np.stack(columns, axis=1), kept


class LatentSelection(nn.Module):
    """The latents an entangled network uses for each factor (paper 4.1.1), fixed per factor.

    For each group type, the latents of largest mean variance within groups of that type (as
    many as the layout gives the factor) are "that factor's latents". They are chosen on data
    the scores are not computed on - the training groups seen since the last choice during
    training, the validation split before a test - because choosing them on the scored groups
    themselves hands the entangled network the best latent of the very pairs it is judged on.
    """

    def __init__(self, layout: LatentLayout) -> None:
        super().__init__()
        self.spread = GroupVariance(len(layout.names), layout.latent_dim)
        self.register_buffer("sizes", layout.active_masks().sum(dim=1), persistent=False)
        self.chosen: torch.Tensor | None = None

    @torch.no_grad()
    def observe(self, group_codes: torch.Tensor, group_type: torch.Tensor) -> None:
        """Add posterior means ``[G, S, D]`` of groups of types ``group_type [G]``."""
        self.spread.update(group_codes, group_type)

    def choose(self) -> torch.Tensor | None:
        """Fix the choice from what was observed since the last one (if anything); ``[T, D]``.

        Every rank observes the same number of batches, so they agree on whether to choose and
        the choice itself is made on the states summed over ranks.
        """
        if bool(self.spread.groups.sum() > 0):
            self.chosen = top_latents(self.spread.compute(), self.sizes)
            self.spread.reset()
        return self.chosen


class NetworkMetrics(nn.Module):
    """Section-6 metrics of one network; ``entangled=True`` for the baseline's conventions.

    An entangled network has no named latents: its latents of a factor are those its
    :class:`LatentSelection` (``self.selection``) chose, for novel views and equivariance alike,
    and it is scored only once a choice exists.
    """

    def __init__(
        self,
        layout: LatentLayout,
        factors: Sequence[FactorInfo],
        entangled: bool = False,
        angles: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.layout = layout
        self.entangled = entangled
        # The factors whose latent the network reads as an angle (a volume decoder's pose): its
        # slope against the true value is scored (``angle_slope/<factor>``, 1 = metric), or on
        # a full turn how it turns with it (``angle_turn/<factor>``, 1 = with the object).
        self.angles = tuple(angles)
        self.factors = [f for f in factors if f.name in layout.names]
        self.factor_names = [f.name for f in factors]
        self.register_buffer("active_masks", layout.active_masks(), persistent=False)
        self.recon = PixelMSE()
        self.code_use = CodeUse()
        self.novel_view = NovelViewMSE(layout.names)
        self.ssim = ViewSSIM(layout.names)
        self.detail = ViewDetail(layout.names)
        self.identity_kept = IdentityKept(layout.names)
        self.equivariance = nn.ModuleDict(
            {f.name: Equivariance(periodic=f.periodic) for f in self.factors}
        )
        self.invariance = None if entangled else Invariance(layout.active_masks(), layout.names)
        self.codes = CodeCollector()
        self.selection = LatentSelection(layout) if entangled else None

    @property
    def ready(self) -> bool:
        """Whether the network can be scored (an entangled one needs its latents chosen)."""
        return self.selection is None or self.selection.chosen is not None

    @torch.no_grad()
    def update(self, net: InverseGraphicsNet, batch: GroupedBatch) -> None:
        if not self.ready:
            raise RuntimeError(
                "An entangled network is scored with the latents chosen on other data: observe "
                "groups with .selection.observe() and call .selection.choose() first."
            )
        x, group_type = batch.images, batch.group_type
        groups, size = x.shape[:2]
        mu, _ = net.encode(x.flatten(0, 1))
        codes = mu.view(groups, size, -1)
        recon = net.decode(mu).view_as(x)
        self.recon.update(recon, x)
        self.code_use.update(recon, x)
        dims = self._latents_of_types().to(codes.device)
        edited = transfer(codes, pair_with_next(codes), dims[group_type][:, None, :])
        rerendered = net.decode(edited.flatten(0, 1)).view_as(x)
        target, oracle = pair_with_next(x), pair_with_next(recon)
        keys = torch.cat([batch.identity[..., None].to(batch.factors), batch.factors], dim=-1)
        counted = distinct_pairs(keys)
        self.novel_view.update(group_type, rerendered, oracle, recon, target, x, counted)
        if batch.gallery is not None:  # fidelity is scored where the batch brings its line-ups
            self.ssim.update(group_type, rerendered, oracle, target, counted)
            self.detail.update(group_type, rerendered, oracle, target, counted)
            lineup = pair_with_next(batch.gallery.images)
            lineup_identity = pair_with_next(batch.gallery.identity)
            target_identity = pair_with_next(batch.identity)
            other_face, has_other = self._view_from_other_face(
                net, codes, dims[group_type][:, None, :], lineup, lineup_identity, target_identity
            )
            self.identity_kept.update(
                group_type,
                {"model": rerendered, "oracle": oracle, "source": x, "other_face": other_face},
                lineup,
                lineup_identity,
                target_identity,
                counted,
                other_face_counted=has_other & (batch.identity == target_identity),
                change=self._change(batch.factors, pair_with_next(batch.factors), group_type),
            )
        values = batch.factors.flatten(0, 1)
        for factor in self.factors:
            latents = mu[:, dims[self.layout.names.index(factor.name)]]
            self.equivariance[factor.name].update(latents, values[:, factor.column])
        if self.invariance is not None:
            self.invariance.update(codes, group_type)
        labels = torch.cat([values, batch.identity.flatten(0, 1)[:, None].to(values)], dim=1)
        self.codes.update(mu, labels)

    @staticmethod
    def _view_from_other_face(
        net: InverseGraphicsNet,
        codes: torch.Tensor,
        dims: torch.Tensor,
        lineup: torch.Tensor,
        lineup_identity: torch.Tensor,
        target_identity: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each source re-rendered with the factor's latents ``dims`` read from another face's
        image at its target's view (``[G, S, C, H, W]``), and where such a face exists; the
        line-ups at the targets' views are ``lineup [G, S, K, C, H, W]`` with identities
        ``lineup_identity [G, S, K]``.

        The edit of the novel-view measures reads them from the true target, the same face, so
        a code whose factor latents also carry the face gets the face back through them; from
        another face it does not (``identity_kept_other_face``).
        """
        rival = rival_in_lineup(lineup_identity, target_identity)
        has_other = rival >= 0
        index = rival.clamp_min(0)[:, :, None, None, None, None]
        donors = lineup.gather(2, index.expand(*index.shape[:3], *lineup.shape[3:])).squeeze(2)
        donor_codes, _ = net.encode(donors.flatten(0, 1))
        edited = transfer(codes, donor_codes.view_as(codes), dims)
        return net.decode(edited.flatten(0, 1)).view_as(donors), has_other

    def _change(
        self, factors: torch.Tensor, targets: torch.Tensor, group_type: torch.Tensor
    ) -> torch.Tensor:
        """``[G, S]``: how far each pair's group factor changes, as a share of its largest
        change (:meth:`FactorInfo.change`); NaN in groups whose type is not a factor."""
        change = torch.full(factors.shape[:2], math.nan, dtype=torch.float64)
        for factor in self.factors:
            of_type = (group_type == self.layout.names.index(factor.name)).cpu()
            column = factor.column
            change[of_type] = factor.change(
                targets[of_type, :, column].cpu(), factors[of_type, :, column].cpu()
            )
        return change

    def _latents_of_types(self) -> torch.Tensor:
        """``[T, D]``: the latents that carry each group type's factor."""
        if self.selection is not None and self.selection.chosen is not None:
            return self.selection.chosen
        return self.active_masks

    def compute(self, scores_preset: str | None = "fast", seed: int = 0) -> dict[str, float]:
        results = self.measures()
        if scores_preset:
            results.update(self.scoring(scores_preset, seed)())
        return results

    def measures(self) -> dict[str, float]:
        """Every metric but the disentanglement scores (reconstruction, novel views, fidelity,
        equivariance, invariance), reduced over the ranks."""
        results = {
            "recon_mse": float(self.recon.compute()),
            "code_use": float(self.code_use.compute()),
        }
        for metric in (self.novel_view, self.ssim, self.detail, self.identity_kept):
            if metric.update_called:
                results.update({k: float(v) for k, v in metric.compute().items()})
        for name, metric in self.equivariance.items():
            results[f"equivariance/{name}"] = float(metric.compute())
            if name in self.angles and metric.periodic:
                results[f"angle_turn/{name}"] = float(metric.turn_agreement())
            elif name in self.angles:
                results[f"angle_slope/{name}"] = float(metric.slope())
        if self.invariance is not None:
            results.update({k: float(v) for k, v in self.invariance.compute().items()})
        return results

    def scoring(self, preset: str, seed: int) -> Callable[[], dict[str, float]]:
        """The disentanglement scores of the gathered codes, as work to run later.

        Gathering the codes is a collective under DDP, so it happens here, on the calling
        thread, in the order every rank calls it; the scores themselves (scikit-learn's
        classifiers on NumPy arrays, most of a scoring validation's time) touch no torch
        state, so the returned call may run on another thread, beside another network's.
        """
        codes, labels = (t.cpu().numpy() for t in self.codes.compute())
        return functools.partial(
            score_codes, codes, labels, [*self.factor_names, "identity"], preset, seed
        )

    def reset(self) -> None:
        """Clear the scores' running states (the latent selection is kept)."""
        for name, metric in self.named_modules():
            if isinstance(metric, Metric) and not name.startswith("selection"):
                metric.reset()


def score_codes(
    codes: np.ndarray, labels: np.ndarray, names: list[str], preset: str, seed: int
) -> dict[str, float]:
    """The disentanglement scores of ``codes`` against the factor columns ``labels``; none,
    with a warning, where the codes cannot be scored (too few, or no factor varies)."""
    try:
        factors, kept = discrete_factors(labels, names)
        scores = disentanglement_scores(codes, factors, seed, preset, factor_names=kept)
    except ConfigError as error:
        log.warning("Disentanglement scores skipped: %s", error)
        return {}
    return {key: float(value) for key, value in scores.items()}
