"""A sweep as its directories hold it: each job's overrides, seed, end and final test metrics.

Everything is read from files the jobs leave - ``.hydra/`` (Hydra's record of the job's
overrides and config), ``status.json`` (dcign/run/job_status.py) and ``csv/metrics.csv`` (the
CSV logger) - so a summary needs no process that ran them: the multirun's own callback, a
stopped sweep and SLURM jobs that ran on other machines read alike.

Metric names are taken as they are logged, never from a fixed list: DC-IGN's are
``test/<metric>``, a comparison network's ``test/<network>/<metric>``, so a metric added later
shows up in every summary by itself.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from dcign.errors import ConfigError
from dcign.run.job_status import FINISHED, JobEnd, read_status

HYDRA_DIR = ".hydra"
METRICS_CSV = Path("csv") / "metrics.csv"
TEST = "test/"
DCIGN = "dcign"
# Families plotted against each swept parameter, one panel per factor (``<family>/<factor>``).
HEADLINE = ("novel_view_gain", "identity_kept", "equivariance")
# Job directories lie this deep at most below the sweep's (Hydra's default subdir: one level).
MAX_DEPTH = 3

# libyaml's parser when PyYAML was built with it: 100 jobs' config files in 0.5 s, not 5 s.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class Search:
    """A sweeper that optimizes: the metric the jobs return, and which way is better."""

    metric: str
    direction: str  # maximize or minimize

    @property
    def pick(self) -> Callable[..., Any]:
        """``max`` or ``min``: the better of values."""
        return max if self.direction == "maximize" else min

    def best(self, values: Mapping[int, float]) -> int | None:
        """The key of the best finite value (the first of equals), or None."""
        finite = {key: value for key, value in values.items() if math.isfinite(value)}
        return self.pick(finite, key=finite.__getitem__) if finite else None


@dataclass(frozen=True)
class Job:
    """One job of the sweep as its directory records it."""

    name: str  # its directory, relative to the sweep's
    number: int  # Hydra's job number (the trial number of an Optuna search)
    overrides: dict[str, str]  # key -> value of each command-line override
    seed: Any
    end: JobEnd
    metrics: dict[str, float]  # the last logged value of each test/ metric
    objective: float | None  # the value the job returned to the sweeper (a search's metric)

    def value(self, key: str) -> float:
        """A test metric, nan when the job has none."""
        return self.metrics.get(key, math.nan)


@dataclass(frozen=True)
class Sweep:
    """Every job of one multirun, and what varies between them."""

    directory: Path
    jobs: tuple[Job, ...]
    swept: tuple[str, ...]  # override keys whose values differ between jobs (seed excepted)
    common: tuple[str, ...]  # overrides every job has alike
    search: Search | None
    wandb: Mapping[str, Any] | None  # the jobs' W&B logger options, when they logged to W&B

    @cached_property
    def metric_names(self) -> dict[str, tuple[str, str]]:
        """Every test metric any job logged -> (network, metric); DC-IGN's first, then each
        network's, each by name."""
        names = metric_names({key for job in self.jobs for key in job.metrics})
        order = sorted(names, key=lambda key: (names[key][0] != DCIGN, names[key]))
        return {key: names[key] for key in order}

    @property
    def networks(self) -> list[str]:
        """DC-IGN and the comparison networks that logged test metrics, in table order."""
        return list(dict.fromkeys(network for network, _ in self.metric_names.values()))

    def best_job(self) -> Job | None:
        """The finished job with the best objective of a search."""
        if self.search is None:
            return None
        values = {
            index: job.objective
            for index, job in enumerate(self.jobs)
            if job.end.status == FINISHED and job.objective is not None
        }
        index = self.search.best(values)
        return None if index is None else self.jobs[index]


def metric_names(keys: Iterable[str]) -> dict[str, tuple[str, str]]:
    """``test/...`` key -> (network, metric), e.g. ``test/baseline/recon_mse`` -> (baseline,
    recon_mse) and ``test/novel_view_gain/azimuth`` -> (dcign, novel_view_gain/azimuth).

    A first path part names a network when, without it, the key is one of DC-IGN's: whatever
    a comparison network measures, DC-IGN measures too.
    """
    parts = {key: key.removeprefix(TEST).partition("/")[::2] for key in keys}
    networks = {first for first, tail in parts.values() if tail and TEST + tail in parts}
    return {
        key: (first, tail) if first in networks and tail else (DCIGN, key.removeprefix(TEST))
        for key, (first, tail) in parts.items()
    }


def read_sweep(directory: Path) -> Sweep:
    """The sweep in ``directory`` (e.g. ``multirun/train/<date_time>``), from its job dirs."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(
            f"{directory} is not a directory. Give the directory of a sweep, the one a multirun "
            "printed at its start (e.g. multirun/train/<date_time>)."
        )
    paths = job_directories(directory)
    if not paths:
        raise ConfigError(
            f"{directory} holds no job directories (a directory with .hydra/overrides.yaml, "
            f"at most {MAX_DEPTH} levels down). Give the directory of a sweep, e.g. "
            "multirun/train/<date_time>, not one of its jobs or a single run's."
        )
    shared = SharedConfig.read(paths[0])
    jobs = sorted(
        (read_job(path, directory, shared.numbered_by_name) for path in paths),
        key=lambda job: (job.number, job.name),
    )
    swept, common = vary([job.overrides for job in jobs])
    return Sweep(directory, tuple(jobs), swept, common, shared.search(), shared.wandb())


def job_directories(directory: Path, depth: int = MAX_DEPTH) -> list[Path]:
    """Directories below ``directory`` that hold a Hydra job; a job's own subdirectories and
    hidden ones (``.submitit``) are not searched."""
    found = []
    with os.scandir(directory) as entries:
        for entry in entries:
            if not entry.is_dir() or entry.name.startswith("."):
                continue
            path = Path(entry.path)
            if (path / HYDRA_DIR / "overrides.yaml").is_file():
                found.append(path)
            elif depth > 1:
                found.extend(job_directories(path, depth - 1))
    return found


def vary(overrides: Sequence[Mapping[str, str]]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(keys whose value differs between the jobs, ``key=value`` every job has alike), both in
    command-line order; ``seed`` is never among the swept keys (it has a column of its own)."""
    keys = list(dict.fromkeys(key for job in overrides for key in job))
    swept, common = [], []
    for key in keys:
        values = {job.get(key) for job in overrides}
        if len(values) > 1:
            if key != "seed":
                swept.append(key)
        elif key != "seed":
            common.append(f"{key}={overrides[0][key]}")
    return tuple(swept), tuple(common)


@dataclass(frozen=True)
class SharedConfig:
    """What every job of a sweep shares, read from one job: its config and Hydra's.

    Only the overrides differ between jobs, so the composed configs (milliseconds a job to
    parse, most of a 100-job summary's time) are parsed once.
    """

    config: dict[str, Any]
    hydra: dict[str, Any]

    @classmethod
    def read(cls, directory: Path) -> SharedConfig:
        config = _yaml(directory / HYDRA_DIR / "config.yaml", dict)
        return cls(config, _hydra_node(directory / HYDRA_DIR / "hydra.yaml"))

    @property
    def numbered_by_name(self) -> bool:
        """Whether each job's directory is named by its job number (Hydra's default subdir)."""
        return (self.hydra.get("sweep") or {}).get("subdir") == "${hydra.job.num}"

    def search(self) -> Search | None:
        """The search the jobs ran under, if their sweeper optimizes (Optuna)."""
        sweeper = self.hydra.get("sweeper") or {}
        if "optuna" not in str(sweeper.get("_target_", "")).lower():
            return None
        direction = sweeper.get("direction", "minimize")
        direction = direction[0] if isinstance(direction, list) else direction
        return Search(str(self.config.get("optimized_metric")), str(direction).lower())

    def wandb(self) -> Mapping[str, Any] | None:
        """The jobs' W&B logger options, or None when they did not log to W&B."""
        options = (self.config.get("logger") or {}).get("wandb")
        return options if isinstance(options, dict) and "_target_" in options else None


def read_job(directory: Path, sweep: Path, numbered_by_name: bool) -> Job:
    """The job in ``directory``, named relative to the ``sweep`` directory; a missing or
    unreadable file reads as empty."""
    end = read_status(directory)
    hydra = directory / HYDRA_DIR
    if numbered_by_name:
        number = _job_number(directory.name)
    else:
        number = (_hydra_node(hydra / "hydra.yaml").get("job") or {}).get("num")
    overrides = _yaml(hydra / "overrides.yaml", list)
    return Job(
        name=directory.relative_to(sweep).as_posix(),
        number=number if isinstance(number, int) else -1,
        overrides=dict(_split(str(override)) for override in overrides),
        seed=_top_level(hydra / "config.yaml", "seed"),
        end=end,
        metrics=last_values(directory / METRICS_CSV, lambda column: column.startswith(TEST)),
        objective=end.objective,
    )


def last_values(path: Path, wanted: Callable[[str], bool]) -> dict[str, float]:
    """The last non-empty value of each wanted column of a CSV log; {} without the file.

    Lines are parsed from the end, only until every wanted column has a value: the test
    metrics are in the last line (a value never spans lines in a metrics log).
    """
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return {}
    if not lines:
        return {}
    columns = {i: name for i, name in enumerate(next(csv.reader(lines[:1]))) if wanted(name)}
    values: dict[str, float] = {}
    for row in csv.reader(reversed(lines[1:])):
        for index, name in columns.items():
            if name not in values and index < len(row) and row[index] != "":
                values[name] = float(row[index])
        if len(values) == len(columns):
            break
    return values


def as_number(value: str | None) -> float | None:
    """An override's value as a number, or None (``true``, ``faces``, ``[1,2]``)."""
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None


def _split(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value


def _job_number(name: str) -> int | None:
    return int(name) if name.isdigit() else None


def _hydra_node(path: Path) -> dict[str, Any]:
    """The ``hydra:`` node of a job's ``.hydra/hydra.yaml``."""
    node = _yaml(path, dict).get("hydra")
    return node if isinstance(node, dict) else {}


def _top_level(path: Path, key: str) -> Any:
    """A top-level scalar of a YAML file Hydra wrote, from its own line (``seed: 3``), so that
    a job's whole config need not be parsed; None without the file or the key."""
    try:
        with open(path) as handle:
            line = next((line for line in handle if line.startswith(f"{key}:")), None)
    except OSError:
        return None
    return None if line is None else (yaml.load(line, Loader=_LOADER) or {}).get(key)


def _yaml(path: Path, kind: type) -> Any:
    """The YAML file at ``path`` when it holds a ``kind`` (list or dict), else an empty one."""
    try:
        with open(path) as handle:
            loaded = yaml.load(handle, Loader=_LOADER)
    except (OSError, yaml.YAMLError):
        return kind()
    return loaded if isinstance(loaded, kind) else kind()
