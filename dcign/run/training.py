"""Build everything a training run needs from a composed Hydra config, then fit and test.

``train.py`` is a thin ``@hydra.main`` around :func:`train`; tests call :func:`train` on configs
composed with ``hydra.compose``, so what they exercise is what users run.
"""

from __future__ import annotations

import logging
import signal
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import pytorch_lightning as pl
from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities.exceptions import SIGTERMException

from dcign.errors import ConfigError, ExplainedError, RunStoppedError
from dcign.run.allocator import retain_freed_memory
from dcign.run.checkpoints import last_checkpoint, resume_checkpoint
from dcign.run.config_check import check_sections, check_target, parameters
from dcign.run.loggers import build_loggers
from dcign.run.multirun import ddp_ready_job
from dcign.run.precision import register_resolver
from dcign.run.runtime import Runtime
from dcign.scoring.network_scores import scoring_callbacks

log = logging.getLogger(__name__)

# Step checkpoints hold the weights after the step they are named for, and the loop state
# counts that step as done, which is what an exact resume needs; Lightning warns about the
# post-step state in every manual-optimization run.
warnings.filterwarnings(
    "ignore", message="Using ModelCheckpoint with manual optimization and every_n_train_steps"
)

# `${best_precision:...}` in the trainer configs (train.py imports this module before Hydra
# composes anything).
register_resolver()


@runtime_checkable
class StopByPreemption(Protocol):
    """A callback that saves a checkpoint when a signal stops the run (e.g.
    ``callbacks.preemption.PreemptionCheckpoint``): which signal, and what it saved."""

    signal_number: int
    saved_path: Path | None


# Config sections whose targets are checked against their signatures before a run starts.
CHECKED_SECTIONS = ("dataset", "model", "runtime", "trainer", "callbacks", "logger")


def user_error(error: BaseException | None) -> ExplainedError | None:
    """The explained error behind an exception (also when a library wrapped it), else None."""
    while error is not None:
        if isinstance(error, ExplainedError):
            return error
        error = error.__cause__ or error.__context__
    return None


def run_or_explain(function: Callable[..., Any], *args: Any) -> Any:
    """Run an entry point; an explained error ends the program with its message and exit code.

    The message is all the user needs, so no traceback is printed for it (exit code 2 for a
    user error, 1 for a stopped run, 128 + signal number for a preempted one); anything else
    is a bug and keeps its traceback.
    """
    try:
        return function(*args)
    except Exception as error:
        problem = user_error(error)
        if problem is None:
            raise
        log.error("%s", problem)
        sys.exit(problem.exit_code)


def build(config: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` after checking keys and types against the target's signature.

    The check (:mod:`dcign.run.config_check`) names a mistyped key or a wrongly typed value before
    anything is built. Hydra wraps every constructor exception in ``InstantiationException``;
    a ``ConfigError`` raised by one of ours is the message the user needs, so it is re-raised
    unwrapped.
    """
    if isinstance(config, DictConfig):
        where = config._get_full_key(None) or "config"
        check_target(OmegaConf.to_container(config, resolve=True), where)
    try:
        return instantiate(config, _convert_="all", **kwargs)
    except InstantiationException as error:
        if isinstance(error.__cause__, ConfigError):
            raise error.__cause__ from None
        raise


def build_data(cfg: DictConfig) -> Any:
    """The data module; ``model.layout``, when set, replaces the data set's own layout."""
    layout = cfg.model.get("layout")
    return build(cfg.dataset, **({} if layout is None else {"layout": layout}))


def build_model(cfg: DictConfig, datamodule: Any, **overrides: Any) -> Any:
    """The model for ``datamodule``, told the data's latent layout (which the batches' group
    types index) and, when it takes them (a GQN's viewpoints, a volume decoder's angles), its
    factors as training sees them, and set up to run as ``cfg.runtime`` says (the defaults of
    :class:`~dcign.run.runtime.Runtime` without one)."""
    data = {"layout": datamodule.layout}
    if "factors" in parameters(get_object(cfg.model._target_))[0]:
        data["factors"] = datamodule.training_factor_dicts
    model = build(cfg.model, **data, **overrides)
    runtime = build(cfg.runtime) if cfg.get("runtime") is not None else Runtime()
    runtime.apply(model)
    return model


def build_callbacks(config: DictConfig | None) -> list[pl.Callback]:
    """Every callback under ``callbacks:`` that has a ``_target_`` (null entries switch off)."""
    callbacks = []
    for options in (config or {}).values():
        if options is not None and "_target_" in options:
            callbacks.append(build(options))
    return callbacks


# Trainer arguments that drive automatic optimization, which DC-IGN's step (manual optimization
# of two networks) does not use, with what does the same job here.
AUTOMATIC_ONLY = {
    "gradient_clip_val": (
        None,
        "clip with runtime.gradient_clip_val=<max norm> (per network, inside the step)",
    ),
    "accumulate_grad_batches": (
        1,
        "accumulate by training on more groups per step: dataset.groups_per_batch=<G>",
    ),
}


def check_manual_optimization(trainer: DictConfig, model: pl.LightningModule) -> None:
    """Refuse Trainer options that only automatic optimization honours when ``model`` steps
    itself (DC-IGN), naming the way here; a model Lightning steps (the GQN) takes them."""
    if model.automatic_optimization:
        return
    for key, (default, instead) in AUTOMATIC_ONLY.items():
        value = trainer.get(key, default)
        if value != default:
            raise ConfigError(
                f"trainer.{key}={value} works only with Lightning's automatic optimization, "
                f"and DC-IGN steps its networks itself (manual optimization, paper 3.1): "
                f"{instead}, and leave trainer.{key} at {default}."
            )


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit DC-IGN (and its baseline) as configured; returns the final logged metrics."""
    check_sections(OmegaConf.to_container(cfg, resolve=True), CHECKED_SECTIONS)
    resume_checkpoint(cfg.get("ckpt_path"), Path(cfg.paths.output_dir) / "checkpoints")
    if cfg.get("retain_cpu_memory", True):
        retain_freed_memory()
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = build_data(cfg)
    model = build_model(cfg, datamodule)
    check_manual_optimization(cfg.trainer, model)
    loggers = build_loggers(cfg.get("logger"))
    callbacks = [
        *scoring_callbacks(
            model, datamodule.factor_dicts, cfg.scores_preset, cfg.scores_every_n_epochs
        ),
        *build_callbacks(cfg.get("callbacks")),
    ]
    trainer: pl.Trainer = build(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    hyperparameters = OmegaConf.to_container(cfg, resolve=True)
    model.run_config = hyperparameters
    for logger in trainer.loggers:
        logger.log_hyperparams(hyperparameters)  # type: ignore[arg-type]
    with ddp_ready_job():
        try:
            fit(trainer, model, datamodule, cfg.get("ckpt_path"))
            metrics = _floats(trainer.callback_metrics)
            if cfg.get("test") and not trainer.fast_dev_run:
                metrics.update(score_final_weights(trainer, model, datamodule))
        finally:
            finish_loggers(trainer.loggers)
    return metrics


def score_final_weights(
    trainer: pl.Trainer, model: pl.LightningModule, datamodule: Any
) -> dict[str, float]:
    """Test the final weights - what ``last.ckpt`` holds and a user looks at - on the test
    identities.

    The checkpoint with the best ``val/loss`` is not what the run's pictures show, and the
    validation loss does not rank disentanglement: on a small data set it picked an early
    epoch whose test numbers described a model nobody used.
    """
    trainer.test(model, datamodule=datamodule, ckpt_path=None)
    return _floats(trainer.callback_metrics)


def fit(
    trainer: pl.Trainer, model: pl.LightningModule, datamodule: Any, ckpt_path: str | None
) -> None:
    """``trainer.fit`` that loads checkpoints as weights only and explains a signal stop.

    ``weights_only`` loading never runs code from a checkpoint file, so a checkpoint from
    elsewhere cannot execute anything. A stop by SIGTERM/SIGUSR1 becomes a :class:`RunStoppedError`
    that names the checkpoint to resume from and exits with ``128 + signal``; a model that stops
    the run (non-finite gradients) gets the newest checkpoint added to its message.
    """
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except RunStoppedError as stop:  # a model stopped the run: say where to resume from
        saved = last_checkpoint(trainer) or "none saved yet"
        raise RunStoppedError(
            f"{stop} Last good checkpoint: {saved}.", exit_code=stop.exit_code
        ) from stop
    except SIGTERMException as stop:
        saver = next((c for c in trainer.callbacks if isinstance(c, StopByPreemption)), None)
        signum = saver.signal_number if saver else signal.SIGTERM
        saved = saver.saved_path if saver else last_checkpoint(trainer)
        raise RunStoppedError(
            f"Stopped by {signal.Signals(signum).name} at step {trainer.global_step}. "
            + (
                f"Saved {saved}; continue with the same command plus "
                f"hydra.run.dir={Path(trainer.default_root_dir)} ckpt_path=last."
                if saved
                else "No checkpoint had been written yet."
            ),
            exit_code=128 + int(signum),
        ) from stop


def finish_loggers(loggers: list) -> None:
    """Close W&B runs (Lightning leaves them open) so offline runs are complete for syncing."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            try:
                logger.experiment.finish()
            except Exception as error:  # noqa: BLE001 - the run itself has already succeeded
                log.warning("Could not finish the W&B run: %s", error)


def optimized_value(metrics: dict[str, float], name: str, required: bool) -> float | None:
    """The value of ``optimized_metric`` a sweeper compares runs by.

    In a sweep (``required``) a missing metric is a clear error, since the sweeper cannot
    rank the run; a single run just returns None.
    """
    if name not in metrics and required:
        raise ConfigError(
            f"optimized_metric={name!r} was not logged by this run. Logged metrics: "
            f"{', '.join(sorted(metrics))}."
        )
    return metrics.get(name)


def _floats(metrics: dict[str, Any]) -> dict[str, float]:
    return {key: float(value) for key, value in metrics.items()}
