"""What the library's training step costs beyond a bare PyTorch loop of the same networks.

DC-IGN's step is the networks' forward and backward plus clamping, the invariance term, two
optimizers, per-type loss logging and Lightning's loop. The networks' arithmetic is the same
as plain SGVB, so anything above a bare loop is overhead the library adds. This script trains
the real ``DCIGN`` LightningModule through a real ``pl.Trainer.fit`` (logger on, progress bar
off, in-memory batches so data loading is not measured) and, between its timed blocks of steps,
runs a bare SGVB loop of the same encoder/decoder (same initial weights, same tensors): rounds
alternate ABAB... in one process with fixed threads, warm-up excluded, and each ratio is the
median of the round-by-round time ratios.

Targets: DC-IGN without the baseline within 5% of the bare loop's time per image; with the
co-trained baseline (``model.baseline=true``, two networks) within 5% of twice the bare loop's.

    python benchmarks/step_overhead.py --out step_overhead.json
    python benchmarks/step_overhead.py --presets small --logger default   # W&B offline + CSV
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import logging
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import common
import pytorch_lightning as pl
import torch
from common import Schedule
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset

from dcign.batch import GroupedBatch
from dcign.model.module import DCIGN
from dcign.run.loggers import build_loggers
from dcign.run.training import build, build_data, build_model, finish_loggers

log = logging.getLogger("step_overhead")

TARGET = 1.05  # time per image / reference time per image
NO_BASELINE = {"baseline": None}


# The paper preset takes seconds per step on a CPU, so it gets single-step blocks.
SCHEDULES = {"small": Schedule(10, 20, 9), "paper": Schedule(1, 1, 3)}
QUICK_SCHEDULES = {"small": Schedule(2, 3, 2), "paper": Schedule(1, 1, 2)}


class _Repeat(Dataset):
    """``length`` items cycling through a few in-memory batches (a loader Lightning can fit on)."""

    def __init__(self, batches: Sequence[GroupedBatch], length: int) -> None:
        self.batches = batches
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> GroupedBatch:
        return self.batches[index % len(self.batches)]


class LibraryObjective:
    """The module's own losses (``DCIGN.network_losses``: DC-IGN, plus the baseline's)
    stepped by a plain loop, without Lightning.

    Splits the overhead in two: objective (clamping, invariance term, loss parts) over the bare
    loop, and Lightning's loop, hooks and logging over this.
    """

    def __init__(
        self, cfg: DictConfig, state: Mapping[str, torch.Tensor], baseline: bool = False
    ) -> None:
        self.model: DCIGN = build_model(cfg, build_data(cfg), **({} if baseline else NO_BASELINE))
        for network in self.model.networks.values():
            network.load_state_dict(state)
        self.model.train()
        self.optimizer = self.model.configure_optimizers()["optimizer"]

    def step(self, batch: GroupedBatch) -> None:
        loss = sum(parts.total for parts in self.model.network_losses(batch).values())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def run(self, batches: Iterator[GroupedBatch], steps: int) -> float:
        return common.timed_steps(self.step, batches, steps)


class Interleaver(pl.Callback):
    """Times the fit in blocks of ``steps`` batches and runs the reference loops between blocks.

    A block is the time from one ``on_train_batch_start`` to the one ``steps`` batches later,
    so it holds everything Lightning does per step (fetching the batch, hooks, the training
    step, logging). The fit must run :attr:`batches` batches: warm-up, the timed blocks, and
    one more whose start closes the last block.
    """

    def __init__(self, schedule: Schedule, references: Mapping[str, Callable[[], float]]) -> None:
        self.schedule = schedule
        self.references = references
        self.samples: dict[str, list[float]] = {"lightning": []}
        self.samples.update({name: [] for name in references})
        self._begin: float | None = None

    @property
    def batches(self) -> int:
        return self.schedule.warmup + self.schedule.rounds * self.schedule.steps + 1

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        offset = batch_idx - self.schedule.warmup
        if offset < 0 or offset % self.schedule.steps:
            return
        now = time.perf_counter()
        if self._begin is not None:
            self.samples["lightning"].append(now - self._begin)
        self._begin = None
        if offset // self.schedule.steps < self.schedule.rounds:
            for name, measure in self.references.items():
                self.samples[name].append(measure())
            self._begin = time.perf_counter()


def fit(cfg: DictConfig, model: DCIGN, batches: Sequence[GroupedBatch], timer: Interleaver) -> None:
    """``trainer.fit`` as ``dcign.run.training.train`` builds it, on the CPU, for a fixed number of
    steps: the configured trainer and logger, minus what is not part of a training step
    (progress bar, model summary, checkpoints, validation)."""
    loader = DataLoader(_Repeat(batches, timer.batches), batch_size=None)
    loggers = build_loggers(cfg.get("logger"))
    trainer: pl.Trainer = build(
        cfg.trainer,
        accelerator="cpu",
        devices=1,
        num_nodes=1,
        strategy="auto",
        max_epochs=1,
        max_steps=-1,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[timer],
        logger=loggers or False,
    )
    trainer.fit(model, train_dataloaders=loader)
    finish_loggers(trainer.loggers)


def measure_preset(name: str, cfg: DictConfig, schedule: Schedule, seed: int) -> dict[str, Any]:
    """Both fits of one preset (DC-IGN alone, then with the baseline), each interleaved with
    the bare loop, and the ratios against the targets."""
    arch = common.architecture(cfg.model)
    per_batch = common.images_per_batch(cfg)
    batches = common.synthetic_batches(cfg, count=8, seed=seed)
    fits: dict[str, dict[str, list[float]]] = {}
    for baseline in (False, True):
        pl.seed_everything(seed, verbose=False)
        model: DCIGN = build_model(cfg, build_data(cfg), **({} if baseline else NO_BASELINE))
        state = model.dcign.state_dict()
        bare = common.BareSGVB(
            arch,
            cfg.model.optimizer,
            state,
            channels_last=bool(cfg.runtime.channels_last),
        )
        runners: dict[str, Callable[[Iterator[GroupedBatch], int], float]] = {"bare": bare.run}
        if not baseline:
            runners["objective"] = LibraryObjective(cfg, state).run
        references = {}
        for key, run in runners.items():
            cycle = itertools.cycle(batches)
            run(cycle, schedule.warmup)
            references[key] = _block(run, cycle, schedule.steps)
        timer = Interleaver(schedule, references)
        label = "with_baseline" if baseline else "dcign_only"
        log.info("%s: fitting %s (%d batches of %d images)", name, label, timer.batches, per_batch)
        fit(cfg, model, batches, timer)
        fits[label] = timer.samples

    def rate(seconds: list[float]) -> dict[str, Any]:
        return common.summary([schedule.steps * per_batch / s for s in seconds])

    only, both = fits["dcign_only"], fits["with_baseline"]
    pairs = {
        "objective_over_bare": (only["objective"], only["bare"]),
        "dcign_over_bare": (only["lightning"], only["bare"]),
        "with_baseline_over_2x_bare": (both["lightning"], [2 * s for s in both["bare"]]),
    }
    ratios = {key: common.paired_ratio(*pair) for key, pair in pairs.items()}
    intervals = {key: common.paired_ratio_interval(*pair) for key, pair in pairs.items()}
    return {
        "architecture": dataclasses.asdict(arch),
        "images_per_batch": per_batch,
        "groups_per_batch": int(cfg.dataset.groups_per_batch),
        "group_size": int(cfg.dataset.group_size),
        "schedule": schedule._asdict(),
        "images_per_second": {
            "dcign_only": {key: rate(value) for key, value in only.items()},
            "with_baseline": {key: rate(value) for key, value in both.items()},
        },
        "block_seconds": fits,
        "ratios": ratios,
        "ratio_intervals_90": intervals,
        "targets": {
            "dcign_over_bare": TARGET,
            "with_baseline_over_2x_bare": TARGET,
        },
        "met": {
            "dcign_over_bare": ratios["dcign_over_bare"] <= TARGET,
            "with_baseline_over_2x_bare": ratios["with_baseline_over_2x_bare"] <= TARGET,
        },
    }


def _block(
    run: Callable[[Iterator[GroupedBatch], int], float], cycle: Iterator[GroupedBatch], steps: int
) -> Callable[[], float]:
    """A measure bound to this runner and its batches (a lambda in the loop would see only the
    last ones)."""
    return lambda: run(cycle, steps)


def table_rows(name: str, result: dict[str, Any]) -> list[list[Any]]:
    """One row per variant: images/s (median of rounds), ms per step, ratio with its 90%
    bootstrap interval over rounds, target."""
    per_batch = result["images_per_batch"]
    rows = []
    variants = (
        ("dcign_only", "bare", "bare SGVB loop (reference)", None, None),
        ("dcign_only", "objective", "DC-IGN objective, plain loop", "objective_over_bare", None),
        ("dcign_only", "lightning", "Lightning fit, DC-IGN only", "dcign_over_bare", TARGET),
        ("with_baseline", "bare", "bare SGVB loop (reference)", None, None),
        (
            "with_baseline",
            "lightning",
            "Lightning fit, DC-IGN + baseline",
            "with_baseline_over_2x_bare",
            TARGET,
        ),
    )
    for fit_name, key, label, ratio_key, target in variants:
        rate = result["images_per_second"][fit_name][key]["median"]
        ratio = result["ratios"][ratio_key] if ratio_key else 1.0
        low, high = result["ratio_intervals_90"][ratio_key] if ratio_key else (1.0, 1.0)
        reference = "2x bare" if fit_name == "with_baseline" and ratio_key else "bare"
        rows.append(
            [
                name,
                label,
                rate,
                1e3 * per_batch / rate,
                ratio,
                f"{low:.3f}-{high:.3f}",
                reference,
                f"<= {target}" if target else "",
                (ratio <= target) if target else "",
            ]
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_arguments(parser)
    parser.add_argument("--presets", nargs="+", default=["small", "paper"], choices=common.PRESETS)
    parser.add_argument(
        "--logger",
        default="csv",
        help="conf/logger group for the fit: csv (default), default (W&B offline + CSV), none",
    )
    common.add_schedule_arguments(parser)
    args = parser.parse_args()
    common.start(args.threads, args.seed, args.allocator)

    results: dict[str, Any] = {}
    rows: list[list[Any]] = []
    with tempfile.TemporaryDirectory(prefix="step_overhead-") as tmp:
        for name in args.presets:
            overrides = [
                *common.preset_overrides(name, args.quick),
                f"logger={args.logger}",
                # The bare loop computes in fp32, so the library does too unless asked
                # otherwise (the default precision is bf16 where the CPU has it natively).
                "trainer.precision=32-true",
                *args.override,
            ]
            cfg = common.compose_config(overrides, Path(tmp) / name)
            schedule = common.schedule(args, SCHEDULES[name], QUICK_SCHEDULES[name])
            result = measure_preset(name, cfg, schedule, args.seed)
            result["overrides"] = overrides
            results[name] = result
            rows += table_rows(name, result)
    threads_after = torch.get_num_threads()
    common.print_table(
        f"Training step vs bare SGVB loop ({args.threads} threads, median of rounds)",
        [
            "preset",
            "variant",
            "images/s",
            "ms/step",
            "time ratio",
            "90% interval",
            "vs",
            "target",
            "met",
        ],
        rows,
    )
    common.write_json(
        args.out,
        {
            "benchmark": "step_overhead",
            "quick": args.quick,
            "logger": args.logger,
            "machine": common.machine_info(args.allocator),
            "threads_after_fit": threads_after,
            "presets": results,
        },
    )


if __name__ == "__main__":
    main()
