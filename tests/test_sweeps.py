"""Sweeps and cluster runs: Optuna search through Hydra, the SLURM launcher config, and the
hand-over from a preemption checkpoint to the launcher's own requeue handler."""

from __future__ import annotations

import os
import signal

import pytest
import pytorch_lightning as pl
import torch
import yaml
from hydra import compose, initialize_config_dir

import dcign.run.training as training
from dcign.errors import RunStoppedError
from dcign.run.training import build, train
from tests.cli import QUIET as NO_PICTURES
from tests.cli import run_cli
from tests.conftest import CONF

QUIET = [*NO_PICTURES, "trainer.max_epochs=1"]


@pytest.mark.slow
def test_optuna_search_runs_trials_and_reports_the_best(cache_dir, tmp_path):
    result = run_cli(
        "-m",
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.n_startup_trials=2",
        "optimized_metric=val/loss",
        "hydra.sweeper.direction=minimize",
        *QUIET,
        f"hydra.sweep.dir={tmp_path}",
        cache_dir=cache_dir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    weights = []
    for trial in ("0", "1"):
        overrides = yaml.safe_load((tmp_path / trial / ".hydra" / "overrides.yaml").read_text())
        chosen = dict(item.split("=", 1) for item in overrides if "=" in item)
        weight, intrinsic = (
            float(chosen["model.objective.invariance_weight"]),
            float(chosen["dataset.ratio.intrinsic"]),
        )
        assert 0.001 <= weight <= 10.0 and 1.0 <= intrinsic <= 20.0
        saved = torch.load(
            tmp_path / trial / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True
        )
        assert saved["hyper_parameters"]["objective"]["invariance_weight"] == pytest.approx(weight)
        weights.append(weight)
    assert weights[0] != weights[1]
    best = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    chosen = best["best_params"]["model.objective.invariance_weight"]
    assert any(chosen == pytest.approx(w) for w in weights)


def test_slurm_launcher_config_runs_one_task_per_device(tmp_path):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["launcher=slurm", "trainer=gpu", "trainer.devices=4", "trainer.num_nodes=2"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.tasks_per_node, launcher.gpus_per_node, launcher.nodes) == (4, 4, 2)
    assert launcher.signal_delay_s > 0
    plugins = [build(plugin) for plugin in cfg.trainer.plugins]
    environment = next(p for p in plugins if type(p).__name__ == "SLURMEnvironment")
    assert environment.auto_requeue is False  # submitit requeues; Lightning must not as well


class SignalAt(pl.Callback):
    """Sends this process a signal after a given batch, as a cluster scheduler would."""

    def __init__(self, signum: int, batch: int) -> None:
        self.signum, self.batch = signum, batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == self.batch:
            os.kill(os.getpid(), self.signum)


def test_submitit_requeue_handler_runs_after_the_checkpoint_is_saved(
    compose_config, tmp_path, monkeypatch
):
    calls = []
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"

    def requeue(signum, frame):  # stands in for submitit's SIGUSR2 handler
        calls.append((signum, checkpoint.is_file()))

    previous = signal.signal(signal.SIGUSR2, requeue)
    build_callbacks = training.build_callbacks
    monkeypatch.setattr(
        training, "build_callbacks", lambda c: [*build_callbacks(c), SignalAt(signal.SIGUSR2, 1)]
    )
    try:
        with pytest.raises(RunStoppedError, match="Stopped by SIGUSR2 at step 2") as error:
            train(compose_config(*QUIET, "callbacks.step_checkpoint.every_n_train_steps=1000"))
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert error.value.exit_code == 128 + signal.SIGUSR2
    assert calls == [(signal.SIGUSR2, True)]  # called once, and only after the save
    assert torch.load(checkpoint, map_location="cpu", weights_only=True)["global_step"] == 2
