"""Image grids and their delivery to files and to whichever loggers are attached.

Every visual callback draws a grid, writes it as a PNG under the run directory (so the pictures
exist without any dashboard) and hands it to W&B or TensorBoard when those are attached. A
logging failure is only a warning: pictures must never take a training run down.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pytorch_lightning.loggers import Logger, TensorBoardLogger, WandbLogger

log = logging.getLogger(__name__)


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


def log_image(
    loggers: Sequence[Logger], key: str, array: np.ndarray, caption: str, step: int
) -> None:
    """Send one picture to every attached logger that can show pictures."""
    for logger in loggers:
        try:
            if isinstance(logger, WandbLogger):
                logger.log_image(key=key, images=[array], caption=[caption], step=step)
            elif isinstance(logger, TensorBoardLogger):
                image = array if array.ndim == 3 else array[..., None]
                logger.experiment.add_image(key, image, global_step=step, dataformats="HWC")
        except Exception as error:  # noqa: BLE001 - a picture must never end a run
            log.warning("Could not log image %r to %s: %s", key, type(logger).__name__, error)
