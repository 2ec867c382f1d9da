"""Building a model's parts from config nodes, and its optimizer and schedule for a run.

Every model here keeps its config as plain settings (checkpoints load with ``weights_only``)
and builds its parts itself with Hydra; the optimizer (``model.optimizer``, a ``torch.optim``
class with ``_partial_``) gets the parameter groups when the run starts, and a schedule whose
length argument is left null spans the run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate

from dcign.errors import ConfigError

# Scheduler arguments that mean "the length of the run"; null in the config = filled in here.
RUN_LENGTH_ARGUMENTS = ("T_max", "total_steps", "total_iters")

# The default schedule (conf/model/scheduler/cosine.yaml, selected by conf/train.yaml): the rate
# decays to 0 along a cosine over the run, so a model built in Python trains as `python
# train.py` does. Read-only here; the modules store a plain copy (hyper-parameters are pickled).
COSINE_TO_ZERO: Mapping[str, Any] = MappingProxyType(
    {
        "_target_": "torch.optim.lr_scheduler.CosineAnnealingLR",
        "_partial_": True,
        "T_max": None,
        "eta_min": 0.0,
    }
)


def linear_decay(
    optimizer: torch.optim.Optimizer,
    total_iters: int,
    end_factor: float = 0.1,
    span: float = 1.0,
) -> torch.optim.lr_scheduler.LinearLR:
    """The learning rate falls linearly to ``end_factor`` times its start over the first
    ``span`` of the run's ``total_iters`` batches, then holds there.

    The GQN paper anneals 5e-4 -> 5e-5 over 1.6 M of its 2 M steps (``span`` 0.8); a run of
    any length keeps that shape because the span is a fraction, not a step count.
    """
    if not 0.0 < span <= 1.0:
        raise ConfigError(f"model.scheduler.span must be in (0, 1], got {span!r}.")
    steps = max(1, round(span * total_iters))
    return torch.optim.lr_scheduler.LinearLR(
        optimizer, start_factor=1.0, end_factor=end_factor, total_iters=steps
    )


def build_node(config: Mapping[str, Any], where: str) -> Any:
    """Instantiate a nested config node; a wrong argument names the node it belongs to."""
    try:
        return instantiate(config, _convert_="all")
    except Exception as error:
        cause = error.__cause__ if isinstance(error.__cause__, ConfigError) else None
        if cause is not None:
            raise cause from None
        raise ConfigError(f"{where} could not be built: {error}") from error


def call_factory(factory: Callable[..., Any], where: str, *args: Any, **kwargs: Any) -> Any:
    """Build the optimizer or scheduler; torch's argument checks become a user error."""
    try:
        return factory(*args, **kwargs)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}: {error}") from error


def run_steps(module: pl.LightningModule) -> int:
    """Batches the whole run trains, for a schedule that spans the run.

    Asked only when such a schedule is configured: Lightning answers it by building the
    training loader early, and an unbounded run (``max_epochs=-1``) has no answer.
    """
    if not module._trainer:
        return 1
    total = module.trainer.estimated_stepping_batches
    if not math.isfinite(total):
        raise ConfigError(
            "A schedule spans the whole run (an argument left null), but the run has no end; "
            "set trainer.max_epochs or trainer.max_steps, or give the schedule its length, "
            "e.g. model.scheduler.T_max=10000."
        )
    return max(1, int(total))


def optimizers_for(
    module: pl.LightningModule,
    optimizer: Callable[..., torch.optim.Optimizer],
    scheduler: Callable[..., Any] | None,
    groups: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """Lightning's ``configure_optimizers`` answer: one optimizer over ``groups``, and the
    schedule stepped every batch."""
    opt = call_factory(optimizer, "model.optimizer", params=list(groups))
    config: dict[str, Any] = {"optimizer": opt}
    if scheduler is not None:
        keywords = getattr(scheduler, "keywords", {})
        length = {
            key: run_steps(module)
            for key in RUN_LENGTH_ARGUMENTS
            if key in keywords and keywords[key] is None
        }
        sched = call_factory(scheduler, "model.scheduler", opt, **length)
        config["lr_scheduler"] = {"scheduler": sched, "interval": "step"}
    return config
