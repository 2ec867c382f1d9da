"""How a manual training step treats its gradients: clipping and the non-finite policy.

These say how a run is executed, not what the model is, so they are not hyper-parameters of
the module and not stored with its weights: the run builder sets them from the config's
``runtime`` node (:mod:`dcign.run.runtime`), and a checkpoint trained with one setting resumes
or evaluates under another.
"""

from __future__ import annotations

from dataclasses import dataclass

from dcign.errors import ConfigError

NONFINITE_ACTIONS = ("stop", "skip")


@dataclass(frozen=True)
class StepOptions:
    """``gradient_clip_val``: each network's gradient norm is clipped to it on its own (None:
    no clipping); ``nonfinite``: what a step with non-finite gradients does, ``stop`` (end the
    run, naming the last good checkpoint) or ``skip`` (drop that update and go on)."""

    gradient_clip_val: float | None = None
    nonfinite: str = "stop"

    def __post_init__(self) -> None:
        if self.nonfinite not in NONFINITE_ACTIONS:
            raise ConfigError(
                f"runtime.nonfinite must be one of {list(NONFINITE_ACTIONS)}, got "
                f"{self.nonfinite!r}: 'stop' ends the run at the first non-finite gradient, "
                "'skip' drops that step."
            )
        clip = self.gradient_clip_val
        if clip is not None and (isinstance(clip, bool) or not clip > 0):
            raise ConfigError(
                f"runtime.gradient_clip_val must be a positive number or null (no clipping), "
                f"got {clip!r}."
            )
