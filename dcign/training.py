"""Build everything a training run needs from a composed Hydra config, then fit and test.

``train.py`` is a thin ``@hydra.main`` around :func:`train`; tests call :func:`train` on configs
composed with ``hydra.compose``, so what they exercise is what users run.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import WandbLogger

from dcign.errors import ConfigError
from dcign.loggers import build_loggers

log = logging.getLogger(__name__)


def user_error(error: BaseException | None) -> ConfigError | None:
    """The ConfigError behind an exception (also when a library wrapped it), else None."""
    while error is not None:
        if isinstance(error, ConfigError):
            return error
        error = error.__cause__ or error.__context__
    return None


def run_or_explain(function: Callable[..., Any], *args: Any) -> Any:
    """Run an entry point; a user error ends the program with its message and exit code 2.

    The message is all the user needs, so no traceback is printed for it; anything else is a
    bug and keeps its traceback.
    """
    try:
        return function(*args)
    except Exception as error:
        problem = user_error(error)
        if problem is None:
            raise
        log.error("%s", problem)
        sys.exit(2)


def build(config: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` that lets a user error surface as itself.

    Hydra wraps every constructor exception in ``InstantiationException``; a ``ConfigError``
    raised by one of ours is the message the user needs, so it is re-raised unwrapped.
    """
    try:
        return instantiate(config, _convert_="all", **kwargs)
    except InstantiationException as error:
        if isinstance(error.__cause__, ConfigError):
            raise error.__cause__ from None
        raise


def build_callbacks(config: DictConfig | None) -> list[pl.Callback]:
    """Every callback under ``callbacks:`` that has a ``_target_`` (null entries switch off)."""
    callbacks = []
    for options in (config or {}).values():
        if options is not None and "_target_" in options:
            callbacks.append(build(options))
    return callbacks


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit DC-IGN (and its baseline) as configured; returns the final logged metrics."""
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = build(cfg.dataset)
    model = build(cfg.model)
    loggers = build_loggers(cfg.get("logger"))
    trainer: pl.Trainer = build(
        cfg.trainer, callbacks=build_callbacks(cfg.get("callbacks")), logger=loggers or False
    )
    hyperparameters = OmegaConf.to_container(cfg, resolve=True)
    model.run_config = hyperparameters
    for logger in trainer.loggers:
        logger.log_hyperparams(hyperparameters)  # type: ignore[arg-type]
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = _floats(trainer.callback_metrics)
    if cfg.get("test") and not trainer.fast_dev_run:
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        trainer.test(model, datamodule=datamodule, ckpt_path=best or None, weights_only=False)
        metrics.update(_floats(trainer.callback_metrics))
    finish_loggers(trainer.loggers)
    return metrics


def finish_loggers(loggers: list) -> None:
    """Close W&B runs (Lightning leaves them open) so offline runs are complete for syncing."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            try:
                logger.experiment.finish()
            except Exception as error:  # noqa: BLE001 - the run itself has already succeeded
                log.warning("Could not finish the W&B run: %s", error)


def _floats(metrics: dict[str, Any]) -> dict[str, float]:
    return {key: float(value) for key, value in metrics.items()}
