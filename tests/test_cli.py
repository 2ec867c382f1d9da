"""`python train.py` as users run it: single runs, sweeps, DDP on CPU and user errors."""

from __future__ import annotations

import pytest

from dcign.errors import ConfigError
from dcign.run.training import train
from tests.cli import run_cli
from tests.test_callbacks import _wandb_records as wandb_records


def test_single_run_with_wandb_offline(cache_dir, tmp_path):
    result = run_cli(
        "trainer.max_epochs=1", "test=false", f"hydra.run.dir={tmp_path}", cache_dir=cache_dir
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    offline_runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1
    assert list(offline_runs[0].glob("*.wandb")), "the offline run wrote no data file"
    assert (tmp_path / "csv" / "metrics.csv").is_file()
    # A default run's log holds no warning the user cannot act on.
    log = result.stdout + result.stderr
    assert "anonymous setting" not in log, "W&B warns about the unset anonymous option"
    assert "on_before_batch_transfer" not in log, "Lightning warns about the batch hook"


def test_sweep_gives_one_output_dir_per_job(cache_dir, tmp_path):
    result = run_cli(
        "-m",
        "model.objective.invariance_weight=0.001,0.1",
        "logger=csv",
        "trainer.max_epochs=1",
        "test=false",
        "callbacks.latent_sweep=null",
        f"hydra.sweep.dir={tmp_path}",
        cache_dir=cache_dir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for job, weight in (("0", "0.001"), ("1", "0.1")):
        assert (tmp_path / job / "checkpoints" / "last.ckpt").is_file()
        overrides = (tmp_path / job / ".hydra" / "overrides.yaml").read_text()
        assert f"model.objective.invariance_weight={weight}" in overrides


def test_unknown_dataset_is_a_clear_error(cache_dir, tmp_path):
    result = run_cli("dataset=cars", f"hydra.run.dir={tmp_path}", cache_dir=cache_dir)
    assert result.returncode != 0
    assert "Could not find 'dataset/cars'" in result.stderr
    assert "chairs" in result.stderr and "faces" in result.stderr


def test_user_error_exits_with_message_not_traceback(cache_dir, tmp_path):
    result = run_cli("model.net.latent_dim=3", f"hydra.run.dir={tmp_path}", cache_dir=cache_dir)
    assert result.returncode == 2
    output = result.stdout + result.stderr
    assert "model.net.latent_dim=3" in output
    assert "Traceback" not in output


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.net.latent_dim=3", "model.net.latent_dim=3"),
        ("dataset.group_size=1", "group_size"),
        ("dataset.ratio.azimuth=-1", "ratio"),
        ("+dataset.ratio.colour=1", "colour"),
    ],
)
def test_bad_config_is_a_config_error(compose_config, override, message):
    cfg = compose_config("logger=csv", override)
    with pytest.raises(ConfigError, match=message):
        train(cfg)


def test_unwritable_cache_dir(compose_config, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    cfg = compose_config("logger=csv", f"paths.cache_dir={blocker / 'cache'}")
    with pytest.raises(ConfigError, match="cache"):
        train(cfg)


def test_sweep_jobs_are_named_by_their_overrides_and_grouped_in_wandb(cache_dir, tmp_path):
    result = run_cli(
        "-m",
        "model.objective.invariance_weight=0.001,0.1",
        "logger=wandb",
        "trainer.max_epochs=1",
        "callbacks.latent_sweep=null",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        cache_dir=cache_dir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = {}
    for job in ("0", "1"):
        (data_file,) = (tmp_path / "sweep" / job / "wandb").glob("offline-run-*/*.wandb")
        records = list(wandb_records(data_file))
        (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        summary = {
            item.key or "/".join(item.nested_key)
            for r in records
            if r.WhichOneof("record_type") == "summary"
            for item in r.summary.update
        }
        runs[run.display_name] = run.run_group
        # The final test numbers are in the run summary, for the dashboard's run table.
        assert {"test/novel_view_gain/azimuth", "test/recon_mse"} <= summary
    swept = "model.objective.invariance_weight"
    assert set(runs) == {f"{swept}=0.001", f"{swept}=0.1"}
    assert len(set(runs.values())) == 1 and set(runs.values()) != {""}
