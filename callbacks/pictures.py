"""Pictures delivered to whichever loggers are attached.

Every visual callback writes its grids as PNG files under the run directory (so the pictures
exist without any dashboard) and hands them to W&B or TensorBoard when those are attached. A
logging failure is only a warning: pictures must never take a training run down.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from pytorch_lightning.loggers import Logger, TensorBoardLogger, WandbLogger

log = logging.getLogger(__name__)


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
