"""The report's pictures, drawn by the run's own figure callbacks.

The evaluation report shows exactly what the training dashboards showed, so it asks the
callbacks the run was configured with (stored in the checkpoint's run config) for their
figures instead of drawing anything a second way. They are found by what they can do - a
``figures`` method and a ``key`` - not by importing them, so that ``dcign`` never depends on
``callbacks``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from hydra.utils import get_class, instantiate
from PIL import Image

log = logging.getLogger(__name__)


@runtime_checkable
class FigureSource(Protocol):
    """What the report needs of a callback: a ``key`` and pictures for a model and data."""

    key: str

    def figures(self, datamodule: Any, pl_module: Any) -> Any:
        """An object whose ``pictures`` each have a ``name`` and a uint8 ``array``."""


def image_grid(rows: Sequence[torch.Tensor], pad: int = 1, scale: int = 1) -> np.ndarray:
    """Tile rows of images ``[N, C, H, W]`` in [0, 1] into one uint8 ``[H', W', C']`` array.

    Rows may have different lengths; short rows are padded with white. Grayscale stays one
    channel; ``scale`` enlarges tiny images with nearest-neighbour so they stay readable.
    """
    height, width = rows[0].shape[-2:]
    channels = rows[0].shape[-3]
    columns = max(len(row) for row in rows)
    canvas = torch.ones(channels, len(rows) * (height + pad) + pad, columns * (width + pad) + pad)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            top, left = pad + r * (height + pad), pad + c * (width + pad)
            canvas[:, top : top + height, left : left + width] = image.detach().float().cpu()
    if scale > 1:
        canvas = canvas.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)
    array = (canvas.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return array[..., 0] if channels == 1 else array


def save_png(array: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def figure_sources(
    callbacks: Mapping[str, Any] | None, directory: Path, split: str
) -> list[FigureSource]:
    """The configured callbacks that draw figures, built to write under ``directory``.

    Each draws from ``split``, the identities the report scores, whatever split it drew from
    during training (validation, by default); a callback without a ``split`` option keeps its own.
    """
    sources = []
    for options in (callbacks or {}).values():
        if not isinstance(options, Mapping) or "_target_" not in options:
            continue
        kind = get_class(options["_target_"])
        if not hasattr(kind, "figures"):
            continue
        placed = {"output_dir": str(directory)}
        if "split" in inspect.signature(kind).parameters:
            placed["split"] = split
        source = instantiate({**options, **placed})
        if isinstance(source, FigureSource):
            sources.append(source)
    return sources


def report_figures(
    pl_module: Any,
    datamodule: Any,
    callbacks: Mapping[str, Any] | None,
    directory: Path,
    split: str,
) -> list[Path]:
    """Write every figure callback's pictures of ``split`` as ``<key>_<name>.png``."""
    paths = []
    for source in figure_sources(callbacks, directory, split):
        for picture in source.figures(datamodule, pl_module).pictures:
            paths.append(save_png(picture.array, directory / f"{source.key}_{picture.name}.png"))
    if not paths:
        log.info("The run configured no figure callbacks; the report has no pictures.")
    return paths
