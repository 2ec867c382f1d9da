"""The dashboards' pictures drawn once, for the evaluation report.

The report shows exactly what the training dashboards show, by asking the same callbacks for
their figures instead of drawing anything a second way.
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl

from callbacks.base import VisualCallback
from callbacks.comparison import BaselineComparison
from callbacks.equivariance_plot import EquivariancePlot
from callbacks.images import save_png
from callbacks.latent_sweep import LatentSweep
from callbacks.uncertainty import PosteriorUncertainty
from datamodules.grouped import GroupedDataModule


def report_callbacks(directory: Path, seed: int = 0) -> list[VisualCallback]:
    return [
        LatentSweep(output_dir=str(directory), seed=seed),
        BaselineComparison(output_dir=str(directory), seed=seed),
        EquivariancePlot(output_dir=str(directory), seed=seed),
        PosteriorUncertainty(output_dir=str(directory), seed=seed),
    ]


def report_figures(
    module: pl.LightningModule, datamodule: GroupedDataModule, directory: Path, seed: int = 0
) -> list[Path]:
    """Write every callback's pictures as ``<key>_<name>.png`` under ``directory``."""
    paths = []
    for callback in report_callbacks(directory, seed):
        for picture in callback.figures(datamodule, module).pictures:
            paths.append(save_png(picture.array, directory / f"{callback.key}_{picture.name}.png"))
    return paths
