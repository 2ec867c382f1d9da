"""The run's runtime options: set on the model by the run builder, refused where they cannot
work, and re-applied from a stored run config when a checkpoint is restored."""

import pytest
import torch

from dcign.errors import ConfigError
from dcign.model.step_options import StepOptions
from dcign.run.restore import load_checkpoint
from dcign.run.runtime import Runtime, stored_runtime
from dcign.run.training import build_data, build_model
from dcign.ship import SHIPPED


def in_layout(model: torch.nn.Module, channels_last: bool) -> list[bool]:
    """For each 2-d convolution of ``model``: whether its weight is stored in that layout (a
    weight with one input channel is in both)."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    return [
        m.weight.is_contiguous(memory_format=layout)
        for m in model.modules()
        if isinstance(m, torch.nn.Conv2d)
    ]


@pytest.mark.parametrize("channels_last", [True, False])
def test_the_run_builder_applies_the_config(compose_config, channels_last):
    cfg = compose_config(
        f"runtime.channels_last={channels_last}",
        "runtime.gradient_clip_val=2.5",
        "runtime.nonfinite=skip",
    )
    model = build_model(cfg, build_data(cfg))
    layouts = in_layout(model, channels_last)
    assert layouts and all(layouts)
    assert not all(in_layout(model, not channels_last))
    assert model.step_options == StepOptions(gradient_clip_val=2.5, nonfinite="skip")


def test_step_options_of_a_model_lightning_steps_are_refused():
    lightning_stepped = torch.nn.Conv2d(1, 1, 3)  # no step_options: not a self-stepping model
    with pytest.raises(ConfigError, match="trainer.gradient_clip_val instead"):
        Runtime(gradient_clip_val=1.0).apply(lightning_stepped)
    with pytest.raises(ConfigError, match="runtime.nonfinite"):
        Runtime(nonfinite="skip").apply(lightning_stepped)
    Runtime().apply(lightning_stepped)  # the defaults are fine: nothing to honour
    assert all(in_layout(lightning_stepped, channels_last=True))


def test_compile_of_a_model_without_named_parts_is_refused():
    with pytest.raises(ConfigError, match="leave runtime.compile=false"):
        Runtime(compile=True).apply(torch.nn.Linear(2, 2))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("runtime.channels_last=maybe", "runtime.channels_last"),
        ("+runtime.pin=true", "runtime.pin"),
    ],
)
def test_bad_runtime_keys_and_types_are_named(compose_config, override, message):
    cfg = compose_config(override)
    with pytest.raises(ConfigError, match=message):
        build_model(cfg, build_data(cfg))


def test_stored_runtime_reads_a_run_config_and_defaults_without_one():
    stored = {"runtime": {"_target_": "dcign.run.runtime.Runtime", "channels_last": False}}
    assert stored_runtime(stored) == Runtime(channels_last=False)
    assert stored_runtime(None) == Runtime()
    assert stored_runtime({"model": {}}) == Runtime()


def test_restored_weights_get_the_stored_memory_layout():
    # The shipped run was trained channels-last; its restored networks run that way again.
    model, run_config = load_checkpoint(str(SHIPPED))
    assert stored_runtime(run_config).channels_last
    assert all(in_layout(model, channels_last=True))
