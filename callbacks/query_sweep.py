"""A model's views of scenes along a factor, rendered from a few context views.

For a GQN this is its latent sweep: for a few fixed scenes of ``split`` (one identity, only the
factor varying), the network sees ``context`` views and renders the scene at every value of the
factor - the same azimuth sweep DC-IGN's pictures show. Rows per scene: the context views, the
true views, the mean of ``samples`` draws, each draw on its own row (their spread is the
network's uncertainty), and - beside it - DC-IGN rendering the same queries from the same
context (its codes averaged, the query's latents from the equivariance fit), from
``dcign_ckpt`` (``shipped``: the weights shipped with the package) when it fits the data.

A run trained on a sub-range of the factor (``dataset.train_range``) is shown as
``benchmarks/novel_view.py --beyond`` scores it: the context views are drawn from inside the
range, and DC-IGN's value -> latents map is fitted on reference images inside it and followed
beyond it along its line, so the columns outside the range are views neither model has seen.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from callbacks.base import Figures, Picture, VisualCallback, display_scale
from callbacks.comparison import label_rows
from datamodules.grouped import GroupedDataModule
from datamodules.train_range import in_range
from dcign.batch import LabelledImages
from dcign.model.interface import ViewRenderer
from dcign.scoring.figures import image_grid
from dcign.scoring.multi_view import CodeRenderer

log = logging.getLogger(__name__)


class QuerySweep(VisualCallback):
    """One grid of a factor's sweep, logged as ``query_sweep/{factor}``."""

    key = "query_sweep"
    draws_for = ViewRenderer

    def __init__(
        self,
        output_dir: str,
        every_n_epochs: int = 1,
        factor: str = "azimuth",
        num_scenes: int = 2,
        context: int = 3,
        samples: int = 3,
        dcign_ckpt: str | None = "shipped",
        seed: int = 0,
        split: str = "val",
    ) -> None:
        if num_scenes < 1 or context < 1 or samples < 1:
            raise ValueError("QuerySweep needs num_scenes, context and samples >= 1.")
        super().__init__(output_dir, every_n_epochs, seed, split)
        self.factor = factor
        self.num_scenes = num_scenes
        self.context = context
        self.samples = samples
        self.dcign_ckpt = dcign_ckpt
        self._dcign: CodeRenderer | None | bool = False  # False: not loaded yet

    def figures(self, datamodule: GroupedDataModule, pl_module: Any) -> Figures:
        scenes = datamodule.scene_views(self.split, self.factor, self.num_scenes, self.seed)
        column = datamodule.factor_names.index(self.factor)
        seen = trained_views(datamodule, scenes.factors[0, :, column].cpu().numpy(), self.factor)
        order = np.random.default_rng(self.seed).permutation(seen)[: min(self.context, len(seen))]
        device = pl_module.device
        images, factors = scenes.images.to(device), scenes.factors.to(device)
        context, known = images[:, order], factors[:, order]
        rows: list[torch.Tensor] = []
        labels: list[str] = []
        renders = {"mean": pl_module.render_views(context, known, factors)}
        for draw in range(self.samples):
            renders[f"draw {draw + 1}"] = pl_module.render_views(
                context, known, factors, samples=1, seed=draw
            )
        dcign = self._dcign_renderer(datamodule)
        if dcign is not None:
            renders["DC-IGN"] = dcign.render_views(context.cpu(), known.cpu(), factors.cpu())
        for s in range(len(images)):
            shown = [("context", context[s]), ("truth", images[s])]
            shown += [(name, render[s]) for name, render in renders.items()]
            labels += [label for label, _ in shown]
            rows += [row.float().cpu() for _, row in shown]
        size = images.shape[-1]
        scale = display_scale(size)
        grid = label_rows(image_grid(rows, scale=scale), labels, size, scale)
        within = " inside dataset.train_range" if len(seen) < images.shape[1] else ""
        caption = (
            f"{self.factor} sweep of {len(images)} {self.split} scenes "
            f"from {len(order)} context views{within}; "
            f"rows: {' / '.join(labels[: len(labels) // len(images)])}"
        )
        return Figures(pictures=[Picture(self.factor, grid, caption)])

    def _dcign_renderer(self, datamodule: GroupedDataModule) -> CodeRenderer | None:
        """DC-IGN for the comparison row, loaded once; None without one or if it does not fit."""
        if self._dcign is False:
            self._dcign = self._load_dcign(datamodule)
        return self._dcign or None

    def _load_dcign(self, datamodule: GroupedDataModule) -> CodeRenderer | None:
        if self.dcign_ckpt is None:
            return None
        from dcign.run.restore import load_checkpoint
        from dcign.ship import SHIPPED

        path = SHIPPED if self.dcign_ckpt == "shipped" else Path(self.dcign_ckpt)
        model, _ = load_checkpoint(str(path))
        net = model.hparams.net
        fits = (net["image_size"], net["channels"]) == (datamodule.image_size, datamodule.channels)
        if not fits or set(model.layout) - {*datamodule.factor_names, "intrinsic"}:
            log.warning("%s does not fit this data set; the sweep shows no DC-IGN row.", path)
            return None
        reference = datamodule.reference_images(256)
        ranges = datamodule.train_range
        if ranges:
            keep = in_range(ranges, reference.factors.numpy(), datamodule.factor_names)
            reference = LabelledImages(*(field[torch.as_tensor(keep)] for field in reference))
        factors = datamodule.factor_dicts
        return CodeRenderer.for_dcign(model.eval(), reference, factors, extrapolate=bool(ranges))


def trained_views(datamodule: GroupedDataModule, values: np.ndarray, factor: str) -> np.ndarray:
    """The indices of a scene's views (``values`` of ``factor``, one per view) that training
    saw: those inside the factor's ``dataset.train_range``, or every view without one."""
    ranges = [r for r in datamodule.train_range if r.factor.name == factor]
    inside = ranges[0].contains(values) if ranges else np.ones(len(values), dtype=bool)
    return np.flatnonzero(inside)
