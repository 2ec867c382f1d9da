"""DC-IGN vs. the entangled baseline at re-rendering a scene from new views (paper Figure 7).

For a few scenes of ``split`` (one identity with every factor but one held fixed), one grid per
extrinsic latent group shows four rows per scene:

* original: the scene at one view (the middle of the shown values);
* DC-IGN: the original re-rendered at each shown value of the factor, by replacing the factor's
  latent group of its code with the group of the encoded true view at that value;
* baseline (and any other comparison network of the model): the same with its latent(s) of
  largest variance over the scene's views, as many as DC-IGN's group has (paper, section
  4.1.1); absent without a baseline;
* truth: the true views at those values.

A DC-IGN that learned the factor re-renders rows that look like the truth row. The novel-view
MSE of both networks (per pixel, over the views other than the original's own) goes into the
caption and is logged as ``comparison/{factor}/novel_view_mse_{dcign,baseline}``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from callbacks.base import Figures, Picture, VisualCallback, display_scale
from datamodules.grouped import GroupedDataModule
from dcign.model.editing import max_variance_latents, transfer
from dcign.model.interface import CodeModel
from dcign.model.layout import INTRINSIC
from dcign.scoring.figures import image_grid

PAD = 1  # pixels between tiles, as image_grid draws them (before scaling)


@dataclass(frozen=True)
class NovelViews:
    """Re-rendered views of ``n`` scenes at ``V`` values; images ``[n, V, C, H, W]``."""

    truth: torch.Tensor
    dcign: torch.Tensor
    comparisons: dict[str, torch.Tensor]  # network name -> its re-rendered views
    source: int

    @property
    def original(self) -> torch.Tensor:
        return self.truth[:, self.source]

    def mse(self, rendered: torch.Tensor) -> float:
        """MSE against the truth over the views the original was not taken at.

        The denominator counts every channel of every pixel of those views once, as
        ``novel_view_mse`` does; it is computed here, on rank 0 alone, because a synchronising
        metric object would wait for ranks that never draw pictures.
        """
        targets = torch.arange(self.truth.shape[1], device=self.truth.device) != self.source
        error = rendered[:, targets].float() - self.truth[:, targets].float()
        return float(error.square().mean())

    def rows(self) -> tuple[list[torch.Tensor], list[str]]:
        """Grid rows, scene after scene, and the label of each row."""
        rows, labels = [], []
        for s in range(len(self.truth)):
            shown = [("original", self.original[s : s + 1]), ("DC-IGN", self.dcign[s])]
            shown += [(name, views[s]) for name, views in self.comparisons.items()]
            shown.append(("truth", self.truth[s]))
            labels += [label for label, _ in shown]
            rows += [images for _, images in shown]
        return rows, labels


def novel_views(
    pl_module: CodeModel, truth: torch.Tensor, dims: Sequence[int], source: int
) -> NovelViews:
    """Re-render view ``source`` of each scene in ``truth [n, V, C, H, W]`` at all V views.

    DC-IGN transfers the latents ``dims``; each comparison network (the baseline) transfers its
    ``len(dims)`` latents of largest variance over each scene's views.
    """
    codes = _encode(pl_module.encode, truth)
    group = torch.zeros(codes.shape[-1], dtype=torch.bool, device=codes.device)
    group[list(dims)] = True
    dcign = _rerender(pl_module.decode, codes, group, source)
    comparisons = {}
    for name, network in pl_module.comparisons.items():
        other_codes = _encode(network.encode, truth)
        latents = max_variance_latents(other_codes, len(dims))[:, None]  # [n, 1, D]
        comparisons[name] = _rerender(network.decode, other_codes, latents, source)
    return NovelViews(truth, dcign, comparisons, source)


def _encode(encode: Callable, images: torch.Tensor) -> torch.Tensor:
    """Posterior means ``[n, V, D]`` of images ``[n, V, C, H, W]``."""
    mu, _ = encode(images.flatten(0, 1))
    return mu.unflatten(0, images.shape[:2])


def _rerender(
    decode: Callable, codes: torch.Tensor, dims: torch.Tensor, source: int
) -> torch.Tensor:
    originals = codes[:, source : source + 1].expand_as(codes)
    return decode(transfer(originals, codes, dims).flatten(0, 1)).unflatten(0, codes.shape[:2])


def label_rows(grid: np.ndarray, labels: Sequence[str], tile: int, scale: int) -> np.ndarray:
    """``grid`` (from :func:`image_grid`) with a white strip on the left naming each row."""
    font = ImageFont.load_default()
    width = 8 + max(int(font.getlength(label)) for label in labels)
    strip = Image.new(Image.fromarray(grid).mode, (width, grid.shape[0]), "white")
    draw = ImageDraw.Draw(strip)
    for r, label in enumerate(labels):
        _, top, _, bottom = font.getbbox(label)
        centre = (PAD + r * (tile + PAD) + tile / 2) * scale
        draw.text((4, centre - (top + bottom) / 2), label, fill="black", font=font)
    return np.concatenate([np.asarray(strip), grid], axis=1)


class BaselineComparison(VisualCallback):
    """One grid per extrinsic latent group, logged as ``comparison/{group}``."""

    key = "comparison"

    def __init__(
        self,
        output_dir: str,
        every_n_epochs: int = 1,
        num_scenes: int = 2,
        views: int = 7,
        seed: int = 0,
        split: str = "val",
    ) -> None:
        if num_scenes < 1 or views < 2:
            raise ValueError("BaselineComparison needs num_scenes >= 1 and views >= 2.")
        super().__init__(output_dir, every_n_epochs, seed, split)
        self.num_scenes = num_scenes
        self.views = views

    def figures(self, datamodule: GroupedDataModule, pl_module: CodeModel) -> Figures:
        figures = Figures()
        for name, dims in pl_module.layout.items():
            if name != INTRINSIC:
                picture, errors = self._compare(datamodule, pl_module, name, dims)
                figures.pictures.append(picture)
                for network, error in errors.items():
                    figures.scalars[f"{name}/novel_view_mse_{network}"] = error
        return figures

    def _compare(
        self,
        datamodule: GroupedDataModule,
        pl_module: CodeModel,
        factor: str,
        dims: list[int],
    ) -> tuple[Picture, dict[str, float]]:
        """The grid of one factor and the novel-view MSE of each network."""
        scenes = datamodule.scene_views(self.split, factor, self.num_scenes, self.seed)
        columns = self._columns(scenes.images.shape[1])
        truth = scenes.images[:, columns].to(pl_module.device)
        result = novel_views(pl_module, truth, dims, source=len(columns) // 2)
        errors = {"dcign": result.mse(result.dcign)}
        errors.update({name: result.mse(views) for name, views in result.comparisons.items()})
        rows, labels = result.rows()
        size = truth.shape[-1]
        scale = display_scale(size)
        grid = label_rows(image_grid(rows, pad=PAD, scale=scale), labels, size, scale)
        column = datamodule.factor_names.index(factor)
        values = scenes.factors[0, columns, column].tolist()
        in_radians = datamodule.factors[column].unit == "rad"
        shown = ", ".join(f"{math.degrees(v):.0f}deg" if in_radians else f"{v:g}" for v in values)
        order = " / ".join(labels[: len(labels) // len(truth)])
        mse = ", ".join(f"{network} {error:.4f}" for network, error in errors.items())
        caption = f"{factor} at {shown}; rows per scene: {order}; novel-view MSE: {mse}"
        return Picture(factor, grid, caption), errors

    def _columns(self, available: int) -> list[int]:
        """At most ``views`` view indices, evenly spread over the available ones."""
        picks = np.linspace(0, available - 1, min(self.views, available)).round().astype(int)
        return sorted(set(picks.tolist()))
