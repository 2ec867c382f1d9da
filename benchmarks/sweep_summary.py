"""Seconds to summarize a sweep of 100 jobs from their directories (``python -m dcign.summarize``).

A summary reads every job's Hydra files, ``status.json`` and ``csv/metrics.csv``, then writes
the table, the report and the plots; it runs at the end of every multirun, so it must stay
quick however many jobs a sweep has. This script writes ``--jobs`` job directories the size a
default run leaves them - ``.hydra/`` from the real composed config, ``status.json``, and a CSV
log of 15 epochs of 250 steps logged every 25 (150 training rows, 15 validations, one test
row, every ``val/`` and ``test/`` metric of DC-IGN and the baseline) - as a sweep of invariance
weight x intrinsic ratio x seed, then times ``summarize`` on them: the median of ``--rounds``
runs without the W&B run (broken down into reading, table, plots and report), then twice with it
(the first W&B run of a process imports W&B, which a multirun's W&B-logging jobs have done).

    python benchmarks/sweep_summary.py --out results/sweep_summary.json
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
import random
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import common
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from dcign.run.job_status import FINISHED, JobEnd, write_status
from dcign.run.sweep_dirs import read_sweep
from dcign.run.sweep_plots import draw_plots
from dcign.run.sweep_summary import (
    SUMMARY_CSV,
    SUMMARY_MD,
    summarize,
    summary_table,
    write_csv,
    write_markdown,
)

WEIGHTS = ("0.001", "0.01", "0.1", "1.0", "10.0")
RATIOS = ("1", "5", "10", "20")
FACTORS = ("azimuth", "elevation", "intrinsic", "light")
PER_FACTOR = [
    "novel_view_gain",
    "novel_view_mse",
    "novel_view_nochange",
    "novel_view_oracle",
    "novel_view_ssim",
    "novel_view_ssim_oracle",
    "novel_view_detail",
    "novel_view_detail_oracle",
    "identity_kept",
    "identity_kept_chance",
    "identity_kept_lineup",
    "identity_kept_oracle",
    "identity_kept_source",
    "identity_kept_other_face",
    "invariance",
]
SCALARS = [
    "code_use",
    "kl",
    "loss",
    "recon_mse",
    "reconstruction",
    "invariance",
    "mig",
    "sap",
    "beta_vae",
    "factor_vae",
    "dci/disentanglement",
    "dci/completeness",
    "dci/informativeness",
]
TRAIN = [
    "train/loss",
    "train/reconstruction",
    "train/kl",
    "train/invariance",
    "train/baseline/loss",
    "train/baseline/reconstruction",
    "train/baseline/kl",
    "train/loss_by_type/azimuth",
    "train/loss_by_type/elevation",
    "train/loss_by_type/intrinsic",
    "train/loss_by_type/light",
]
EPOCHS, STEPS_PER_EPOCH, LOG_EVERY = 15, 250, 25


def stage_metrics(stage: str) -> list[str]:
    """Every metric a validation or test logs, for DC-IGN and the baseline."""
    names = [f"{family}/{factor}" for family in PER_FACTOR for factor in FACTORS]
    names += [f"equivariance/{factor}" for factor in FACTORS if factor != "intrinsic"]
    names += SCALARS
    return [f"{stage}/{prefix}{name}" for prefix in ("", "baseline/") for name in names]


def write_metrics(path: Path, rng: random.Random) -> None:
    """A CSV log laid out as Lightning's CSV logger writes a default run's."""
    val, test = stage_metrics("val"), stage_metrics("test")
    header = ["epoch", "step", *TRAIN, *val, *test]
    rows = []
    for epoch in range(EPOCHS):
        for step in range(epoch * STEPS_PER_EPOCH, (epoch + 1) * STEPS_PER_EPOCH, LOG_EVERY):
            rows.append({"epoch": epoch, "step": step, **{k: rng.random() for k in TRAIN}})
        last = (epoch + 1) * STEPS_PER_EPOCH - 1
        rows.append({"epoch": epoch, "step": last, **{k: rng.random() for k in val}})
    rows.append(
        {"epoch": EPOCHS - 1, "step": EPOCHS * STEPS_PER_EPOCH, **{k: rng.random() for k in test}}
    )
    path.parent.mkdir(parents=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, header)
        writer.writeheader()
        writer.writerows(rows)


def write_sweep(directory: Path, jobs: int, overrides: Sequence[str], seed: int) -> None:
    """``jobs`` job directories of a weight x ratio x seed sweep, as a multirun leaves them."""
    with initialize_config_dir(config_dir=str(common.CONF), version_base="1.3"):
        composed = compose("train", overrides=list(overrides), return_hydra_config=True)
    hydra = composed.hydra
    config = OmegaConf.masked_copy(composed, [k for k in composed if k != "hydra"])
    rng = random.Random(seed)
    grid = itertools.product(range(jobs), WEIGHTS, RATIOS)  # seeds vary slowest
    for number, (run_seed, weight, ratio) in enumerate(itertools.islice(grid, jobs)):
        job = directory / str(number)
        swept = [
            f"model.objective.invariance_weight={weight}",
            f"dataset.ratio.intrinsic={ratio}",
            f"seed={run_seed}",
        ]
        OmegaConf.update(config, "seed", run_seed)
        OmegaConf.update(hydra, "job.num", number, force_add=True)
        (job / ".hydra").mkdir(parents=True)
        OmegaConf.save(config, job / ".hydra" / "config.yaml")
        OmegaConf.save(OmegaConf.create({"hydra": hydra}), job / ".hydra" / "hydra.yaml")
        OmegaConf.save(OmegaConf.create([*overrides, *swept]), job / ".hydra" / "overrides.yaml")
        write_status(job, JobEnd(FINISHED, minutes=3.5 + rng.random(), objective=rng.random()))
        write_metrics(job / "csv" / "metrics.csv", rng)


def timed_parts(directory: Path) -> dict[str, float]:
    """Seconds of each part of a summary without W&B: reading, table, plots, report."""
    times = [time.perf_counter()]
    sweep = read_sweep(directory)
    times.append(time.perf_counter())
    table = summary_table(sweep)
    write_csv(table, directory / SUMMARY_CSV)
    times.append(time.perf_counter())
    plots = draw_plots(sweep, directory / "plots")
    times.append(time.perf_counter())
    write_markdown(sweep, table, plots, directory / SUMMARY_MD)
    times.append(time.perf_counter())
    parts = ("read the job directories", "table (summary.csv)", "plots", "report (summary.md)")
    seconds = dict(zip(parts, (b - a for a, b in itertools.pairwise(times)), strict=True))
    return {**seconds, "total": times[-1] - times[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_arguments(parser)
    parser.add_argument("--jobs", type=int, default=100, help="job directories in the sweep")
    parser.add_argument("--rounds", type=int, default=5, help="timed summaries (median)")
    parser.add_argument("--dir", type=Path, help="write the sweep here and keep it (a new dir)")
    parser.add_argument("--no-wandb", action="store_true", help="time the summary without W&B only")
    args = parser.parse_args()
    if args.quick:
        args.jobs, args.rounds = 6, 1
    common.start(args.threads, args.seed, args.allocator)
    with tempfile.TemporaryDirectory(prefix="sweep_summary-") as tmp:
        sweep = args.dir or Path(tmp) / "multirun" / "train" / "benchmark"
        write_sweep(sweep, args.jobs, args.override, args.seed)
        rounds = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            summarize(sweep, wandb=False)
            rounds.append(time.perf_counter() - start)
        parts = timed_parts(sweep)
        # The first W&B run of a process imports W&B; a multirun's jobs have done so already.
        wandb_seconds, runs = [math.nan, math.nan], []
        for index in range(0 if args.no_wandb else 2):
            start = time.perf_counter()
            runs.append(summarize(sweep, wandb=True).wandb_run)
            wandb_seconds[index] = time.perf_counter() - start
    median = statistics.median(rounds)
    common.print_table(
        f"Summary of a sweep of {args.jobs} jobs (median of {args.rounds} rounds)",
        ["part", "seconds"],
        [
            *[[name, seconds] for name, seconds in parts.items()],
            ["summarize (no W&B), median", median],
            ["summarize with the offline W&B run, W&B imported first", wandb_seconds[0]],
            ["summarize with the offline W&B run, W&B already imported", wandb_seconds[1]],
        ],
    )
    common.write_json(
        args.out,
        {
            "benchmark": "sweep_summary",
            "quick": args.quick,
            "machine": common.machine_info(args.allocator),
            "jobs": args.jobs,
            "rounds": rounds,
            "median_seconds": median,
            "parts_seconds": parts,
            "with_wandb_seconds": {
                "importing_wandb": wandb_seconds[0],
                "imported": wandb_seconds[1],
            },
            "wandb_runs_written": sum(run is not None for run in runs),
        },
    )


if __name__ == "__main__":
    main()
