"""What keeping freed memory in the process (``retain_cpu_memory``, the default) buys on CPU.

The allocator setting is process-wide and cannot be undone inside a process, so the two
settings run in separate child processes, alternated (default, retain, default, retain, ...)
so that drifts of a shared machine hit both. Each child times the bare SGVB step and the
library's DC-IGN objective step, alone and with the co-trained baseline
(``step_overhead.LibraryObjective``) on in-memory batches, and
counts the minor page faults per step: the cost the setting removes.

    python benchmarks/allocator.py --out allocator.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import common
from common import Schedule
from step_overhead import LibraryObjective

from dcign.run.training import build_data, build_model

log = logging.getLogger("allocator")

SETTINGS = ("default", "retain")
SCHEDULES = {"small": Schedule(5, 20, 4), "paper": Schedule(1, 1, 2)}
QUICK_SCHEDULES = {"small": Schedule(1, 2, 2), "paper": Schedule(1, 1, 2)}


def page_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def measure_child(args: argparse.Namespace) -> dict[str, Any]:
    """In this process (allocator already set by ``common.start``): ms and page faults per step
    of both loops, over ``rounds`` alternating blocks."""
    with tempfile.TemporaryDirectory(prefix="allocator-") as tmp:
        overrides = [*common.preset_overrides(args.preset, args.quick), *args.override]
        cfg = common.compose_config(overrides, Path(tmp))
    schedule = common.schedule(args, SCHEDULES[args.preset], QUICK_SCHEDULES[args.preset])
    state = build_model(cfg, build_data(cfg), baseline=None).dcign.state_dict()
    loops = {
        "bare": common.BareSGVB(
            common.architecture(cfg.model),
            cfg.model.optimizer,
            state,
            channels_last=bool(cfg.runtime.channels_last),
        ).run,
        "objective": LibraryObjective(cfg, state).run,
        "objective_and_baseline": LibraryObjective(cfg, state, baseline=True).run,
    }
    batches = itertools.cycle(common.synthetic_batches(cfg, count=8, seed=args.seed))
    result: dict[str, Any] = {}
    for name, run in loops.items():
        run(batches, schedule.warmup)
        seconds, faults = [], []
        for _ in range(schedule.rounds):
            before = page_faults()
            seconds.append(run(batches, schedule.steps))
            faults.append((page_faults() - before) / schedule.steps)
        result[name] = {
            "ms_per_step": [1000 * s / schedule.steps for s in seconds],
            "page_faults_per_step": faults,
        }
    # ru_maxrss is in KiB on Linux: what keeping freed memory costs.
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def run_child(args: argparse.Namespace, setting: str) -> dict[str, Any]:
    """This script as a child process under ``setting``; its measurements."""
    command = [sys.executable, __file__, "--child", "--allocator", setting]
    command += ["--preset", args.preset, "--threads", str(args.threads), "--seed", str(args.seed)]
    command += ["--quick"] if args.quick else []
    for flag in ("warmup", "steps", "rounds"):
        if getattr(args, flag) is not None:
            command += [f"--{flag}", str(getattr(args, flag))]
    for override in args.override:
        command += ["--override", override]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"child with --allocator {setting} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_arguments(parser)
    common.add_schedule_arguments(parser)
    parser.add_argument("--preset", default="small", choices=common.PRESETS)
    parser.add_argument("--processes", type=int, default=2, help="child processes per setting")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    common.start(args.threads, args.seed, args.allocator)
    if args.child:
        print(json.dumps(measure_child(args)))
        return

    runs: dict[str, list[dict[str, Any]]] = {setting: [] for setting in SETTINGS}
    for index in range(args.processes):
        for setting in SETTINGS:
            log.info("child %d/%d with --allocator %s", index + 1, args.processes, setting)
            runs[setting].append(run_child(args, setting))

    def pooled(setting: str, loop: str, key: str) -> list[float]:
        return [value for run in runs[setting] for value in run[loop][key]]

    rows, results = [], {}
    for loop in ("bare", "objective", "objective_and_baseline"):
        ms = {s: pooled(s, loop, "ms_per_step") for s in SETTINGS}
        faults = {s: pooled(s, loop, "page_faults_per_step") for s in SETTINGS}
        speedup = common.summary(ms["default"])["median"] / common.summary(ms["retain"])["median"]
        results[loop] = {
            "ms_per_step": {s: common.summary(ms[s]) for s in SETTINGS},
            "page_faults_per_step": {s: common.summary(faults[s]) for s in SETTINGS},
            "speedup_of_retain": speedup,
        }
        for setting in SETTINGS:
            rows.append(
                [
                    loop,
                    setting,
                    results[loop]["ms_per_step"][setting]["median"],
                    results[loop]["page_faults_per_step"][setting]["median"],
                    speedup if setting == "retain" else 1.0,
                ]
            )
    for setting in SETTINGS:
        peaks = [run["peak_rss_mib"] for run in runs[setting]]
        results.setdefault("peak_rss_mib", {})[setting] = common.summary(peaks)
        rows.append(["peak RSS (MiB)", setting, results["peak_rss_mib"][setting]["median"], "", ""])
    common.print_table(
        f"CPU allocator, {args.preset} preset ({args.threads} threads, median over processes)",
        ["loop", "allocator", "ms/step", "page faults/step", "speed-up"],
        rows,
    )
    common.write_json(
        args.out,
        {
            "benchmark": "allocator",
            "quick": args.quick,
            "preset": args.preset,
            "machine": common.machine_info("alternating"),
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
