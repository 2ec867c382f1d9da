"""A checkpoint that cannot be resumed from is named, with the way out, before anything runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dcign.errors import ConfigError
from dcign.run.training import train
from tests.cli import QUIET, run_cli


def snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``directory`` with its size and modification time."""
    return {
        str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in directory.rglob("*")
        if p.is_file()
    }


@pytest.fixture
def trained_run(compose_config, tmp_path) -> Path:
    """A finished tiny run: its checkpoints folder holds last.ckpt and an epoch checkpoint."""
    train(compose_config(*QUIET))
    return tmp_path / "run"


def test_truncated_checkpoint_is_named_and_nothing_is_touched(compose_config, trained_run):
    checkpoints = trained_run / "checkpoints"
    cut = trained_run / "cut.ckpt"
    cut.write_bytes((checkpoints / "last.ckpt").read_bytes()[:5000])
    before = snapshot(trained_run)
    with pytest.raises(ConfigError, match=r"Could not read .*cut\.ckpt.*complete file"):
        train(compose_config(*QUIET, f"ckpt_path={cut}"))
    assert snapshot(trained_run) == before


def test_truncated_last_checkpoint_points_to_the_newest_intact_one(compose_config, trained_run):
    checkpoints = trained_run / "checkpoints"
    (intact,) = [p for p in checkpoints.glob("epoch*.ckpt")]
    last = checkpoints / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    os.utime(intact)  # the intact checkpoint is newer than anything else but last.ckpt
    with pytest.raises(ConfigError) as error:
        train(compose_config(*QUIET, "ckpt_path=last"))
    message = str(error.value)
    assert "last.ckpt" in message and f"ckpt_path={intact}" in message


def test_command_line_says_it_in_one_paragraph_and_exits_2(cache_dir, tmp_path):
    foreign = tmp_path / "notes.txt"
    foreign.write_text("not a checkpoint\n" * 100)
    run = tmp_path / "run"
    done = run_cli(*QUIET, f"ckpt_path={foreign}", f"hydra.run.dir={run}", cache_dir=cache_dir)
    assert done.returncode == 2
    output = done.stdout + done.stderr
    assert "Could not read" in output and str(foreign) in output
    assert "Traceback" not in output and "HYDRA_FULL_ERROR" not in output
    assert not (run / "checkpoints").exists() and not (run / "csv").exists()
