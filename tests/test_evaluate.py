"""`python -m dcign.evaluate`: numbers and a report from a checkpoint."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir

from dcign.errors import ConfigError
from dcign.evaluate import evaluate
from dcign.run.restore import data_config, load_checkpoint
from dcign.run.training import train
from tests.conftest import CONF, ROOT


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, cache_dir):
    """One tiny trained run shared by the evaluation tests."""
    from tests.conftest import TINY

    run = tmp_path_factory.mktemp("trained")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[
                *TINY,
                "logger=csv",
                "test=false",
                "trainer.max_epochs=1",
                f"paths.output_dir={run}",
                f"paths.cache_dir={cache_dir}",
            ],
        )
    train(cfg)
    return run / "checkpoints" / "last.ckpt"


def eval_config(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="eval", overrides=list(overrides))


def test_report_has_every_metric_for_both_models(checkpoint, cache_dir, tmp_path):
    cfg = eval_config(
        f"ckpt_path={checkpoint}",
        "pairs=15",
        "scores_preset=fast",
        f"paths.cache_dir={cache_dir}",
    )
    metrics = evaluate(cfg, tmp_path)
    stored = json.loads((tmp_path / "metrics.json").read_text())
    assert stored["checkpoint"] == str(checkpoint)
    assert stored["config"]["dataset"]["_target_"].endswith("FacesDataModule")
    for model in ("dcign", "baseline"):
        values = stored["metrics"][model]
        assert 0 <= values["recon_mse"] < 1
        assert {"novel_view_gain/azimuth", "novel_view_oracle/azimuth"} <= values.keys()
        assert {
            "equivariance/azimuth",
            "equivariance/light",
            "mig",
            "dci/completeness",
        } <= values.keys()
    # Invariance is defined by the layout, so only DC-IGN has it.
    assert "invariance/azimuth" in metrics["dcign"]
    assert "invariance/azimuth" not in metrics["baseline"]
    # The bounds bracket the model: oracle <= nochange on average for a sane reconstruction.
    assert not math.isnan(metrics["dcign"]["novel_view_nochange/azimuth"])
    report = (tmp_path / "report.md").read_text()
    assert "| `novel_view_gain/azimuth` |" in report
    assert "| metric | DC-IGN | baseline |" in report
    figures = list((tmp_path / "figures").glob("*.png"))
    assert figures, "the report has no figures"
    for figure in figures:
        assert figure.relative_to(tmp_path).as_posix() in report


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    cfg = eval_config(f"ckpt_path={tmp_path / 'nope.ckpt'}")
    with pytest.raises(ConfigError, match="is not a file"):
        evaluate(cfg, tmp_path)


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="Could not read"):
        evaluate(eval_config(f"ckpt_path={bad}"), tmp_path)


def test_command_line(checkpoint, cache_dir, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dcign.evaluate",
            f"ckpt_path={checkpoint}",
            "pairs=15",
            "scores_preset=fast",
            "figures=false",
            f"hydra.run.dir={tmp_path}",
        ],
        cwd=ROOT,
        env={**os.environ, "DCIGN_CACHE": str(cache_dir)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "metrics.json").read_text())["metrics"]["dcign"]["recon_mse"] >= 0


def test_a_checkpoint_of_an_unknown_format_is_refused_by_name(tmp_path):
    # Options stored flat (no `net` node) are not this version's model: a clear error, not a
    # TypeError from the constructor.
    path = tmp_path / "flat.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"latent_dim": 8, "beta": 1.0}}, path)
    with pytest.raises(ConfigError, match=r"Could not read .*flat\.ckpt as a dcign checkpoint"):
        load_checkpoint(str(path))


def test_single_dataset_keys_change_the_runs_own_data_and_a_whole_data_set_replaces_it(
    tmp_path,
):
    # A run trained on groups of 5 at 64x64; scoring it on groups of 20 must keep its images.
    run_config = {
        "seed": 0,
        "paths": {"cache_dir": str(tmp_path)},
        "dataset": {
            "_target_": "datamodules.procedural.FacesDataModule",
            "image_size": 64,
            "group_size": 5,
            "groups_per_batch": 8,
            "cache_dir": "${paths.cache_dir}",
        },
    }
    keys = data_config(
        eval_config("+dataset.eval_group_size=20", "+dataset.eval_groups_per_batch=2"), run_config
    )
    assert (keys.eval_group_size, keys.eval_groups_per_batch) == (20, 2)
    assert (keys.group_size, keys.groups_per_batch, keys.image_size) == (5, 8, 64)
    assert keys._target_ == "datamodules.procedural.FacesDataModule"
    assert keys.cache_dir == str(tmp_path)
    whole = data_config(eval_config("dataset=chairs"), run_config)
    assert whole._target_ == "datamodules.chairs3d.chairs_datamodule"
    assert (whole.group_size, whole.image_size) == (10, 32)
