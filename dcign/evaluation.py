"""All of ``DESIGN.md`` section 6 for one network on one split, fed batch by batch.

DC-IGN and the entangled baseline are measured the same way; only the choice of "the latents
of factor f" differs: DC-IGN's named latent group, or for the baseline the latents of largest
variance over a group in which only f varies (paper section 4.1.1), and the baseline's best
single latent for equivariance (the most generous reading for it).

Every number comes from torchmetrics states, so it is the same under DDP as on one process.
The disentanglement scores (MIG, DCI, SAP, beta-VAE, FactorVAE) run on the gathered posterior
means at the end of an epoch.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torchmetrics import Metric

from dcign.disentanglement import disentanglement_scores
from dcign.editing import max_variance_latents, pair_with_next, top_latents, transfer
from dcign.errors import ConfigError
from dcign.layout import LatentLayout
from dcign.metrics import Equivariance, Invariance, NovelViewMSE, PixelMSE
from dcign.networks import InverseGraphicsNet

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FactorInfo:
    """A ground-truth factor as evaluation needs it: its column in batches and its topology."""

    name: str
    column: int
    periodic: bool


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


class NetworkMetrics(nn.Module):
    """Section-6 metrics of one network; ``entangled=True`` for the baseline's conventions."""

    def __init__(
        self, layout: LatentLayout, factors: Sequence[FactorInfo], entangled: bool = False
    ) -> None:
        super().__init__()
        self.layout = layout
        self.entangled = entangled
        self.factors = [f for f in factors if f.name in layout.names]
        self.factor_names = [f.name for f in factors]
        self.register_buffer("active_masks", layout.active_masks(), persistent=False)
        self.recon = PixelMSE()
        self.novel_view = NovelViewMSE(layout.names)
        mode = "best_single" if entangled else "group"
        self.equivariance = nn.ModuleDict(
            {f.name: Equivariance(periodic=f.periodic, mode=mode) for f in self.factors}
        )
        self.invariance = None if entangled else Invariance(layout.active_masks(), layout.names)
        self.codes = CodeCollector()
        # The baseline's "latents of factor f" are fixed per factor, as in the paper: chosen
        # from the variance over groups varying f seen in the previous pass (a validation
        # epoch, or the val split before a test run), then used for every pair.
        self.group_variance = GroupVariance(len(layout.names), layout.latent_dim)
        self.selection: torch.Tensor | None = None

    @torch.no_grad()
    def update(self, net: InverseGraphicsNet, batch: Mapping[str, torch.Tensor]) -> None:
        x, group_type = batch["images"], batch["group_type"]
        groups, size = x.shape[:2]
        mu, _ = net.encode(x.flatten(0, 1))
        codes = mu.view(groups, size, -1)
        recon = net.decode(mu).view_as(x)
        self.recon.update(recon, x)
        edited = transfer(codes, pair_with_next(codes), self._transfer_dims(codes, group_type))
        rerendered = net.decode(edited.flatten(0, 1)).view_as(x)
        self.novel_view.update(
            group_type, rerendered, pair_with_next(recon), recon, pair_with_next(x)
        )
        values = batch["factors"].flatten(0, 1)
        for factor in self.factors:
            latents = mu if self.entangled else mu[:, self.layout.indices(factor.name)]
            self.equivariance[factor.name].update(latents, values[:, factor.column])
        if self.invariance is not None:
            self.invariance.update(codes, group_type)
        self.group_variance.update(codes, group_type)
        labels = torch.cat([values, batch["identity"].flatten(0, 1)[:, None].to(values)], dim=1)
        self.codes.update(mu, labels)

    def _transfer_dims(self, codes: torch.Tensor, group_type: torch.Tensor) -> torch.Tensor:
        """``[G, 1, D]``: which latents carry each group's factor.

        Before any selection exists (the first validation), the baseline falls back to the
        largest-variance latents of each group itself, which favours it slightly.
        """
        active = self.active_masks[group_type]
        if self.entangled:
            if self.selection is not None:
                active = self.selection.to(codes.device)[group_type]
            else:
                active = max_variance_latents(codes, active.sum(dim=1))
        return active[:, None, :]

    def select_latents(self) -> torch.Tensor:
        """Per group type, the latents of largest mean within-group variance (``[T, D]``)."""
        return top_latents(self.group_variance.compute(), self.active_masks.sum(dim=1))

    def compute(self, scores_preset: str | None = "fast", seed: int = 0) -> dict[str, float]:
        results = {"recon_mse": float(self.recon.compute())}
        results.update({k: float(v) for k, v in self.novel_view.compute().items()})
        for name, metric in self.equivariance.items():
            results[f"equivariance/{name}"] = float(metric.compute())
        if self.invariance is not None:
            results.update({k: float(v) for k, v in self.invariance.compute().items()})
        if scores_preset:
            results.update(self._scores(scores_preset, seed))
        if self.entangled:
            self.selection = self.select_latents()
        return results

    def _scores(self, preset: str, seed: int) -> dict[str, float]:
        codes, labels = (t.cpu().numpy() for t in self.codes.compute())
        try:
            factors, names = discrete_factors(labels, [*self.factor_names, "identity"])
            scores = disentanglement_scores(codes, factors, seed, preset, factor_names=names)
        except ConfigError as error:
            log.warning("Disentanglement scores skipped: %s", error)
            return {}
        return {key: float(value) for key, value in scores.items()}

    def reset(self) -> None:
        for metric in self.modules():
            if isinstance(metric, Metric):
                metric.reset()
