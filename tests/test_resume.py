"""Runs that are killed or preempted lose nothing: real subprocesses, real signals.

A run killed with SIGKILL in the middle of an epoch and resumed from its last checkpoint must
end with the same weights and have trained on the same batch sequence as a run that was never
interrupted; SIGTERM and SIGUSR1 must save a checkpoint before the process exits.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests.cli import QUIET, run_cli, start_cli
from tests.conftest import tiny_volume
from tests.recorder import read_records

# 2 epochs x 4 batches and a checkpoint after every batch.
RUN = [
    "dataset.batches_per_epoch=4",
    "trainer.max_epochs=2",
    "callbacks.step_checkpoint.every_n_train_steps=1",
    *QUIET,
    "+callbacks.recorder._target_=tests.recorder.BatchRecorder",
]

pytestmark = pytest.mark.slow


def recorder(path: Path, freeze_at_batch: int | None = None) -> list[str]:
    options = [f"+callbacks.recorder.path={path}"]
    if freeze_at_batch is not None:
        options.append(f"+callbacks.recorder.freeze_at_batch={freeze_at_batch}")
    return options


def wait_for(path: Path, process: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            pytest.fail(f"the run ended before {path.name} appeared:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"{path.name} did not appear within {timeout} s")
        time.sleep(0.2)


def final_state(run_dir: Path) -> dict:
    checkpoint = torch.load(
        run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True
    )
    return checkpoint


@pytest.mark.parametrize(
    "model",
    [[], ["experiment=gqn"], tiny_volume(), tiny_volume("dcign3d_learnt")],
    ids=["dcign", "gqn", "volume_told", "volume_learnt"],
)
def test_run_killed_mid_epoch_resumes_to_the_same_weights_and_batches(cache_dir, tmp_path, model):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    result = run_cli(
        *RUN,
        *model,
        *recorder(tmp_path / "whole.jsonl"),
        f"hydra.run.dir={whole}",
        cache_dir=cache_dir,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    # Batch 6 of 8 is the second batch of epoch 2: after a validation, mid-epoch.
    log = tmp_path / "killed.log"
    process = start_cli(
        *RUN,
        *model,
        *recorder(tmp_path / "killed.jsonl", freeze_at_batch=6),
        f"hydra.run.dir={killed}",
        cache_dir=cache_dir,
        log=log,
    )
    wait_for(tmp_path / "killed.frozen", process, log)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL
    saved_step = final_state(killed)["global_step"]
    assert saved_step == 5  # batch 6 was trained but not yet checkpointed

    result = run_cli(
        *RUN,
        *model,
        *recorder(tmp_path / "resumed.jsonl"),
        f"hydra.run.dir={killed}",
        "ckpt_path=last",
        cache_dir=cache_dir,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    expected = read_records(tmp_path / "whole.jsonl")
    resumed = read_records(tmp_path / "resumed.jsonl")
    assert resumed[0]["step"] == saved_step  # the lost batch is trained again, nothing skipped
    before_kill = [r for r in read_records(tmp_path / "killed.jsonl") if r["step"] < saved_step]
    assert [r["step"] for r in expected] == list(range(8))  # one step per batch
    assert before_kill + resumed == expected

    reference, continued = final_state(whole), final_state(killed)
    assert continued["global_step"] == reference["global_step"] == 8
    for name, value in reference["state_dict"].items():
        torch.testing.assert_close(continued["state_dict"][name], value, rtol=1e-5, atol=1e-6)
    for ours, theirs in zip(
        continued["optimizer_states"], reference["optimizer_states"], strict=True
    ):
        for key, state in theirs["state"].items():
            torch.testing.assert_close(ours["state"][key]["exp_avg_sq"], state["exp_avg_sq"])


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_preemption_signal_saves_a_checkpoint_and_says_how_to_resume(cache_dir, tmp_path, signum):
    run_dir, log = tmp_path / "run", tmp_path / "run.log"
    process = start_cli(
        *RUN,
        *recorder(tmp_path / "run.jsonl", freeze_at_batch=3),
        "callbacks.step_checkpoint.every_n_train_steps=1000",
        f"hydra.run.dir={run_dir}",
        cache_dir=cache_dir,
        log=log,
    )
    wait_for(tmp_path / "run.frozen", process, log)
    process.send_signal(signum)
    assert process.wait(timeout=60) == 128 + signum, log.read_text()[-3000:]
    output = log.read_text()
    assert f"Stopped by {signal.Signals(signum).name} at step 3" in output
    assert "ckpt_path=last" in output and f"hydra.run.dir={run_dir}" in output
    saved = final_state(run_dir)
    assert saved["global_step"] == 3  # three batches
    assert not list((run_dir / "checkpoints").glob(".*tmp*"))  # no temporary left
