"""Faults that must lose nothing: bad config keys and types, non-finite losses, foreign or
untrusted checkpoints, an unreachable W&B. Each is stopped with a message that names what to
change, or worked around with one warning."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from dcign.errors import ConfigError, RunStoppedError
from dcign.model.module import DCIGN
from dcign.run.checkpoints import AtomicCheckpointIO
from dcign.run.config_check import check_sections
from dcign.run.loggers import build_loggers
from dcign.run.training import CHECKED_SECTIONS, train
from dcign.scoring.network_scores import NetworkScores
from tests.cli import QUIET as NO_PICTURES
from tests.conftest import CONF

QUIET = [*NO_PICTURES, "callbacks.step_checkpoint.every_n_train_steps=1"]


# ---------------------------------------------------------------- config keys and types
@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "+model.objective.invariance_wieght=0.1",
            "model.objective.invariance_wieght is not an option of ",
        ),
        ("+model.objective.invariance_wieght=0.1", "Did you mean 'invariance_weight'?"),
        ("+model.optimizer.momentum=0.9", "model.optimizer.momentum is not an option of "),
        ("model.net.latent_dim=abc", "model.net.latent_dim must be an integer, got 'abc'"),
        (
            "model.objective.invariance_weight=[1]",
            "model.objective.invariance_weight must be a number",
        ),
        ("model.net.encoder_filters=4", "model.net.encoder_filters must be a list"),
        ("dataset.group_size=2.5", "dataset.group_size must be an integer"),
        ("+dataset.n_identites=3", "Did you mean 'n_identities'?"),
        ("trainer.max_epochs=many", "trainer.max_epochs must be an integer or null"),
        ("+trainer.max_epoch=2", "Did you mean 'max_epochs'?"),
        # A mapping's example shows its items' kind: a range is a list, not one number.
        (
            "dataset.train_range={azimuth: 43}",
            "dataset.train_range must be a mapping of a string to a list of a number or null, "
            "got {'azimuth': 43} (dict). Example: dataset.train_range='{a: [1,2]}'.",
        ),
        ("+callbacks.preemption.file_name=x", "callbacks.preemption.file_name is not an option"),
        (
            "trainer.plugins=[{_target_: dcign.run.checkpoints.AtomicCheckpointIO, x: 1}]",
            "x is not",
        ),
    ],
)
def test_unknown_keys_and_wrong_types_are_named_before_anything_runs(
    compose_config, cache_dir, tmp_path, override, expected
):
    before = sorted(os.listdir(cache_dir))
    cfg = compose_config(*QUIET, override)
    with pytest.raises(ConfigError) as error:
        train(cfg)
    assert expected in str(error.value)
    assert sorted(os.listdir(cache_dir)) == before  # nothing rendered, nothing written
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["model=paper"],
        ["dataset=chairs"],
        ["dataset=norb"],
        ["dataset=folder"],
        ["dataset=meshes"],
        ["experiment=paper_faces"],
        ["experiment=paper_chairs"],
        ["trainer=ddp_cpu", "logger=wandb"],
        ["trainer=gpu", "logger=tensorboard"],
        ["model/optimizer=rmsprop_literal", "debug=fast"],
    ],
)
def test_every_shipped_config_passes_the_check(overrides, tmp_path):
    """The checker must accept what the project itself ships (every preset's types)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, f"paths.output_dir={tmp_path}"])
    check_sections(OmegaConf.to_container(cfg, resolve=True), CHECKED_SECTIONS)


DEBUG_PRESETS = sorted(p.stem for p in (CONF / "debug").glob("*.yaml"))
DATASETS = sorted(p.stem for p in (CONF / "dataset").glob("*.yaml"))


@pytest.mark.parametrize("debug", DEBUG_PRESETS)
@pytest.mark.parametrize("dataset", DATASETS)
def test_every_debug_preset_composes_with_every_data_set(debug, dataset, tmp_path):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[f"debug={debug}", f"dataset={dataset}", f"paths.output_dir={tmp_path}"],
        )
    check_sections(OmegaConf.to_container(cfg, resolve=True), CHECKED_SECTIONS)


def test_tiny_preset_trains_on_the_procedural_chairs(cache_dir, tmp_path):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "debug=tiny",
                "dataset=chairs",
                *QUIET,
                f"paths.output_dir={tmp_path}",
                f"paths.cache_dir={cache_dir}",
            ],
        )
    assert cfg.dataset.n_identities == 8
    metrics = train(cfg)
    assert "val/novel_view_gain/azimuth" in metrics


# ---------------------------------------------------------------- non-finite loss
def poison_at(monkeypatch, step: int) -> None:
    """Make the DC-IGN training loss NaN once, at a step (one step per batch)."""
    clean = DCIGN.dcign_loss
    done = []

    def poisoned(self, batch, deterministic=False):
        parts = clean(self, batch, deterministic)
        if self.training and self.global_step == step and not done:
            done.append(step)
            return dataclasses.replace(parts, total=parts.total * float("nan"))
        return parts

    monkeypatch.setattr(DCIGN, "dcign_loss", poisoned)


def finite_checkpoints(folder: Path) -> list[str]:
    names = []
    for path in sorted(folder.glob("*.ckpt")):
        state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
        assert all(torch.isfinite(v).all() for v in state.values()), f"{path.name} holds NaN"
        names.append(path.name)
    return names


def test_nan_loss_stops_naming_the_step_and_the_last_good_checkpoint(
    compose_config, tmp_path, monkeypatch
):
    poison_at(monkeypatch, step=2)  # the third batch of the first epoch
    cfg = compose_config(*QUIET)
    with pytest.raises(RunStoppedError) as error:
        train(cfg)
    message = str(error.value)
    checkpoints = tmp_path / "run" / "checkpoints"
    assert "non-finite at step 2 (epoch 0, batch 2)" in message
    assert f"Last good checkpoint: {checkpoints / 'last.ckpt'}" in message
    assert "runtime.nonfinite=skip" in message and "ckpt_path=last" in message
    assert finite_checkpoints(checkpoints) == ["last.ckpt"]
    saved = torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["global_step"] == 2  # the two good batches


def test_nan_loss_is_skipped_when_asked(compose_config, tmp_path, monkeypatch):
    poison_at(monkeypatch, step=2)
    cfg = compose_config(*QUIET, "runtime.nonfinite=skip")
    train(cfg)
    checkpoints = tmp_path / "run" / "checkpoints"
    assert "last.ckpt" in finite_checkpoints(checkpoints)
    saved = torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["global_step"] == 2 * 3 - 1  # 6 batches, one without an update


def test_cosine_schedule_over_an_endless_run_is_refused(compose_config):
    cfg = compose_config(*QUIET, "model/scheduler=cosine", "trainer.max_epochs=-1")
    with pytest.raises(ConfigError, match="the run has no end"):
        train(cfg)


def test_bad_nonfinite_option(compose_config):
    with pytest.raises(ConfigError, match="runtime.nonfinite must be one of"):
        train(compose_config(*QUIET, "runtime.nonfinite=ignore"))


@pytest.mark.parametrize("clip", ["0", "-1.0"])
def test_bad_clipping_value(compose_config, clip):
    with pytest.raises(ConfigError, match="runtime.gradient_clip_val must be a positive number"):
        train(compose_config(*QUIET, f"runtime.gradient_clip_val={clip}"))


# ---------------------------------------------------------------- collapse
def test_a_collapsed_baseline_is_reported_at_test_with_its_number(compose_config, caplog):
    # A KL weight of 1000 pins the baseline's posterior to the prior: its decodes ignore the code.
    cfg = compose_config(*QUIET, "test=true", "model.baseline.beta=1000")
    with caplog.at_level(logging.WARNING, logger="dcign.scoring.network_scores"):
        metrics = train(cfg)
    assert metrics["test/baseline/code_use"] < 0.1
    assert metrics["test/baseline/novel_view_gain/azimuth"] == pytest.approx(0.0, abs=0.1)
    warnings = [r.getMessage() for r in caplog.records if "collapsed:" in r.getMessage()]
    assert any(w.startswith("The baseline network is collapsed:") for w in warnings)


def test_a_validation_reports_collapse_only_when_the_network_does_not_recover(caplog):
    scores = NetworkScores(factors=[])
    with caplog.at_level(logging.WARNING, logger="dcign.scoring.network_scores"):
        scores.report_collapse("val", "baseline", 0.05, epoch=0)  # the first validation
        scores.report_collapse("val", "baseline", 0.08, epoch=0)  # rising: still learning
        assert not caplog.records
        scores.report_collapse("val", "baseline", 0.07, epoch=0)  # not recovering: collapsed
        assert "The baseline network is collapsed at epoch 0" in caplog.text
        caplog.clear()
        scores.report_collapse("val", "dcign", 0.5, epoch=0)
        scores.report_collapse("val", "dcign", 0.3, epoch=0)  # lower, but far from collapsed
        assert not caplog.records
        scores.report_collapse("test", "dcign", 0.02, epoch=0)  # a test reports at once
        assert "The dcign network is collapsed:" in caplog.text


# ---------------------------------------------------------------- checkpoints
@pytest.fixture
def trained_checkpoint(compose_config, tmp_path) -> Path:
    train(compose_config(*QUIET, "trainer.max_epochs=1"))
    return tmp_path / "run" / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("model.net.latent_dim=9", "model.net.latent_dim: checkpoint 8, this run 9"),
        ("model.net.encoder_filters=[4,4,8]", "model.net.encoder_filters"),
        ("model.layout={azimuth: 1, elevation: 1, light: 1, intrinsic: null}", "model.layout"),
        ("model.baseline=null", "model.baseline"),
        ("model.net.decoder_upsampling=subpixel", "model.net.decoder_upsampling"),
    ],
)
def test_resuming_under_another_model_or_layout_is_refused(
    compose_config, trained_checkpoint, override, named
):
    cfg = compose_config(*QUIET, override, f"ckpt_path={trained_checkpoint}")
    with pytest.raises(ConfigError, match="trained with another model or latent layout") as error:
        train(cfg)
    assert named in str(error.value)


def test_checkpoint_that_would_run_code_is_refused_without_running_it(
    compose_config, trained_checkpoint, tmp_path
):
    marker = tmp_path / "code-ran"
    payload = torch.load(trained_checkpoint, map_location="cpu", weights_only=True)
    payload["extra"] = RunsCode(str(marker))
    evil = tmp_path / "evil.ckpt"
    torch.save(payload, evil)
    cfg = compose_config(*QUIET, f"ckpt_path={evil}")
    with pytest.raises(ConfigError, match="refused") as error:
        train(cfg)
    assert str(evil) in str(error.value)
    assert not marker.exists()


class RunsCode:
    """An object whose unpickling would create a file: what a malicious checkpoint does."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


# ---------------------------------------------------------------- logging
def wandb_options(save_dir: Path) -> dict:
    return {
        "wandb": {
            "_target_": "pytorch_lightning.loggers.WandbLogger",
            "project": "dcign-test",
            "save_dir": str(save_dir),
            "offline": False,
        }
    }


def offline_runs(save_dir: Path) -> list[Path]:
    return list((save_dir / "wandb").glob("offline-run-*"))


def test_wandb_online_without_a_key_logs_offline_with_one_warning(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc from `wandb login`
    loggers = build_loggers(wandb_options(tmp_path))
    assert len(loggers) == 1
    loggers[0].experiment.finish()
    assert len(offline_runs(tmp_path)) == 1
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and "offline" in r.message]
    assert len(warnings) == 1 and "no API key" in warnings[0].message


@pytest.mark.slow
def test_wandb_server_unreachable_falls_back_to_offline(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("WANDB_API_KEY", "a" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "5")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    loggers = build_loggers(wandb_options(tmp_path))
    assert len(loggers) == 1
    loggers[0].log_metrics({"train/loss": 1.0}, step=1)
    loggers[0].experiment.finish()
    assert len(offline_runs(tmp_path)) == 1
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and "offline" in r.message]
    assert len(warnings) == 1 and "could not start online" in warnings[0].message


def test_a_crash_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "state_dict": {"w": torch.ones(3)}}, path)

    def dies_half_way(obj, file):
        file.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("killed while writing")

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(OSError, match="killed while writing"):
        io.save_checkpoint({"global_step": 2, "state_dict": {"w": torch.zeros(3)}}, path)
    monkeypatch.undo()
    previous = torch.load(path, weights_only=True)
    assert previous["global_step"] == 1 and torch.equal(previous["state_dict"]["w"], torch.ones(3))
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no temporary left
