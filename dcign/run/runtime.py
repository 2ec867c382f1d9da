"""How a run executes its model: memory layout, compilation, clipping, the non-finite policy.

None of these is part of the network a checkpoint holds - layout and compilation change the
speed, clipping and the non-finite policy how steps are taken, as Lightning's Trainer options
do - so none is a hyper-parameter of a module or stored with its weights: the run builder
applies the config's ``runtime`` node to the model it built, and
:func:`dcign.run.restore.load_checkpoint` re-applies the stored run's memory layout. A
checkpoint written with one setting resumes under another.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from dcign.errors import ConfigError
from dcign.model.step_options import StepOptions


@runtime_checkable
class SteppedModel(Protocol):
    """A model that steps its own optimizer (manual optimization) and so reads the options of
    its step, as DC-IGN's clamped step does."""

    step_options: StepOptions


@runtime_checkable
class CompilableModel(Protocol):
    """A model that names the submodules whose forward passes ``torch.compile`` should take."""

    def compiled_parts(self) -> Sequence[nn.Module]: ...


@dataclass(frozen=True)
class Runtime:
    """The config's ``runtime`` node (conf/train.yaml).

    ``channels_last``: NHWC convolution weights, so every convolution runs (and returns)
    channels-last whatever its input's layout: the faster layout for oneDNN on CPUs and for
    tensor cores. ``compile``: ``torch.compile`` the forward passes the model names (compiled
    lazily, at the first step). ``gradient_clip_val`` and ``nonfinite``: the
    :class:`~dcign.model.step_options.StepOptions` of a model that steps itself.
    """

    gradient_clip_val: float | None = None
    nonfinite: str = "stop"
    compile: bool = False
    channels_last: bool = True

    @property
    def step_options(self) -> StepOptions:
        return StepOptions(self.gradient_clip_val, self.nonfinite)

    def apply(self, model: nn.Module) -> None:
        """Set ``model`` up to run as configured; refuse what it cannot honour."""
        options = self.step_options
        if isinstance(model, SteppedModel):
            model.step_options = options
        elif options != StepOptions():
            raise ConfigError(
                f"runtime.gradient_clip_val and runtime.nonfinite set the step of a model that "
                f"steps itself (DC-IGN); {type(model).__name__} is stepped by Lightning "
                "(automatic optimization): clip with trainer.gradient_clip_val instead, and "
                "leave these at null and stop."
            )
        apply_memory_layout(model, self.channels_last)
        if self.compile:
            if not isinstance(model, CompilableModel):
                raise ConfigError(
                    f"runtime.compile=true: {type(model).__name__} does not name parts to "
                    "compile; leave runtime.compile=false."
                )
            for part in model.compiled_parts():
                part.compile()


def apply_memory_layout(model: nn.Module, channels_last: bool) -> None:
    """Convert the model's 4-d weights to NHWC (``channels_last``) or leave them as they are.

    Only the 4-d tensors: ``Module.to(memory_format=...)`` refuses a model that also holds 5-d
    weights (a volume decoder's 3D convolutions), which keep their layout. Each is copied into
    fresh NHWC strides rather than made ``contiguous(memory_format=...)``: that leaves a weight
    of one input channel as it is (it already counts as channels-last), and oneDNN, which reads
    the layout from the strides, would then return the first convolution's output of a
    one-channel image in NCHW, and run the layers after it in NCHW too.
    """
    if channels_last:
        for tensor in chain(model.parameters(), model.buffers()):
            if tensor.dim() == 4:
                nhwc = torch.empty_like(tensor.data, memory_format=torch.channels_last)
                tensor.data = nhwc.copy_(tensor.data)


def stored_runtime(run_config: Mapping[str, Any] | None) -> Runtime:
    """The runtime a stored run config names (the defaults where it names none)."""
    node = dict((run_config or {}).get("runtime") or {})
    node.pop("_target_", None)
    return Runtime(**node)
