"""How the co-trained entangled baseline is trained: its KL weight, learning rate and schedule.

A comparison gives each network its own best setting, chosen on validation identities. The
two networks share one optimizer (a parameter group each, ``DCIGN.configure_optimizers``), so
the baseline's rate is its group's, and a group left out of the schedule keeps that rate
while the run's schedule moves DC-IGN's: DC-IGN keeps the face more often with a cosine decay
from 0.002, while plain SGVB re-renders more of each change with a constant 0.001
(docs/results.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch

from dcign.errors import ConfigError


@dataclass(frozen=True)
class BaselineOptions:
    """``beta``: the baseline's KL weight (plain SGVB: 1); ``lr``: its learning rate (None:
    ``model.optimizer.lr``, DC-IGN's); ``scheduled``: whether ``model.scheduler`` moves it
    (False: it stays at ``lr`` for the whole run); ``detail_weight``: its own weight of the
    detail term (DC-IGN's ``model.objective.detail_weight`` is chosen for DC-IGN)."""

    beta: float = 1.0
    lr: float | None = None
    scheduled: bool = True
    detail_weight: float = 0.0

    def __post_init__(self) -> None:
        for name in ("beta", "detail_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise ConfigError(f"model.baseline.{name} must be a number >= 0, got {value!r}.")
        lr = self.lr
        if lr is not None and (isinstance(lr, bool) or not isinstance(lr, int | float) or lr <= 0):
            raise ConfigError(
                f"model.baseline.lr must be a positive number, or null for model.optimizer.lr, "
                f"got {lr!r}."
            )
        if not isinstance(self.scheduled, bool):
            raise ConfigError(
                f"model.baseline.scheduled must be true or false, got {self.scheduled!r}."
            )

    @classmethod
    def from_node(cls, node: Mapping[str, Any]) -> BaselineOptions:
        """The options of a ``model.baseline`` node; a key it does not know is a user error
        (a typo would otherwise train the baseline with a setting nobody asked for)."""
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(node) - known)
        if unknown:
            raise ConfigError(
                f"model.baseline has no option(s) {unknown}; it takes {sorted(known)}."
            )
        return cls(**node)

    def param_group(self, params: list[torch.nn.Parameter]) -> dict[str, Any]:
        """The baseline's parameter group: its own rate if it has one, and whether the
        schedule moves it (read by :func:`hold_unscheduled`)."""
        group: dict[str, Any] = {"params": params, "scheduled": self.scheduled}
        if self.lr is not None:
            group["lr"] = float(self.lr)
        return group


def hold_unscheduled(optimizer: torch.optim.Optimizer) -> None:
    """Put every group marked ``scheduled: False`` back at its starting rate.

    Called after each step of the schedule: torch's schedulers move every group of their
    optimizer, and resetting the held ones afterwards works for any of them.
    """
    for group in optimizer.param_groups:
        if group.get("scheduled", True) is False:
            group["lr"] = group.get("initial_lr", group["lr"])
