"""Ship the default run's weights with the package: ``python -m dcign.ship``.

Trains the default configuration (every ``train.py`` override applies; seed 0 unless given) and
writes what evaluation and the explorer need - the weights, the hyper-parameters and the run
config, without optimizer states or loop counters - to ``dcign/weights/faces.ckpt``, a file of
about two megabytes that loads with ``weights_only=True``. ``from_checkpoint=<path>`` exports an
existing checkpoint instead of training.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig

from dcign.model.module import RUN_CONFIG_KEY
from dcign.run.checkpoints import AtomicCheckpointIO, check_checkpoint_file
from dcign.run.training import run_or_explain, train

log = logging.getLogger(__name__)
CONF = str(Path(__file__).resolve().parents[1] / "conf")
SHIPPED = Path(__file__).resolve().parent / "weights" / "faces.ckpt"
# What of a Lightning checkpoint ``DCIGN.load_from_checkpoint`` reads.
KEPT = ("state_dict", "hyper_parameters", "pytorch-lightning_version", RUN_CONFIG_KEY)


def weights_only(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The parts of ``checkpoint`` that evaluation needs, with a portable run config.

    The data cache directory of the machine that trained is dropped, so a user's
    ``$DCIGN_CACHE`` (or ``~/.cache/dcign``) is used instead.
    """
    kept = {key: checkpoint[key] for key in KEPT if key in checkpoint}
    run_config = kept.get(RUN_CONFIG_KEY)
    if run_config is not None:
        run_config = {**run_config, "dataset": {**run_config["dataset"], "cache_dir": None}}
        kept[RUN_CONFIG_KEY] = {
            **run_config,
            "paths": {**run_config.get("paths", {}), "cache_dir": None},
        }
    return kept


def export(source: Path, target: Path) -> Path:
    """Write the weights-only form of checkpoint ``source`` to ``target`` (atomically)."""
    check_checkpoint_file(source, str(source))
    checkpoint = torch.load(source, map_location="cpu", weights_only=True)
    AtomicCheckpointIO().save_checkpoint(weights_only(checkpoint), target)
    log.info("Wrote %s (%.1f MB) from %s", target, target.stat().st_size / 1e6, source)
    return target


def ship(cfg: DictConfig) -> Path:
    source = cfg.from_checkpoint
    if source is None:
        train(cfg)
        source = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    return export(Path(source), Path(cfg.out) if cfg.out else SHIPPED)


@hydra.main(version_base="1.3", config_path=CONF, config_name="ship")
def main(cfg: DictConfig) -> None:
    run_or_explain(ship, cfg)


if __name__ == "__main__":
    main()
