"""Evaluate a checkpoint: ``python -m dcign.evaluate ckpt_path=.../last.ckpt [dataset=...]``.

Rebuilds the data set from the run config stored in the checkpoint (or the one chosen on the
command line), runs DC-IGN and its baseline over the test identities with the metrics of
docs/evaluation.md, and writes ``metrics.json`` and ``report.md`` (with figures) into the
Hydra output directory.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from dcign.errors import ConfigError
from dcign.model.module import DCIGN
from dcign.run.restore import data_config, load_checkpoint
from dcign.run.training import build, run_or_explain
from dcign.scoring.comparison_latents import observe_comparison_latents
from dcign.scoring.figures import report_figures
from dcign.scoring.network_scores import NetworkScores
from dcign.scoring.report import split_metrics, write_json, write_markdown
from dcign.ship import SHIPPED

log = logging.getLogger(__name__)
CONF = str(Path(__file__).resolve().parents[1] / "conf")


def evaluate(cfg: DictConfig, output_dir: Path) -> dict[str, dict[str, float]]:
    model, run_config = load_checkpoint(str(cfg.ckpt_path or SHIPPED))
    datamodule = build(data_config(cfg, run_config), layout=model.hparams.layout)
    # Evaluation sequences give every trained group type equal turns (GroupedBatchSampler), so
    # this many batches hold at least `pairs` pairs of each factor on each split.
    datamodule.val_batches = datamodule.batches_for_pairs(cfg.pairs)
    datamodule.val_fidelity = True  # SSIM and identity kept on either split
    scores = NetworkScores(datamodule.factor_dicts, cfg.scores_preset)
    trainer = pl.Trainer(
        callbacks=[scores],
        accelerator=cfg.accelerator,
        devices=1,
        logger=False,
        use_distributed_sampler=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    if cfg.split not in ("val", "test"):
        raise ConfigError(f"split={cfg.split} is not supported; use split=test or split=val.")
    observe_comparison_latents(scores, model, datamodule, cfg.split)
    run = trainer.validate if cfg.split == "val" else trainer.test
    (logged,) = run(model, datamodule=datamodule, verbose=False)
    metrics = split_metrics({k: float(v) for k, v in logged.items()}, cfg.split)
    figures = (
        make_figures(model, datamodule, run_config, output_dir / "figures", cfg.split)
        if cfg.figures
        else []
    )
    write_json(output_dir / "metrics.json", metrics, str(cfg.ckpt_path), run_config)
    write_markdown(output_dir / "report.md", metrics, str(cfg.ckpt_path), cfg.split, figures)
    log.info("Wrote %s and %s", output_dir / "metrics.json", output_dir / "report.md")
    return metrics


def make_figures(
    model: DCIGN, datamodule: Any, run_config: dict[str, Any], directory: Path, split: str
) -> list[Path]:
    """The run's dashboard pictures, drawn once on the scored split for the report."""
    with torch.no_grad():
        callbacks = run_config.get("callbacks")
        return report_figures(model.eval(), datamodule, callbacks, directory, split)


@hydra.main(version_base="1.3", config_path=CONF, config_name="eval")
def main(cfg: DictConfig) -> None:
    output_dir = Path(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)
    run_or_explain(evaluate, cfg, output_dir)


if __name__ == "__main__":
    main()
