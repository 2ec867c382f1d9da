"""Evaluate a checkpoint: ``python -m dcign.evaluate ckpt_path=.../last.ckpt [dataset=...]``.

Rebuilds the data set from the run config stored in the checkpoint (or the one chosen on the
command line), runs DC-IGN and its baseline over the test identities with the metrics of
docs/evaluation.md, and writes ``metrics.json`` and ``report.md`` (with figures) into the
Hydra output directory.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from dcign.errors import ConfigError
from dcign.eval.figures import report_figures
from dcign.eval.report import split_metrics, write_json, write_markdown
from dcign.model.module import DCIGN, RUN_CONFIG_KEY
from dcign.run.checkpoints import check_checkpoint_file
from dcign.run.training import build, run_or_explain
from dcign.ship import SHIPPED

log = logging.getLogger(__name__)
CONF = str(Path(__file__).resolve().parents[1] / "conf")


def load_checkpoint(path: str) -> tuple[DCIGN, dict[str, Any]]:
    """The module and its stored run config; loads tensors only (``weights_only``)."""
    check_checkpoint_file(Path(path), path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        check_is_dcign(checkpoint, path)
        model = DCIGN.from_checkpoint(checkpoint)
    except (RuntimeError, KeyError, EOFError, OSError, pickle.UnpicklingError) as error:
        raise ConfigError(
            f"Could not read {path} as a dcign checkpoint ({error}). Is it a complete file "
            "written by train.py?"
        ) from error
    if model.run_config is None:
        raise ConfigError(
            f"{path} has no stored run config ({RUN_CONFIG_KEY}); choose the data set "
            "explicitly, e.g. dataset=faces."
        )
    return model, model.run_config


# The module's class path now, and before dcign/ was split by concern (older checkpoints).
DCIGN_TARGETS = ("dcign.model.module.DCIGN", "dcign.module.DCIGN")


def check_is_dcign(checkpoint: dict[str, Any], path: str) -> None:
    """Refuse another model's checkpoint (a GQN) with what scores it instead."""
    target = (checkpoint.get(RUN_CONFIG_KEY) or {}).get("model", {}).get("_target_")
    if target is not None and target not in DCIGN_TARGETS:
        raise ConfigError(
            f"{path} holds a {target.rsplit('.', 1)[-1]}, not a DC-IGN: this evaluation scores "
            "DC-IGN's code and its baseline. Novel views of a GQN are scored by "
            "`python benchmarks/novel_view.py` beside DC-IGN's."
        )


def data_config(cfg: DictConfig, run_config: dict[str, Any]) -> DictConfig:
    """The run's dataset config, or the one chosen now resolved against the run's layout.

    A checkpoint shipped to other machines stores no cache directory (``python -m dcign.ship``):
    it then uses this machine's (``paths.cache_dir``).
    """
    merged = OmegaConf.create(run_config)
    if cfg.get("dataset") is not None:
        merged.dataset = cfg.dataset
        merged.paths.cache_dir = cfg.paths.cache_dir
    dataset = OmegaConf.create(OmegaConf.to_container(merged, resolve=True)["dataset"])
    if dataset.get("cache_dir") is None and cfg.get("paths") is not None:
        dataset.cache_dir = cfg.paths.cache_dir
    return dataset


def evaluate(cfg: DictConfig, output_dir: Path) -> dict[str, dict[str, float]]:
    model, run_config = load_checkpoint(str(cfg.ckpt_path or SHIPPED))
    datamodule = build(data_config(cfg, run_config), layout=model.hparams.layout)
    # Evaluation sequences give every trained group type equal turns (GroupedBatchSampler), so
    # this many batches hold at least `pairs` pairs of each factor on each split.
    datamodule.val_batches = datamodule.batches_for_pairs(cfg.pairs)
    datamodule.val_fidelity = True  # SSIM and identity kept on either split
    model.hparams.scores_preset = cfg.scores_preset
    trainer = pl.Trainer(
        accelerator=cfg.accelerator,
        devices=1,
        logger=False,
        use_distributed_sampler=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    if cfg.split not in ("val", "test"):
        raise ConfigError(f"split={cfg.split} is not supported; use split=test or split=val.")
    choose_comparison_latents(model, datamodule, cfg.split)
    run = trainer.validate if cfg.split == "val" else trainer.test
    (logged,) = run(model, datamodule=datamodule, verbose=False)
    metrics = split_metrics({k: float(v) for k, v in logged.items()}, cfg.split)
    figures = (
        make_figures(model, datamodule, run_config, output_dir / "figures") if cfg.figures else []
    )
    write_json(output_dir / "metrics.json", metrics, str(cfg.ckpt_path), run_config)
    write_markdown(output_dir / "report.md", metrics, str(cfg.ckpt_path), cfg.split, figures)
    log.info("Wrote %s and %s", output_dir / "metrics.json", output_dir / "report.md")
    return metrics


def choose_comparison_latents(model: DCIGN, datamodule: Any, split: str) -> None:
    """Each comparison network's latent(s) per factor (the baseline's: paper 4.1.1), chosen on
    groups of another split.

    Test scores use latents chosen on the val split, val scores latents chosen on the train
    split: never on the groups being scored.
    """
    model.build_metrics(datamodule.factor_dicts)
    datamodule.setup("test")
    source = "val" if split == "test" else "train"
    loader = datamodule.evaluation_loader(source)
    with torch.no_grad():
        for batch in loader:
            model.observe_for_selection(batch)


def make_figures(
    model: DCIGN, datamodule: Any, run_config: dict[str, Any], directory: Path
) -> list[Path]:
    """The run's dashboard pictures, drawn once on the test split for the report."""
    with torch.no_grad():
        return report_figures(model.eval(), datamodule, run_config.get("callbacks"), directory)


@hydra.main(version_base="1.3", config_path=CONF, config_name="eval")
def main(cfg: DictConfig) -> None:
    output_dir = Path(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)
    run_or_explain(evaluate, cfg, output_dir)


if __name__ == "__main__":
    main()
