"""The summary of a multirun: a row per job, plots, the sweep's W&B run, and each job's record
of how it ended.

Most tests write sweep directories by hand - Hydra's files, ``status.json`` and CSV logs with
known numbers - so that every expected cell is known; one runs a real tiny 2x2 sweep through
``train.py -m`` with one job made to fail, and checks the summary against the jobs' own files.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf
from PIL import Image

from dcign import summarize as summarize_cli
from dcign.errors import ConfigError, RunStoppedError
from dcign.run import sweep_job, sweep_plots, sweep_summary
from dcign.run.job_status import read_status
from dcign.run.loggers import run_group
from dcign.run.sweep_dirs import metric_names, read_sweep
from dcign.run.sweep_job import SUMMARY_CALLBACK, run_recorded
from dcign.run.sweep_plots import HEADER, PANEL_HEIGHT, PANEL_WIDTH, XAxis, log_spaced
from dcign.run.sweep_summary import SweepSummary, summarize
from dcign.run.training import run_or_explain
from tests.cli import QUIET, run_cli
from tests.conftest import CONF, ROOT
from tests.test_callbacks import _complete_records

WEIGHT, RATIO = "model.objective.invariance_weight", "dataset.ratio.intrinsic"
BLUE, ORANGE = sweep_plots.COLOURS[:2]


# ----------------------------------------------------------------------------- hand-written sweeps


def write_job(
    sweep: Path,
    number: int,
    swept: dict[str, str],
    rows: list[dict[str, float]] | None = None,
    status: dict | None = None,
    seed: int = 0,
    sweeper: str = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
    direction: str = "minimize",
    directory: str | None = None,
) -> Path:
    """A job directory as a multirun leaves it: .hydra/, status.json and csv/metrics.csv."""
    job = sweep / (directory or str(number))
    (job / ".hydra").mkdir(parents=True)
    overrides = ["trainer.max_epochs=1", *(f"{k}={v}" for k, v in swept.items()), f"seed={seed}"]
    config = {"seed": seed, "optimized_metric": "val/novel_view_gain/azimuth", "logger": {}}
    hydra = {"hydra": {"job": {"num": number}, "sweeper": {"_target_": sweeper}}}
    hydra["hydra"]["sweeper"]["direction"] = direction
    for name, content in (("overrides", overrides), ("config", config), ("hydra", hydra)):
        (job / ".hydra" / f"{name}.yaml").write_text(yaml.safe_dump(content))
    if status is not None:
        (job / "status.json").write_text(json.dumps(status))
    if rows is not None:
        (job / "csv").mkdir()
        columns = list(dict.fromkeys(key for row in rows for key in row))
        with open(job / "csv" / "metrics.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, columns)
            writer.writeheader()
            writer.writerows(rows)
    return job


def log_rows(gain: float, baseline_gain: float) -> list[dict[str, float]]:
    """A CSV log: a training row, a validation row, then the test row with known numbers."""
    return [
        {"epoch": 0, "step": 0, "train/loss": 5.0},
        {"epoch": 0, "step": 1, "val/novel_view_gain/azimuth": 0.11, "val/loss": 4.0},
        {
            "epoch": 0,
            "step": 2,
            "test/novel_view_gain/azimuth": gain,
            "test/novel_view_gain/light": gain / 2,
            "test/baseline/novel_view_gain/azimuth": baseline_gain,
            "test/baseline/novel_view_gain/light": baseline_gain / 2,
            "test/equivariance/azimuth": 0.9,
            "test/baseline/equivariance/azimuth": 0.4,
            "test/identity_kept/azimuth": 0.75,  # a metric no code names: it must show up
            "test/recon_mse": 0.002,
            "test/baseline/recon_mse": 0.003,
            "test/dci/disentanglement": 0.6,
        },
    ]


FINISHED = {"status": "finished", "error": "", "minutes": 2.5, "objective": None}


@pytest.fixture
def grid_sweep(tmp_path) -> Path:
    """Weight 0.01, 0.1 x ratio 5, 10; job 3 failed (its log stops before the test)."""
    sweep = tmp_path / "multirun" / "train" / "2024-05-01_12-00-00"
    cells = [("0.01", "5", 0.5), ("0.1", "5", 0.7), ("0.01", "10", 0.6), ("0.1", "10", None)]
    for number, (weight, ratio, gain) in enumerate(cells):
        if gain is None:
            status = {"status": "failed", "error": "ValueError: boom", "minutes": 0.5}
            write_job(sweep, number, {WEIGHT: weight, RATIO: ratio}, log_rows(0, 0)[:2], status)
        else:
            write_job(sweep, number, {WEIGHT: weight, RATIO: ratio}, log_rows(gain, 0.3), FINISHED)
    return sweep


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# ----------------------------------------------------------------------------- the table


def test_a_row_per_job_with_its_swept_values_status_and_test_metrics(grid_sweep):
    summary = summarize(grid_sweep)
    rows = read_csv(grid_sweep / "summary.csv")
    assert [row["job"] for row in rows] == ["0", "1", "2", "3"]
    assert [(row[WEIGHT], row[RATIO]) for row in rows] == [
        ("0.01", "5"),
        ("0.1", "5"),
        ("0.01", "10"),
        ("0.1", "10"),
    ]
    assert [row["status"] for row in rows] == ["finished"] * 3 + ["failed"]
    assert [row["error"] for row in rows] == ["", "", "", "ValueError: boom"]
    assert [float(row["minutes"]) for row in rows] == [2.5, 2.5, 2.5, 0.5]
    assert [row["seed"] for row in rows] == ["0"] * 4
    # Every test metric, DC-IGN's first, then the baseline's; nothing else from the log.
    assert list(rows[0])[7:] == [
        "test/dci/disentanglement",
        "test/equivariance/azimuth",
        "test/identity_kept/azimuth",
        "test/novel_view_gain/azimuth",
        "test/novel_view_gain/light",
        "test/recon_mse",
        "test/baseline/equivariance/azimuth",
        "test/baseline/novel_view_gain/azimuth",
        "test/baseline/novel_view_gain/light",
        "test/baseline/recon_mse",
    ]
    assert [row["test/novel_view_gain/azimuth"] for row in rows] == ["0.5", "0.7", "0.6", ""]
    assert rows[1]["test/novel_view_gain/light"] == "0.35"
    assert rows[1]["test/baseline/recon_mse"] == "0.003"
    assert summary.sweep.swept == (WEIGHT, RATIO)
    assert summary.sweep.common == ("trainer.max_epochs=1",)
    assert summary.wandb_run is None  # the jobs did not log to W&B


def test_the_last_logged_value_of_a_metric_is_the_final_one(tmp_path):
    rows = log_rows(0.5, 0.3)
    rows.append({"epoch": 1, "step": 3, "train/loss": 4.0})
    rows.append({"epoch": 1, "step": 4, "test/novel_view_gain/azimuth": 0.9})
    write_job(tmp_path, 0, {WEIGHT: "0.1"}, rows, FINISHED)
    (job,) = read_sweep(tmp_path).jobs
    assert job.metrics["test/novel_view_gain/azimuth"] == 0.9
    assert job.metrics["test/novel_view_gain/light"] == 0.25  # from the earlier test row


def test_metric_keys_are_split_into_network_and_metric_without_a_list():
    keys = [
        "test/novel_view_gain/azimuth",
        "test/baseline/novel_view_gain/azimuth",
        "test/invariance/azimuth",
        "test/dci/disentanglement",
        "test/recon_mse",
        "test/baseline/recon_mse",
        "test/mlvae/recon_mse",
        "test/baseline/a_new_score",  # a comparison's metric DC-IGN lacks: still the baseline's
    ]
    assert metric_names(keys) == {
        "test/novel_view_gain/azimuth": ("dcign", "novel_view_gain/azimuth"),
        "test/baseline/novel_view_gain/azimuth": ("baseline", "novel_view_gain/azimuth"),
        "test/invariance/azimuth": ("dcign", "invariance/azimuth"),
        "test/dci/disentanglement": ("dcign", "dci/disentanglement"),
        "test/recon_mse": ("dcign", "recon_mse"),
        "test/baseline/recon_mse": ("baseline", "recon_mse"),
        "test/mlvae/recon_mse": ("mlvae", "recon_mse"),
        "test/baseline/a_new_score": ("baseline", "a_new_score"),
    }


def test_jobs_are_found_below_the_sweep_and_those_without_a_status_are_incomplete(tmp_path):
    write_job(tmp_path, 0, {WEIGHT: "0.1"}, log_rows(0.5, 0.3), FINISHED, directory="w/0")
    write_job(tmp_path, 1, {WEIGHT: "1.0"}, log_rows(0.4, 0.3), None, directory="w/1")
    (tmp_path / ".submitit" / "x" / ".hydra").mkdir(parents=True)  # hidden: never a job
    (tmp_path / "plots").mkdir()
    sweep = read_sweep(tmp_path)
    assert [(job.name, job.end.status) for job in sweep.jobs] == [
        ("w/0", "finished"),
        ("w/1", "incomplete"),
    ]
    assert sweep.jobs[1].metrics["test/novel_view_gain/azimuth"] == 0.4  # read all the same


def test_the_report_shows_the_plots_the_jobs_and_a_table_per_metric_family(grid_sweep):
    summarize(grid_sweep)
    report = (grid_sweep / "summary.md").read_text()
    assert "4 jobs: 3 finished, 1 failed." in report
    assert f"`{WEIGHT}` = 0.01, 0.1; `{RATIO}` = 5, 10" in report
    assert f"![novel_view_gain_vs_{WEIGHT}](plots/novel_view_gain_vs_{WEIGHT}.png)" in report
    headings = [line for line in report.splitlines() if line.startswith("## ")]
    assert headings == [
        "## Jobs",
        "## novel_view_gain",
        "## identity_kept",
        "## equivariance",
        "## scores",
        "## dci",
    ]
    assert f"| job | {WEIGHT} | {RATIO} | seed | status | error | minutes |" in report
    assert "| 3 | 0.1 | 10 | 0 | failed | ValueError: boom | 0.5 |" in report
    assert (
        f"| job | {WEIGHT} | {RATIO} | seed | DC-IGN azimuth | DC-IGN light | baseline azimuth "
        "| baseline light |"
    ) in report
    assert "| 1 | 0.1 | 5 | 0 | 0.7 | 0.35 | 0.3 | 0.15 |" in report
    assert "| 3 | 0.1 | 10 | 0 | - | - | - | - |" in report


# ----------------------------------------------------------------------------- plots


def panel_has(image: Image.Image, index: int, colour: tuple[int, int, int]) -> bool:
    """Whether panel ``index`` of the first row draws anything in ``colour``."""
    box = (index * PANEL_WIDTH, HEADER, (index + 1) * PANEL_WIDTH, HEADER + PANEL_HEIGHT)
    return colour in {c for _, c in image.crop(box).getcolors(PANEL_WIDTH * PANEL_HEIGHT)}


def test_each_headline_metric_against_each_parameter_has_a_panel_per_factor(grid_sweep):
    summarize(grid_sweep)
    plots = grid_sweep / "plots"
    with Image.open(plots / f"novel_view_gain_vs_{WEIGHT}.png") as image:
        assert image.size == (2 * PANEL_WIDTH, HEADER + PANEL_HEIGHT)  # azimuth, light
        for panel in (0, 1):
            assert panel_has(image, panel, BLUE) and panel_has(image, panel, ORANGE)
    with Image.open(plots / f"equivariance_vs_{RATIO}.png") as image:
        assert image.size == (PANEL_WIDTH, HEADER + PANEL_HEIGHT)
    with Image.open(plots / f"identity_kept_vs_{RATIO}.png") as image:
        assert image.size == (PANEL_WIDTH, HEADER + PANEL_HEIGHT)
        assert panel_has(image, 0, BLUE) and not panel_has(image, 0, ORANGE)  # DC-IGN's only
    # Two swept parameters: a heatmap, a row of panels per network.
    with Image.open(plots / f"novel_view_gain_{WEIGHT}_x_{RATIO}.png") as image:
        assert image.size == (2 * PANEL_WIDTH, HEADER + 2 * PANEL_HEIGHT)
    assert len(list(plots.glob("*.png"))) == 3 * 2 + 3


def test_values_spaced_by_factors_of_ten_get_a_log_axis():
    assert log_spaced([0.001, 0.01, 0.1]) and log_spaced([0.1, 1.0]) and log_spaced([0.01, 1])
    assert log_spaced([0.001, 0.37, 2.5])  # two decades, as an Optuna search draws them
    assert not log_spaced([1, 5, 10, 20]) and not log_spaced([0, 0.1, 1]) and not log_spaced([3])
    axis = XAxis.of(["0.001", "0.01", "0.1"])
    assert axis.log and axis.positions == pytest.approx({"0.001": 0, "0.01": 0.5, "0.1": 1})
    linear = XAxis.of(["5", "10", "20"])
    assert not linear.log and linear.positions["10"] == pytest.approx(1 / 3)
    categories = XAxis.of(["faces", "chairs"])
    assert categories.positions == {"faces": 0.25, "chairs": 0.75}
    assert [label for _, label in categories.ticks] == ["faces", "chairs"]


def test_a_plot_that_fails_to_draw_leaves_the_table(grid_sweep, monkeypatch, caplog):
    def broken(*args):
        raise RuntimeError("no ink")

    monkeypatch.setattr(sweep_summary, "draw_plots", broken)
    with caplog.at_level(logging.WARNING, logger=sweep_summary.__name__):
        summary = summarize(grid_sweep)
    assert len(read_csv(grid_sweep / "summary.csv")) == 4
    assert [path.name for path in summary.files] == ["summary.csv", "summary.md"]
    assert "no ink" in caplog.text


# ----------------------------------------------------------------------------- Optuna


@pytest.mark.parametrize(("direction", "best"), [("maximize", 2), ("minimize", 0)])
def test_a_search_gets_trials_objectives_the_best_marked_and_its_history(tmp_path, direction, best):
    optuna = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    objectives = [0.2, 0.5, 0.9, None]
    for number, objective in enumerate(objectives):
        status = {**FINISHED, "objective": objective}
        if objective is None:
            status = {"status": "failed", "error": "RuntimeError: diverged", "minutes": 1.0}
        weight = str(10.0 ** -(number + 1))
        write_job(
            tmp_path, number, {WEIGHT: weight}, log_rows(0.5, 0.3), status, 0, optuna, direction
        )
    summary = summarize(tmp_path)
    rows = read_csv(tmp_path / "summary.csv")
    assert list(rows[0])[:8] == [
        "trial",
        WEIGHT,
        "seed",
        "status",
        "error",
        "minutes",
        "objective",
        "best",
    ]
    assert [row["objective"] for row in rows] == ["0.2", "0.5", "0.9", ""]
    assert [row["best"] for row in rows] == ["yes" if n == best else "" for n in range(4)]
    assert summary.sweep.best_job().number == best
    report = (tmp_path / "summary.md").read_text()
    objective = [0.2, 0.5, 0.9][best]
    assert f"Best trial: {best} (`{best}/`), `val/novel_view_gain/azimuth` = {objective}" in report
    assert f"Swept: `{WEIGHT}` from 0.0001 to 0.1." in report  # a search's values as a range
    with Image.open(tmp_path / "plots" / "objective_history.png") as image:
        assert image.size == (2 * PANEL_WIDTH, HEADER + PANEL_HEIGHT)


# ----------------------------------------------------------------------------- W&B, callback, CLI


def test_a_wandb_failure_never_fails_the_summary(grid_sweep, monkeypatch, caplog):
    import wandb

    def refuse(**kwargs):
        raise RuntimeError("W&B is down")

    monkeypatch.setattr(wandb, "init", refuse)
    with caplog.at_level(logging.WARNING, logger=sweep_summary.__name__):
        summary = summarize(grid_sweep, wandb=True)
    assert summary.wandb_run is None and "W&B is down" in caplog.text
    assert len(read_csv(grid_sweep / "summary.csv")) == 4


def test_the_callback_summarizes_then_exits_1_naming_the_failed_jobs(grid_sweep, caplog):
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(grid_sweep)}}})
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as stop:
        SweepSummary(wandb=False).on_multirun_end(config)
    assert stop.value.code == 1
    assert (
        f"1 of 4 jobs did not finish:\n  job 3 ({WEIGHT}=0.1, {RATIO}=10) failed: ValueError: boom"
        in caplog.text
    )
    assert len(read_csv(grid_sweep / "summary.csv")) == 4


def test_a_summary_that_cannot_be_made_never_fails_the_sweep(tmp_path, caplog):
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "gone")}}})
    with caplog.at_level(logging.ERROR):
        SweepSummary(wandb=False).on_multirun_end(config)
    assert "python -m dcign.summarize" in caplog.text


def test_the_shipped_config_summarizes_training_multiruns_only():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        train, evaluate = (compose(name, return_hydra_config=True) for name in ("train", "eval"))
    callback = train.hydra.callbacks[SUMMARY_CALLBACK]
    assert callback._target_ == f"{SweepSummary.__module__}.{SweepSummary.__qualname__}"
    assert SUMMARY_CALLBACK not in evaluate.hydra.callbacks  # its jobs record no status


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("missing", "is not a directory"),
        ("a-file", "is not a directory"),
        (".", "holds no job directories"),
    ],
)
def test_the_command_line_explains_a_wrong_directory(tmp_path, capsys, given, message):
    (tmp_path / "a-file").write_text("not a sweep")
    with pytest.raises(SystemExit) as stop:
        summarize_cli.main([str(tmp_path / given)])
    assert stop.value.code == ConfigError.exit_code
    assert message in capsys.readouterr().err


# ----------------------------------------------------------------------------- job status


@pytest.fixture
def status_dir(tmp_path) -> Path:
    return tmp_path / "job"


def fail(error: BaseException):
    def run() -> None:
        raise error

    return run


def test_a_finished_job_records_its_minutes_and_objective(status_dir):
    assert run_recorded(status_dir, True, lambda: 0.25) == 0.25
    end = read_status(status_dir)
    assert (end.status, end.error, end.objective) == ("finished", "", 0.25)
    assert 0 <= end.minutes < 1


def test_a_failure_ends_its_job_only_and_is_recorded_with_its_first_line(status_dir, caplog):
    with caplog.at_level(logging.ERROR):
        value = run_recorded(status_dir, True, fail(RuntimeError("out of ink\nmore detail")))
    assert math.isnan(value)  # what an Optuna sweeper records as a failed trial
    assert read_status(status_dir).error == "RuntimeError: out of ink"
    assert read_status(status_dir).status == "failed"
    assert "Traceback" in caplog.text  # a bug keeps its traceback, in the job's log


def test_an_explained_error_that_exits_is_recorded_and_contained(status_dir):
    def explained() -> None:
        run_or_explain(fail(ConfigError("model.x must be > 0, got -1.\nFix it.")))

    assert math.isnan(run_recorded(status_dir, True, explained))
    assert read_status(status_dir).error == "ConfigError: model.x must be > 0, got -1."


def test_a_non_finite_stop_is_a_stopped_job_and_the_sweep_goes_on(status_dir):
    assert math.isnan(run_recorded(status_dir, True, fail(RunStoppedError("Loss is nan."))))
    assert read_status(status_dir).status == "stopped"


def exit_after_ctrl_c() -> None:
    """What Lightning does on Ctrl-C during fit: shut down, then ``sys.exit(1)``."""
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt:
        sys.exit(1)


@pytest.mark.parametrize(
    ("run", "raised"),
    [
        (fail(KeyboardInterrupt()), KeyboardInterrupt),
        (exit_after_ctrl_c, SystemExit),
        (fail(RunStoppedError("Stopped by SIGTERM.", 128 + signal.SIGTERM)), RunStoppedError),
    ],
)
def test_a_signal_is_recorded_and_still_ends_the_multirun(status_dir, run, raised):
    with pytest.raises(raised):
        run_recorded(status_dir, True, run)
    assert read_status(status_dir).status == "stopped"


def test_without_the_summary_a_failure_is_recorded_and_raised(status_dir):
    with pytest.raises(RuntimeError):
        run_recorded(status_dir, False, fail(RuntimeError("boom")))
    assert read_status(status_dir).status == "failed"


def test_only_global_rank_zero_writes_the_status(status_dir, monkeypatch):
    monkeypatch.setattr(sweep_job.rank_zero_only, "rank", 1)
    run_recorded(status_dir, True, lambda: 1.0)
    assert read_status(status_dir).status == "incomplete"


def test_outside_a_multirun_a_job_runs_as_before(status_dir):
    assert not HydraConfig.initialized()
    with pytest.raises(RuntimeError):
        sweep_job.sweep_job(fail(RuntimeError("single run")))


# ----------------------------------------------------------------------------- end to end


class FailInJob(pl.Callback):
    """Makes job ``job`` of a multirun fail when its training starts."""

    def __init__(self, job: int) -> None:
        self.job = job

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if HydraConfig.get().job.num == self.job:
            raise RuntimeError(f"deliberate failure of job {self.job}\nsecond line")


def last_test_values(path: Path) -> dict[str, str]:
    """Each test/ column's last non-empty cell of a job's own CSV log."""
    values = {}
    for row in read_csv(path):
        values.update({k: v for k, v in row.items() if k.startswith("test/") and v})
    return values


@pytest.mark.slow
def test_a_tiny_2x2_sweep_with_a_failing_job_is_summarized(cache_dir, tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli(
        "-m",
        f"{WEIGHT}=0.01,0.1",
        f"{RATIO}=1,2",
        f"+callbacks.fail._target_={FailInJob.__module__}.FailInJob",
        "+callbacks.fail.job=2",
        *[o for o in QUIET if o != "test=false"],
        "trainer.max_epochs=1",
        "hydra.callbacks.sweep_summary.wandb=true",
        f"hydra.sweep.dir={sweep}",
        cache_dir=cache_dir,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]  # every job ran; the failed one is named
    assert "1 of 4 jobs did not finish" in output and "deliberate failure of job 2" in output

    rows = read_csv(sweep / "summary.csv")
    assert [(r["job"], r[WEIGHT], r[RATIO]) for r in rows] == [
        ("0", "0.01", "1"),
        ("1", "0.01", "2"),
        ("2", "0.1", "1"),
        ("3", "0.1", "2"),
    ]
    assert [r["status"] for r in rows] == ["finished", "finished", "failed", "finished"]
    assert rows[2]["error"] == "RuntimeError: deliberate failure of job 2"
    test_columns = [column for column in rows[0] if column.startswith("test/")]
    for row in rows:
        if row["status"] == "finished":
            own = last_test_values(sweep / row["job"] / "csv" / "metrics.csv")
            assert {c: row[c] for c in test_columns} == own
            assert float(row["minutes"]) > 0
        else:
            assert all(row[c] == "" for c in test_columns)

    factors = sorted(
        c.rsplit("/", 1)[1] for c in test_columns if c.startswith("test/novel_view_gain/")
    )
    assert factors == ["azimuth", "elevation", "intrinsic", "light"]
    for parameter in (WEIGHT, RATIO):
        with Image.open(sweep / "plots" / f"novel_view_gain_vs_{parameter}.png") as image:
            assert image.size == (len(factors) * PANEL_WIDTH, HEADER + PANEL_HEIGHT)
    with Image.open(sweep / "plots" / f"equivariance_vs_{WEIGHT}.png") as image:
        assert image.size == (3 * PANEL_WIDTH, HEADER + PANEL_HEIGHT)  # no intrinsic
    with Image.open(sweep / "plots" / f"novel_view_gain_{WEIGHT}_x_{RATIO}.png") as image:
        assert image.size == (len(factors) * PANEL_WIDTH, HEADER + 2 * PANEL_HEIGHT)

    (offline,) = (sweep / "wandb").glob("offline-run-*")
    (table_file,) = (offline / "files" / "media" / "table" / "sweep").glob("summary_*.table.json")
    table = json.loads(table_file.read_text())
    assert table["columns"] == list(rows[0]) and len(table["data"]) == 4
    images = offline / "files" / "media" / "images" / "sweep"
    assert list(images.glob(f"novel_view_gain_vs_{WEIGHT}_*.png"))
    (data_file,) = offline.glob("*.wandb")
    (run,) = [r.run for r in _complete_records(data_file) if r.WhichOneof("record_type") == "run"]
    assert (run.display_name, run.run_group) == ("sweep summary", run_group(sweep))

    # Rebuilt from the directories alone: the same files, byte for byte.
    written = {p: p.read_bytes() for p in [sweep / "summary.csv", sweep / "summary.md"]}
    written |= {p: p.read_bytes() for p in (sweep / "plots").glob("*.png")}
    shutil.rmtree(sweep / "plots")
    summarize_cli.main([str(sweep), "--no-wandb"])
    assert {p: p.read_bytes() for p in written} == written


@pytest.mark.slow
def test_the_benchmark_times_the_summary_of_a_written_sweep(tmp_path):
    out = tmp_path / "sweep_summary.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/sweep_summary.py", "--quick", "--no-wandb", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "summarize (no W&B), median" in done.stdout
    result = json.loads(out.read_text())
    assert result["jobs"] == 6 and result["median_seconds"] > 0
    assert result["wandb_runs_written"] == 0  # the W&B run is tested end to end above
