"""The default precision follows the hardware: bf16 autocast only where bf16 is native."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir

from dcign.run import precision
from dcign.run.precision import best_precision
from tests.conftest import CONF


@pytest.fixture
def machine(monkeypatch):
    """Pretend hardware: ``machine(cuda=..., cuda_bf16=..., cpu_bf16=...)``."""

    def pretend(cuda: bool, cuda_bf16: bool = False, cpu_bf16: bool = False) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: cuda_bf16)
        monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: cpu_bf16)

    return pretend


@pytest.mark.parametrize(
    ("hardware", "device", "expected"),
    [
        (dict(cuda=False, cpu_bf16=True), "auto", "bf16-mixed"),
        (dict(cuda=False, cpu_bf16=False), "auto", "32-true"),
        (dict(cuda=True, cuda_bf16=True, cpu_bf16=False), "auto", "bf16-mixed"),
        (dict(cuda=True, cuda_bf16=False, cpu_bf16=True), "auto", "32-true"),  # e.g. a V100
        # trainer=cpu on a GPU machine: only the CPU counts.
        (dict(cuda=True, cuda_bf16=True, cpu_bf16=False), "cpu", "32-true"),
        (dict(cuda=True, cuda_bf16=False, cpu_bf16=True), "cpu", "bf16-mixed"),
    ],
)
def test_precision_follows_the_device(machine, hardware, device, expected):
    machine(**hardware)
    assert best_precision(device) == expected


def test_cpu_check_reads_torchs_feature_detection(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert precision.cpu_has_native_bf16()
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert not precision.cpu_has_native_bf16()
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    assert not precision.cpu_has_native_bf16()  # an older or non-x86 build: fp32


@pytest.mark.parametrize(
    ("trainer", "cpu_bf16", "expected"),
    [
        ("default", True, "bf16-mixed"),
        ("default", False, "32-true"),
        ("cpu", True, "bf16-mixed"),
        ("ddp_cpu", False, "32-true"),
        ("gpu", False, "bf16-mixed"),  # the GPU preset asks for bf16 explicitly
    ],
)
def test_trainer_presets_resolve_to_a_lightning_precision(machine, trainer, cpu_bf16, expected):
    import dcign.run.training  # noqa: F401 - registers the resolver, as train.py does

    machine(cuda=False, cpu_bf16=cpu_bf16)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"trainer={trainer}", "paths.output_dir=/tmp/x"])
    assert cfg.trainer.precision == expected


def test_user_choice_wins(machine):
    import dcign.run.training  # noqa: F401

    machine(cuda=False, cpu_bf16=True)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["trainer.precision=32-true", "paths.output_dir=/x"])
    assert cfg.trainer.precision == "32-true"


def test_unknown_device_is_refused():
    with pytest.raises(ValueError, match="'auto' or 'cpu'"):
        best_precision("tpu")
