"""Learning quality over seeds: what a configuration learns, chosen on validation identities
and reported on the test identities.

    python benchmarks/quality.py                                  # the default run, 3 seeds
    python benchmarks/quality.py --override dataset=chairs --out chairs.json
    python benchmarks/quality.py --seeds 5 --override model.objective.invariance_weight=10 --jobs 2

For each seed the script runs what a user runs - ``python train.py seed=S <overrides>`` - and
then ``python -m dcign.evaluate`` on the final weights (``last.ckpt``, the model a user gets):
every trained group type gets equal turns, with at least ``--pairs`` (a, b) pairs per factor
on the validation identities and on the test identities (the baseline's latents chosen on
other data: training pairs for validation scores, validation pairs for test scores). It prints
novel-view gain, equivariance R^2, SSIM and identity kept (with its references) per factor for
DC-IGN and the entangled baseline (mean, standard deviation and worst seed), a table per split,
how many seeds left a network collapsed, and the wall time, and writes every number with its
seed to JSON. Compare configurations by the validation table; report the test table.

A single run decides nothing: the spread between seeds of a short run is as large as most
effects worth measuring, which is why defaults are chosen from this table and not from one run.

``--jobs 2`` trains two seeds at once with the cores split between them (the data cache is
rendered once before, and the times then measure a shared machine). ``--quick`` checks the
script on the ``debug=tiny`` preset in about a minute.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from common import ROOT, compose_config, machine_info, print_table, start, write_json

from dcign.run.training import build
from dcign.scoring.network_metrics import COLLAPSED_BELOW

log = logging.getLogger("benchmarks.quality")

# What is trained in every run: the final weights are scored, so no test pass at the end of
# training, and no W&B run per seed.
TRAIN_FIXED = ("test=false", "logger=csv")
QUICK_OVERRIDES = ("debug=tiny",)
QUICK_PAIRS = 6


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="first seed (seeds follow it)")
    parser.add_argument("--pairs", type=int, default=256, help="pairs per factor and split")
    parser.add_argument(
        "--no-val",
        action="store_true",
        help="score the test identities only (by default the validation identities too: "
        "choices are made on validation scores, test scores are what is reported)",
    )
    parser.add_argument(
        "--reuse", action="store_true", help="score runs already trained in --workdir again"
    )
    parser.add_argument("--jobs", type=int, default=1, help="seeds trained at once")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads per run (default: cores / jobs)"
    )
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Hydra override of conf/train.yaml for every seed (repeatable)",
    )
    parser.add_argument(
        "--eval-override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override of python -m dcign.evaluate for every seed, e.g. "
        "+dataset.eval_group_size=20 to score every seed on groups of 20",
    )
    parser.add_argument("--name", default=None, help="label of the configuration in the table")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where runs are written (default outputs/quality/<time>)",
    )
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--quick", action="store_true", help="debug=tiny: checks the script")
    return parser.parse_args(argv)


def seed_list(args: argparse.Namespace) -> list[int]:
    if args.seeds < 1 or args.seed < 0:
        raise SystemExit("--seeds must be >= 1 and --seed >= 0")
    return list(range(args.seed, args.seed + args.seeds))


def run_command(command: Sequence[str], log_path: Path, threads: int) -> float:
    """Run ``command`` from the project root with its output in ``log_path``; its wall time."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "WANDB_MODE": "offline"}
    began = time.perf_counter()
    with log_path.open("w") as output:
        result = subprocess.run(
            command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT, check=False
        )
    if result.returncode != 0:
        tail = log_path.read_text()[-3000:]
        raise RuntimeError(f"{' '.join(command)} failed (exit {result.returncode}):\n{tail}")
    return time.perf_counter() - began


def train_run(overrides: Sequence[str], seed: int, run: Path, threads: int) -> float:
    """``python train.py`` of one seed into ``run`` (no test, CSV logs); its wall time."""
    run.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "train.py",
        *overrides,
        *TRAIN_FIXED,
        f"seed={seed}",
        f"hydra.run.dir={run}",
    ]
    return run_command(command, run / "train.out", threads)


def evaluate_run(
    run: Path, split: str, pairs: int, threads: int, overrides: Sequence[str] = ()
) -> tuple[dict, float]:
    """``python -m dcign.evaluate`` of a run's final weights on ``split``; metrics and seconds."""
    out = run / ("evaluation" if split == "test" else f"evaluation_{split}")
    command = [
        sys.executable,
        "-m",
        "dcign.evaluate",
        f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
        f"split={split}",
        f"pairs={pairs}",
        "scores_preset=null",
        "figures=false",
        *overrides,
        f"hydra.run.dir={out}",
    ]
    seconds = run_command(command, run / f"evaluate_{split}.out", threads)
    return json.loads((out / "metrics.json").read_text())["metrics"], seconds


def train_and_evaluate(
    seed: int,
    overrides: Sequence[str],
    workdir: Path,
    pairs: int,
    threads: int,
    splits: Sequence[str] = ("val", "test"),
    reuse: bool = False,
    eval_overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """One seed: train (or, with ``reuse``, take the run already trained there), then score the
    final weights on each split: ``metrics`` are the test scores, ``val_metrics`` the
    validation scores the configurations are chosen by."""
    run = workdir / f"seed{seed}"
    timing = run / "train_seconds.txt"
    if reuse and timing.is_file() and (run / "checkpoints" / "last.ckpt").is_file():
        train_seconds = float(timing.read_text())
    else:
        train_seconds = train_run(overrides, seed, run, threads)
        timing.write_text(f"{train_seconds}\n")
    result: dict[str, Any] = {"seed": seed, "train_seconds": train_seconds}
    evaluate_seconds = 0.0
    for split in splits:
        metrics, seconds = evaluate_run(run, split, pairs, threads, eval_overrides)
        result["metrics" if split == "test" else f"{split}_metrics"] = metrics
        evaluate_seconds += seconds
    log.info(
        "seed %d: trained in %.0f s, evaluated in %.0f s", seed, train_seconds, evaluate_seconds
    )
    return {**result, "evaluate_seconds": evaluate_seconds}


def prepare_data(overrides: Sequence[str], workdir: Path) -> float:
    """Render or convert the data cache once, before seeds share it; its wall time."""
    cfg = compose_config(overrides, workdir)
    began = time.perf_counter()
    build(cfg.dataset).prepare_data()
    return time.perf_counter() - began


def factors_of(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """The factors with a novel-view gain, in the order the metrics name them."""
    names = [
        key.split("/", 1)[1]
        for key in runs[0]["metrics"]["dcign"]
        if key.startswith("novel_view_gain/")
    ]
    return [name for name in names if name != "intrinsic"]


def spread(values: Sequence[float], worst: str = "min") -> dict[str, float]:
    """Mean, sample standard deviation and worst value (nan entries are left out)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return {"mean": math.nan, "std": math.nan, "worst": math.nan, "n": 0}
    return {
        "mean": statistics.fmean(finite),
        "std": statistics.stdev(finite) if len(finite) > 1 else 0.0,
        "worst": min(finite) if worst == "min" else max(finite),
        "n": len(finite),
    }


# Per-factor metrics summarised over seeds, with their label in the table.
METRICS = {
    "novel_view_gain": "gain",
    "equivariance": "R^2",
    "novel_view_ssim": "SSIM",
    "novel_view_detail": "detail",
    "novel_view_detail_oracle": "detail: recon of truth",
    "identity_kept": "kept",
    "identity_kept_oracle": "kept: recon of truth",
    "identity_kept_source": "kept: source unchanged",
    "identity_kept_other_face": "kept: view from another face",
    "kept_share": "kept / kept by recon",
}


def kept_share(metrics: Mapping[str, float], factor: str) -> float | None:
    """Identity kept by the edit as a share of what the reconstruction of the true view keeps."""
    kept = metrics.get(f"identity_kept/{factor}")
    oracle = metrics.get(f"identity_kept_oracle/{factor}")
    return None if kept is None or not oracle else kept / oracle


def summarise(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per factor and network: gain, R^2 and fidelity over seeds; collapses and times."""
    networks = [name for name in ("dcign", "baseline") if runs[0]["metrics"].get(name)]
    summary: dict[str, Any] = {"factors": {}, "collapsed": {}, "recon_mse": {}}
    for factor in factors_of(runs):
        row: dict[str, Any] = {}
        for network in networks:
            for metric in METRICS:
                values = [
                    kept_share(r["metrics"][network], factor)
                    if metric == "kept_share"
                    else r["metrics"][network].get(f"{metric}/{factor}")
                    for r in runs
                ]
                if any(value is not None for value in values):
                    row[f"{network}/{metric}"] = spread(values)
        if "baseline" in networks:
            ratios = [
                r["metrics"]["dcign"][f"novel_view_gain/{factor}"]
                / max(r["metrics"]["baseline"][f"novel_view_gain/{factor}"], 1e-3)
                for r in runs
            ]
            row["gain_ratio"] = spread(ratios)
        summary["factors"][factor] = row
    for network in networks:
        uses = [r["metrics"][network].get("code_use", math.nan) for r in runs]
        summary["collapsed"][network] = sum(u < COLLAPSED_BELOW for u in uses if math.isfinite(u))
        summary["recon_mse"][network] = spread(
            [r["metrics"][network]["recon_mse"] for r in runs], worst="max"
        )
    summary["train_seconds"] = spread([r["train_seconds"] for r in runs], worst="max")
    return summary


HEADERS = [
    "factor",
    "metric",
    "DC-IGN mean +- sd",
    "worst",
    "baseline mean +- sd",
    "worst",
    "ratio",
]


def table_rows(summary: Mapping[str, Any]) -> list[list[Any]]:
    rows = []
    for factor, row in summary["factors"].items():
        for metric, label in METRICS.items():
            if f"dcign/{metric}" not in row:
                continue
            cells: list[Any] = [factor, label]
            for network in ("dcign", "baseline"):
                stats = row.get(f"{network}/{metric}")
                cells += [_mean_std(stats), stats["worst"]] if stats else ["-", math.nan]
            ratio = row.get("gain_ratio") if metric == "novel_view_gain" else None
            cells.append(ratio["mean"] if ratio else math.nan)
            rows.append(cells)
    return rows


def _mean_std(stats: Mapping[str, float]) -> str:
    return f"{stats['mean']:.3f} +- {stats['std']:.3f}"


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_arguments(argv)
    threads = args.threads or max(1, len(os.sched_getaffinity(0)) // max(1, args.jobs))
    start(threads=threads, seed=args.seed, allocator="retain")
    seeds = seed_list(args)
    overrides = [*QUICK_OVERRIDES, *args.override] if args.quick else list(args.override)
    pairs = QUICK_PAIRS if args.quick else args.pairs
    workdir = args.workdir or ROOT / "outputs" / "quality" / time.strftime("%Y-%m-%d_%H-%M-%S")
    name = args.name or (" ".join(args.override) or "defaults")
    data_seconds = prepare_data(overrides, workdir)
    began = time.perf_counter()
    splits = ("test",) if args.no_val else ("val", "test")
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        runs = list(
            pool.map(
                lambda seed: train_and_evaluate(
                    seed, overrides, workdir, pairs, threads, splits, args.reuse, args.eval_override
                ),
                seeds,
            )
        )
    summary = summarise(runs)
    val_summary = (
        None if args.no_val else summarise([{**r, "metrics": r["val_metrics"]} for r in runs])
    )
    for split, table in (("validation", val_summary), ("test", summary)):
        if table is not None:
            print_table(
                f"{name}: {split} identities, {len(seeds)} seeds ({seeds[0]}..{seeds[-1]}), "
                f">= {pairs} pairs per factor, final weights",
                HEADERS,
                table_rows(table),
            )
    train_time = summary["train_seconds"]
    print(
        f"train time per seed {train_time['mean'] / 60:.1f} min (longest "
        f"{train_time['worst'] / 60:.1f}), data cache {data_seconds:.0f} s; collapsed seeds "
        f"{summary['collapsed']}; recon MSE DC-IGN {summary['recon_mse']['dcign']['mean']:.4f}"
    )
    write_json(
        args.out,
        {
            "benchmark": "quality",
            "name": name,
            "overrides": overrides,
            "eval_overrides": args.eval_override,
            "seeds": seeds,
            "pairs": pairs,
            "jobs": args.jobs,
            "data_seconds": data_seconds,
            "wall_seconds": time.perf_counter() - began,
            "summary": summary,
            "val_summary": val_summary,
            "runs": runs,
            "machine": machine_info("retain"),
        },
    )


if __name__ == "__main__":
    main()
