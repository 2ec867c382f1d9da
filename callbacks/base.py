"""What every picture callback shares: when it runs, where its pictures go, how it fails.

A picture callback only has to say how to make its figures from the datamodule and the module's
public interface (:class:`~dcign.model.interface.CodeModel`: ``encode``, ``decode``, ``layout``,
``comparisons``).
This base class decides the rest the same way for all of them:

* it runs at the end of every ``every_n_epochs``-th validation epoch, never during the sanity
  check, and only on global rank 0. Drawing uses no collective call, so the other ranks need
  not take part and cannot hang waiting for rank 0;
* figures are made under ``torch.no_grad()`` (the module is already in eval mode during
  validation);
* pictures are written as ``epoch{E:03d}_{name}.png`` under ``output_dir`` and sent, with the
  scalars and scatter tables, to whichever loggers are attached;
* any exception becomes a warning: a picture must never end a training run;
* images come from ``split``: validation identities unless told otherwise.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import Logger, WandbLogger

from callbacks.pictures import log_image
from datamodules.grouped import GroupedDataModule
from dcign.model.interface import CodeModel
from dcign.scoring.figures import save_png

log = logging.getLogger(__name__)

# Images smaller than this many pixels across are enlarged (nearest-neighbour) for display.
DISPLAY_SIZE = 64
# Where the pictures' images come from. Pictures seen during training show validation
# identities, so that nobody looking at them to choose a setting ever looks at test images; the
# evaluation report draws the split it scores.
FIGURE_SPLITS = ("val", "test", "train")


@dataclass(frozen=True)
class Picture:
    """One image: ``name`` ends its file name and logger key; ``array`` is uint8 HW or HWC."""

    name: str
    array: np.ndarray
    caption: str


@dataclass(frozen=True)
class Scatter:
    """A table of points for interactive W&B scatter charts: ``x`` against each ``charts`` key.

    ``charts`` maps a y column to its chart's title. Column names are stable across epochs (they
    become logger keys); what changes, such as which latent is plotted, belongs in the title.
    """

    name: str
    columns: tuple[str, ...]
    rows: list[list[float]]
    x: str
    charts: dict[str, str]


@dataclass
class Figures:
    """Everything one callback produces at one epoch."""

    pictures: list[Picture] = field(default_factory=list)
    scalars: dict[str, float] = field(default_factory=dict)
    scatters: list[Scatter] = field(default_factory=list)


def display_scale(image_size: int) -> int:
    """Integer enlargement that makes tiny images readable on a dashboard."""
    return max(1, DISPLAY_SIZE // image_size)


class VisualCallback(pl.Callback, ABC):
    """Runs :meth:`figures` on rank 0 every ``every_n_epochs`` epochs and delivers the result.

    ``key`` prefixes every logged key of the subclass (``{key}/{picture name}``).
    """

    key: ClassVar[str]
    # The interface a model needs for these pictures; other models are left out.
    draws_for: ClassVar[type] = CodeModel

    def __init__(
        self, output_dir: str, every_n_epochs: int = 1, seed: int = 0, split: str = "val"
    ) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"{type(self).__name__} needs every_n_epochs >= 1.")
        if split not in FIGURE_SPLITS:
            raise ValueError(
                f"{type(self).__name__} draws from split={split!r}; choose one of "
                f"{', '.join(FIGURE_SPLITS)}."
            )
        self.output_dir = Path(output_dir)
        self.every_n_epochs = every_n_epochs
        self.seed = seed
        self.split = split

    @abstractmethod
    def figures(self, datamodule: GroupedDataModule, pl_module: CodeModel) -> Figures:
        """Draw this epoch's figures (called under ``torch.no_grad()``)."""

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        if not isinstance(pl_module, self.draws_for):
            return  # a model without what these pictures show (e.g. a GQN has no code)
        if (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        try:
            with torch.no_grad():
                figures = self.figures(trainer.datamodule, pl_module)
            self.publish(trainer, figures)
        except Exception as error:  # noqa: BLE001 - a picture must never end a run
            log.warning(
                "%s failed at epoch %d: %s", type(self).__name__, trainer.current_epoch, error
            )
            log.debug("Traceback of the failed %s", type(self).__name__, exc_info=True)

    def publish(self, trainer: pl.Trainer, figures: Figures) -> None:
        """Write the pictures as PNG files and hand everything to the attached loggers."""
        epoch, step = trainer.current_epoch, trainer.global_step
        for picture in figures.pictures:
            save_png(picture.array, self.output_dir / f"epoch{epoch:03d}_{picture.name}.png")
            key = f"{self.key}/{picture.name}"
            caption = f"epoch {epoch}: {picture.caption}"
            log_image(trainer.loggers, key, picture.array, caption, step)
        scalars = {f"{self.key}/{name}": value for name, value in figures.scalars.items()}
        if scalars:
            _log_metrics(trainer.loggers, scalars, step)
        wandb_loggers = [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]
        for scatter in figures.scatters if wandb_loggers else []:
            _log_metrics(wandb_loggers, self._wandb_charts(scatter), step)

    def _wandb_charts(self, scatter: Scatter) -> dict[str, Any]:
        """The scatter's table and its ``wandb.plot.scatter`` charts, by logger key."""
        import wandb  # only needed, and only imported, when a W&B logger is attached

        table = wandb.Table(columns=list(scatter.columns), data=scatter.rows)
        charts: dict[str, Any] = {f"{self.key}/{scatter.name}_table": table}
        for y, title in scatter.charts.items():
            charts[f"{self.key}/{scatter.name}_{y}"] = wandb.plot.scatter(
                table, scatter.x, y, title=title
            )
        return charts


def _log_metrics(loggers: Sequence[Logger], metrics: dict[str, Any], step: int) -> None:
    """``log_metrics`` on every logger; a logger that fails only costs a warning."""
    for logger in loggers:
        try:
            logger.log_metrics(metrics, step=step)
        except Exception as error:  # noqa: BLE001 - logging must never end a run
            log.warning("Could not log %s to %s: %s", list(metrics), type(logger).__name__, error)
