"""Equivariance plots: each extrinsic latent against its factor's true value (paper Figure 6).

For a fixed random subset of the images of ``split``, every latent of an extrinsic group (azimuth,
elevation, light) is plotted against the true value of its factor. A latent that learned its
factor draws a monotonic curve (for a full-turn azimuth, a two-latent group draws the sine and
cosine); an entangled code draws a cloud. The entangled baseline has no named latents, so its
panel shows whichever of its latents correlates best (largest absolute Pearson r) with the
factor.

Logged per factor as a PNG scatter (``equivariance/{factor}``, drawn with PIL so that no
plotting library is needed), as a W&B table with interactive scatter charts when W&B is
attached, and as the absolute correlations ``equivariance/{factor}/{dcign,baseline}_abs_corr``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from callbacks.base import Figures, Picture, Scatter, VisualCallback
from datamodules.grouped import GroupedDataModule
from dcign.model.interface import CodeModel
from dcign.model.layout import INTRINSIC

PLOT = 180  # side of a panel's plotting area, in pixels
LEFT, TOP, RIGHT, BOTTOM = 44, 22, 12, 34  # margins around it, for labels
DOT = 2  # radius of a point
BLUE, ORANGE = (31, 119, 180), (255, 127, 14)


def correlations(codes: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Pearson r of every latent ``codes [N, D]`` with ``truth [N]``; 0 for a constant latent."""
    centred = codes - codes.mean(dim=0)
    target = truth - truth.mean()
    scale = centred.norm(dim=0) * target.norm()
    return torch.where(scale > 0, (centred * target[:, None]).sum(dim=0) / scale, 0.0)


def _offsets(values: np.ndarray) -> np.ndarray:
    """Pixel offsets of ``values`` along an axis of the plotting area, clear of its frame."""
    low, high = values.min(), values.max()
    span = high - low if high > low else 1.0
    return 2 * DOT + (values - low) / span * (PLOT - 4 * DOT)


def scatter_panel(
    x: np.ndarray, y: np.ndarray, title: str, x_label: str, colour: tuple[int, int, int]
) -> np.ndarray:
    """A framed scatter plot of ``y`` against ``x`` with its ranges written at the axes, RGB."""
    font = ImageFont.load_default()
    image = Image.new("RGB", (LEFT + PLOT + RIGHT, TOP + PLOT + BOTTOM), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle((LEFT, TOP, LEFT + PLOT, TOP + PLOT), outline="black")
    for px, py in zip(LEFT + _offsets(x), TOP + PLOT - _offsets(y), strict=True):
        draw.ellipse((px - DOT, py - DOT, px + DOT, py + DOT), fill=colour)
    draw.text((LEFT, 4), title, fill="black", font=font)
    below = TOP + PLOT + 3
    draw.text((LEFT, below), f"{x.min():.3g}", fill="black", font=font)
    draw.text((LEFT + PLOT, below), f"{x.max():.3g}", fill="black", font=font, anchor="ra")
    draw.text((LEFT + PLOT / 2, below + 14), x_label, fill="black", font=font, anchor="ma")
    draw.text((LEFT - 3, TOP), f"{y.max():.3g}", fill="black", font=font, anchor="ra")
    draw.text((LEFT - 3, TOP + PLOT), f"{y.min():.3g}", fill="black", font=font, anchor="rd")
    return np.asarray(image)


@dataclass(frozen=True)
class Series:
    """One plotted latent: its table column, its label, its values and its |r| with the truth.

    Column names are stable across epochs (they become W&B keys); latent indices, which may
    change (the baseline's best latent), live in the label.
    """

    column: str
    label: str
    values: torch.Tensor
    abs_corr: float


class EquivariancePlot(VisualCallback):
    """One scatter figure per extrinsic latent group of the layout."""

    key = "equivariance"

    def __init__(
        self,
        output_dir: str,
        every_n_epochs: int = 1,
        num_images: int = 256,
        seed: int = 0,
        split: str = "val",
    ) -> None:
        if num_images < 2:
            raise ValueError("EquivariancePlot needs num_images >= 2.")
        super().__init__(output_dir, every_n_epochs, seed, split)
        self.num_images = num_images

    def figures(self, datamodule: GroupedDataModule, pl_module: CodeModel) -> Figures:
        sample = datamodule.sample_up_to(self.split, self.num_images, self.seed)
        images = sample.images.to(pl_module.device)
        codes = pl_module.encode(images)[0].float().cpu()
        others = {
            name: network.encode(images)[0].float().cpu()
            for name, network in pl_module.comparisons.items()
        }
        units = {factor.name: factor.unit for factor in datamodule.factors}
        figures = Figures()
        for name, dims in pl_module.layout.items():
            if name == INTRINSIC:
                continue
            truth = sample.factors[:, datamodule.factor_names.index(name)].float()
            series = self._series(codes, others, dims, truth)
            for network in ("dcign", *others):
                found = [s.abs_corr for s in series if s.column.startswith(network)]
                if found:
                    figures.scalars[f"{name}/{network}_abs_corr"] = max(found)
            figures.pictures.append(self._picture(name, units[name], truth, series))
            x = f"truth_{units[name]}"
            rows = torch.stack([truth, *(s.values for s in series)], dim=1).tolist()
            titles = {s.column: f"{name}: {s.label} vs. truth" for s in series}
            columns = (x, *(s.column for s in series))
            figures.scatters.append(Scatter(name, columns, rows, x, titles))
        return figures

    def _picture(self, name: str, unit: str, truth: torch.Tensor, series: list[Series]) -> Picture:
        """One panel per series, side by side; angles are shown in degrees."""
        degrees = unit == "rad"
        x_label = f"true {name}" + (" (deg)" if degrees else "")
        shown = np.degrees(truth.numpy()) if degrees else truth.numpy()
        panels = [
            scatter_panel(
                shown,
                s.values.numpy(),
                f"{s.label}, |r| = {s.abs_corr:.2f}",
                x_label,
                BLUE if s.column.startswith("dcign") else ORANGE,
            )
            for s in series
        ]
        caption = f"{name}: latent vs. true value on {len(truth)} {self.split} images"
        return Picture(name, np.concatenate(panels, axis=1), caption)

    @staticmethod
    def _series(
        codes: torch.Tensor,
        others: dict[str, torch.Tensor],
        dims: list[int],
        truth: torch.Tensor,
    ) -> list[Series]:
        """DC-IGN's latents of the group, then each comparison network's best-correlated one."""
        r = correlations(codes[:, dims], truth).abs().tolist()
        series = [
            Series(
                f"dcign_{k + 1}" if len(dims) > 1 else "dcign", f"DC-IGN z{d}", codes[:, d], r[k]
            )
            for k, d in enumerate(dims)
        ]
        for name, other in others.items():
            r = correlations(other, truth).abs()
            best = int(r.argmax())
            series.append(Series(name, f"{name} z{best}", other[:, best], float(r[best])))
        return series
