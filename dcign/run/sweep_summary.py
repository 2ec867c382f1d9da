"""A sweep's answer in one place: a table of every job, plots, and a W&B run for the sweep.

Each job of a multirun leaves its own directory and its own W&B run, and none of them says
which setting disentangles best. When a multirun ends, :class:`SweepSummary` (a Hydra callback,
``hydra.callbacks.sweep_summary`` in conf/train.yaml) writes into the sweep directory

* ``summary.csv``: one row per job - its swept overrides, seed, status (finished; failed or
  stopped, with the error's first line; incomplete), minutes, for a search the trial, its
  objective and the best trial - and the final value of every ``test/...`` metric of DC-IGN
  and of each comparison network;
* ``summary.md``: the same as a report: the plots, the jobs, and a table per metric family;
* ``plots/*.png`` (dcign/run/sweep_plots.py);
* an offline W&B run in the sweep's group holding the table and the plots, when the jobs
  logged to W&B, so that after ``wandb sync`` the dashboard shows the answer beside the jobs.

``python -m dcign.summarize <sweep dir>`` writes the same from the directories alone (a stopped
sweep, SLURM jobs that ran elsewhere). A job that failed or a plot or W&B run that could not be
made never keeps the rest of the summary from being written.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from dcign.run.job_status import FINISHED
from dcign.run.sweep_dirs import DCIGN, HEADLINE, Job, Sweep, as_number, read_sweep
from dcign.run.sweep_plots import draw_plots

log = logging.getLogger(__name__)

SUMMARY_CSV, SUMMARY_MD, PLOTS_DIR = "summary.csv", "summary.md", "plots"


@dataclass(frozen=True)
class Table:
    """The summary table: column names and one row of values per job (None: no value); the
    columns before ``metrics_from`` describe the job, the rest are its test metrics."""

    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    metrics_from: int


@dataclass(frozen=True)
class Summary:
    """What a summary wrote: the sweep, its table, the files and the W&B run directory."""

    sweep: Sweep
    table: Table
    files: tuple[Path, ...]
    wandb_run: Path | None

    @property
    def unfinished(self) -> list[Job]:
        return [job for job in self.sweep.jobs if job.end.status != FINISHED]


def summarize(directory: Path, wandb: bool | None = None) -> Summary:
    """Read the sweep in ``directory`` and write its table, report, plots and W&B run.

    ``wandb``: make the sweep's W&B run (True), not (False), or when the jobs logged to W&B
    (None).
    """
    sweep = read_sweep(Path(directory))
    table = summary_table(sweep)
    plots = _drawn(sweep)
    files = (
        write_csv(table, sweep.directory / SUMMARY_CSV),
        write_markdown(sweep, table, plots, sweep.directory / SUMMARY_MD),
        *plots,
    )
    run = log_to_wandb(sweep, table, plots) if _use_wandb(sweep, wandb) else None
    return Summary(sweep, table, files, run)


# ----------------------------------------------------------------------------- the table


def summary_table(sweep: Sweep) -> Table:
    """One row per job: identity, swept values, seed, how it ended, then every test metric."""
    best = sweep.best_job()
    search = ("objective", "best") if sweep.search else ()
    described = ("trial" if sweep.search else "job", *sweep.swept, "seed")
    described += ("status", "error", "minutes", *search)
    rows = []
    for job in sweep.jobs:
        searched = (job.objective, "yes" if job is best else "") if sweep.search else ()
        rows.append(
            (
                job.number,
                *(job.overrides.get(key) for key in sweep.swept),
                job.seed,
                job.end.status,
                job.end.error,
                job.end.minutes,
                *searched,
                *(job.metrics.get(key) for key in sweep.metric_names),
            )
        )
    return Table((*described, *sweep.metric_names), tuple(rows), len(described))


def write_csv(table: Table, path: Path) -> Path:
    """The table as CSV, numbers at full precision and an empty cell for no value."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(table.columns)
        writer.writerows([["" if value is None else value for value in row] for row in table.rows])
    return path


# ----------------------------------------------------------------------------- the report


def write_markdown(sweep: Sweep, table: Table, plots: Sequence[Path], path: Path) -> Path:
    """The report: what was swept and how the jobs ended, the plots, the jobs' table, then a
    table per metric family (headline families first) with a column per network and factor."""
    lines = [f"# Sweep summary: {sweep.directory.name}", "", *_overview(sweep), ""]
    lines += [f"![{plot.stem}]({plot.relative_to(path.parent).as_posix()})" for plot in plots]
    jobs = table.columns[: table.metrics_from]
    lines += ["", "## Jobs", "", *_markdown_table(table, jobs), ""]
    for family, keys in metric_families(sweep).items():
        lines += [f"## {family}", ""]
        names = {key: _metric_label(sweep, key, family) for key in keys}
        lines += [*_markdown_table(table, [*_identity(table), *keys], names), ""]
    path.write_text("\n".join(lines))
    return path


def _overview(sweep: Sweep) -> list[str]:
    """What was swept, how the jobs ended, and a search's best trial."""
    counts: dict[str, int] = {}
    for job in sweep.jobs:
        counts[job.end.status] = counts.get(job.end.status, 0) + 1
    ended = ", ".join(f"{count} {status}" for status, count in counts.items())
    swept = "; ".join(f"`{key}` {_range(sweep, key)}" for key in sweep.swept)
    seeds = sorted({str(job.seed) for job in sweep.jobs})
    swept = swept or ("the seed only" if len(seeds) > 1 else "nothing")
    jobs = f"{len(sweep.jobs)} job{'s' * (len(sweep.jobs) != 1)}"
    lines = [f"{jobs}: {ended}.", "", f"Swept: {swept}.", ""]
    lines += [f"Seeds: {', '.join(seeds)}."]
    if sweep.common:
        lines += ["", f"Every job: `{' '.join(sweep.common)}`."]
    best = sweep.best_job()
    if sweep.search and best:
        lines += [
            "",
            f"Best trial: {best.number} (`{best.name}/`), `{sweep.search.metric}` = "
            f"{_cell(best.objective)} ({sweep.search.direction}).",
        ]
    return lines


def _range(sweep: Sweep, key: str) -> str:
    """A grid's values in job order; a search's numbers as their range (it draws many)."""
    values = list(dict.fromkeys(j.overrides[key] for j in sweep.jobs if key in j.overrides))
    numbers = [number for number in map(as_number, values) if number is not None]
    if sweep.search and len(numbers) == len(values):
        return f"from {min(numbers):.4g} to {max(numbers):.4g}"
    return "= " + ", ".join(values)


def metric_families(sweep: Sweep) -> dict[str, list[str]]:
    """The test metrics by family - ``novel_view_gain`` for ``novel_view_gain/azimuth`` -
    headline families first, then single-number scores together, then the rest by name."""
    families: dict[str, list[str]] = {}
    for key, (_, metric) in sweep.metric_names.items():
        family, _, part = metric.partition("/")
        families.setdefault(family if part else "scores", []).append(key)
    order = [f for f in HEADLINE if f in families] + ["scores"] * ("scores" in families)
    order += sorted(set(families) - set(order))
    return {family: families[family] for family in order}


def _metric_label(sweep: Sweep, key: str, family: str) -> str:
    network, metric = sweep.metric_names[key]
    shown = "DC-IGN" if network == DCIGN else network
    return f"{shown} {metric if family == 'scores' else metric.partition('/')[2]}"


def _identity(table: Table) -> list[str]:
    """The columns that say which job a row is: its number, swept values and seed."""
    return list(table.columns[: table.columns.index("seed") + 1])


def _markdown_table(
    table: Table, columns: Sequence[str], names: dict[str, str] | None = None
) -> list[str]:
    indices = [table.columns.index(column) for column in columns]
    header = [(names or {}).get(column, column) for column in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(columns)]
    for row in table.rows:
        lines.append("| " + " | ".join(_cell(row[i]) for i in indices) + " |")
    return lines


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


# ----------------------------------------------------------------------------- plots, W&B


def _drawn(sweep: Sweep) -> list[Path]:
    """The plots; a failure to draw is a warning - the table is the summary's core."""
    try:
        return draw_plots(sweep, sweep.directory / PLOTS_DIR)
    except Exception as error:  # noqa: BLE001 - never lose the table over a picture
        log.warning("Could not draw the sweep's plots: %s", error, exc_info=error)
        return []


def _use_wandb(sweep: Sweep, wanted: bool | None) -> bool:
    return sweep.wandb is not None if wanted is None else wanted


def log_to_wandb(sweep: Sweep, table: Table, plots: Sequence[Path]) -> Path | None:
    """One W&B run for the sweep, in the jobs' group, with the table and the plots; returns
    its directory. Offline unless the jobs logged online and a key is set; a failure to log is
    a warning, never an error."""
    options = sweep.wandb or {}
    try:
        import wandb  # W&B (and Lightning, for its logger) load only when a W&B run is made

        from dcign.run.loggers import run_group, wandb_key_available

        online = not options.get("offline", True) and wandb_key_available()

        if wandb.run is not None:  # a finished job's run left open: never log into it
            wandb.run.finish()
        run = wandb.init(
            project=options.get("project") or "dcign",
            group=options.get("group") or run_group(Path(os.path.abspath(sweep.directory))),
            name="sweep summary",
            job_type="sweep_summary",
            dir=str(sweep.directory),
            mode="online" if online else "offline",
            config={"swept": list(sweep.swept), "jobs": len(sweep.jobs)},
        )
        data = [[_for_wandb(value) for value in row] for row in table.rows]
        run.log(
            {
                "sweep/summary": wandb.Table(columns=list(table.columns), data=data),
                **{f"sweep/{plot.stem}": wandb.Image(str(plot)) for plot in plots},
            }
        )
        best = sweep.best_job()
        if best is not None:
            run.summary["best_trial"] = best.number
            run.summary["best_objective"] = best.objective
        run.finish()
        return Path(run.dir).parent
    except Exception as error:  # noqa: BLE001 - the summary's files are written already
        log.warning("Could not log the sweep summary to W&B: %s", error)
        return None


def _for_wandb(value: Any) -> Any:
    """Swept values that are numbers as numbers, so that the dashboard can chart them."""
    number = as_number(value) if isinstance(value, str) else None
    return value if number is None else number


# ----------------------------------------------------------------------------- callback


class SweepSummary(Callback):
    """Writes the sweep's summary when a Hydra multirun ends (in the launching process).

    Jobs that failed were recorded by the jobs themselves (dcign/run/sweep_job.py) and did not
    stop the sweep; after the summary is written the multirun exits with status 1, naming them
    (by ``SystemExit``: Hydra turns any exception of a callback into a warning). A summary that
    cannot be written is logged, never turned into a failed sweep.
    """

    def __init__(self, wandb: bool | None = None) -> None:
        self.wandb = wandb

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        directory = Path(str(config.hydra.sweep.dir))
        try:
            summary = summarize(directory, self.wandb)
        except Exception as error:  # noqa: BLE001 - the jobs' results are on disk regardless
            log.error(
                "Could not summarize the sweep (%s); rebuild it with "
                "`python -m dcign.summarize %s`.",
                error,
                directory,
                exc_info=error,
            )
            return
        log.info("Sweep summary: %s", directory / SUMMARY_MD)
        if summary.unfinished:
            log.error("%s", unfinished_message(summary))
            raise SystemExit(1)


def unfinished_message(summary: Summary) -> str:
    """Which jobs did not finish and why, and where the summary is."""
    lines = [f"{len(summary.unfinished)} of {len(summary.sweep.jobs)} jobs did not finish:"]
    for job in summary.unfinished:
        values = ", ".join(
            f"{k}={job.overrides[k]}" for k in summary.sweep.swept if k in job.overrides
        )
        why = f"{job.end.status}: {job.end.error}" if job.end.error else job.end.status
        lines.append(f"  job {job.number} ({values or job.name}) {why}")
    lines.append(f"The summary of every job is in {summary.sweep.directory / SUMMARY_MD}.")
    return "\n".join(lines)
