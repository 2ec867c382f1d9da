"""A trained run brought back: its model from a checkpoint file, its data set's config.

Evaluation, the explorer, the benchmarks and the callbacks that draw a second model all start
from a checkpoint; they share these so that each refuses the same bad files with the same
words.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from dcign.errors import ConfigError
from dcign.model.module import DCIGN, RUN_CONFIG_KEY
from dcign.run.checkpoints import check_checkpoint_file
from dcign.run.runtime import apply_memory_layout, stored_runtime

DCIGN_TARGET = f"{DCIGN.__module__}.{DCIGN.__qualname__}"


def load_checkpoint(path: str) -> tuple[DCIGN, dict[str, Any]]:
    """The module, in the memory layout its run used, and its stored run config; loads tensors
    only (``weights_only``)."""
    check_checkpoint_file(Path(path), path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        check_is_dcign(checkpoint, path)
        model = DCIGN.from_checkpoint(checkpoint)
    except (RuntimeError, KeyError, TypeError, EOFError, OSError, pickle.UnpicklingError) as error:
        raise ConfigError(
            f"Could not read {path} as a dcign checkpoint ({error}). Is it a complete file "
            "written by train.py?"
        ) from error
    if model.run_config is None:
        raise ConfigError(
            f"{path} has no stored run config ({RUN_CONFIG_KEY}); choose the data set "
            "explicitly, e.g. dataset=faces."
        )
    apply_memory_layout(model, stored_runtime(model.run_config).channels_last)
    return model, model.run_config


def check_is_dcign(checkpoint: dict[str, Any], path: str) -> None:
    """Refuse another model's checkpoint (a GQN) with what scores it instead."""
    target = (checkpoint.get(RUN_CONFIG_KEY) or {}).get("model", {}).get("_target_")
    if target is not None and target != DCIGN_TARGET:
        raise ConfigError(
            f"{path} holds a {target.rsplit('.', 1)[-1]}, not a DC-IGN: this evaluation scores "
            "DC-IGN's code and its baseline. Novel views of a GQN are scored by "
            "`python benchmarks/novel_view.py` beside DC-IGN's."
        )


def data_config(cfg: DictConfig, run_config: dict[str, Any]) -> DictConfig:
    """The run's dataset config, or the one chosen now resolved against the run's layout.

    A whole data set chosen now (``dataset=chairs``, which names its ``_target_``) replaces the
    run's; single keys (``+dataset.eval_group_size=20``) change the run's own, e.g. to score
    a run on other evaluation groups.
    A checkpoint shipped to other machines stores no cache directory (``python -m dcign.ship``):
    it then uses this machine's (``paths.cache_dir``).
    """
    merged = OmegaConf.create(run_config)
    chosen = cfg.get("dataset")
    if chosen is not None and "_target_" in chosen:
        merged.dataset = chosen
        merged.paths.cache_dir = cfg.paths.cache_dir
    elif chosen is not None:
        merged.dataset = OmegaConf.merge(merged.dataset, chosen)
    dataset = OmegaConf.create(OmegaConf.to_container(merged, resolve=True)["dataset"])
    if dataset.get("cache_dir") is None and cfg.get("paths") is not None:
        dataset.cache_dir = cfg.paths.cache_dir
    return dataset
