"""Optimizers and learning-rate schedules from config.

The paper reports "rmsprop, meta learning rate 0.0005, momentum decay 0.1, weight decay 0.01".
In the authors' Torch7 code (``rmsprop.lua``) those words name Adam's constants:
``momentumDecay = 0.1`` is ``beta1 = 1 - 0.1 = 0.9`` and ``updateDecay = 0.01`` is
``beta2 = 0.99``, with bias correction and no weight decay. The default is therefore Adam(lr=5e-4,
betas=(0.9, 0.99)), what actually trained the published networks; ``name: rmsprop`` gives the
literal reading of the text (``conf/model/optimizer/rmsprop_literal.yaml``).

``fused: true`` (Adam, AdamW, SGD) updates all parameters in one kernel instead of a dozen small
ops per tensor: on CPU the small preset's Adam step drops from ~0.9 ms to ~0.25 ms per network,
a few percent of its training step (``benchmarks/step_overhead.py``); on GPUs it is the
recommended implementation. RMSprop has no fused kernel in PyTorch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from dcign.errors import ConfigError

OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")
SCHEDULERS = ("none", "cosine", "step")


def build_optimizer(
    params: Iterable[torch.nn.Parameter], config: Mapping[str, Any]
) -> torch.optim.Optimizer:
    """``config``: ``name``, ``lr``, and the chosen optimizer's own arguments."""
    options = dict(config)
    name = str(options.pop("name", "adam")).lower()
    lr = float(options.pop("lr", 5e-4))
    if lr <= 0:
        raise ConfigError(f"model.optimizer.lr must be > 0, got {lr}.")
    if name in ("adam", "adamw"):
        cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        betas = tuple(float(b) for b in options.pop("betas", (0.9, 0.99)))
        return cls(params, lr=lr, betas=betas, **_arguments(options, name))
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, **_arguments(options, name))
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, **_arguments(options, name))
    raise ConfigError(
        f"model.optimizer.name={name!r} is not supported; choose one of {OPTIMIZERS}."
    )


def _arguments(options: dict[str, Any], name: str) -> dict[str, Any]:
    """The optimizer's keyword arguments: numbers as floats, ``fused`` as a flag (only passed
    when set, so PyTorch keeps choosing its implementation otherwise)."""
    allowed = {
        "adam": {"eps", "weight_decay", "fused"},
        "adamw": {"eps", "weight_decay", "fused"},
        "rmsprop": {"alpha", "eps", "weight_decay", "momentum", "fused"},
        "sgd": {"momentum", "weight_decay", "fused"},
    }[name]
    unknown = set(options) - allowed
    if unknown:
        raise ConfigError(
            f"model.optimizer has options {sorted(unknown)} that {name} does not take; "
            f"valid ones: {sorted(allowed | {'name', 'lr'})}."
        )
    fused = options.pop("fused", False)
    if not isinstance(fused, bool):
        raise ConfigError(f"model.optimizer.fused must be true or false, got {fused!r}.")
    if fused and name == "rmsprop":
        raise ConfigError(
            "model.optimizer.fused=true: PyTorch has no fused RMSprop; set it to false."
        )
    arguments: dict[str, Any] = {key: float(value) for key, value in options.items()}
    if fused:
        arguments["fused"] = True
    return arguments


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: Mapping[str, Any] | None, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """Per-step schedule: ``none``, ``cosine`` (to ``min_lr`` over the run) or ``step``."""
    options = dict(config or {})
    name = str(options.get("name", "none")).lower()
    if name == "none":
        return None
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=max(1, total_steps), eta_min=float(options.get("min_lr", 0.0))
        )
    if name == "step":
        return torch.optim.lr_scheduler.StepLR(
            optimizer,
            step_size=int(options.get("step_size", 1000)),
            gamma=float(options.get("gamma", 0.5)),
        )
    raise ConfigError(
        f"model.scheduler.name={name!r} is not supported; choose one of {SCHEDULERS}."
    )
