"""Whether data can ever hold training up: loader and renderer speed vs. the step's consumption.

Training reads factor-grouped batches from a memory-mapped cache that the renderer fills once
before the first step. Loading must stay far ahead of the step (it runs in the training process
when ``num_workers=0``, so every millisecond it takes is a millisecond the step waits), and a cold
cache must not make start-up longer than a fraction of training. This script measures, in one
process with fixed threads and alternating rounds (medians):

* rendering: ``prepare_data()`` of the configured data set into an empty temporary cache
  (numba compiled beforehand, so this is the renderer's speed, not the compiler's);
* loading: images per second delivered by ``train_dataloader()`` (cached, grouped, collated to
  ``[G, S, C, H, W]``) with ``num_workers`` 0 and 2 (worker start-up excluded);
* consumption: images per second of the bare SGVB training loop of the same preset's networks
  on batches from that loader - the fastest consumer (the library's own step is slower, see
  ``step_overhead.py``), so the ratios below are the conservative ones.

Targets: cached loading (``num_workers=0``) >= 20x the training throughput; rendering >= 5x.

    python benchmarks/data_path.py --out data_path.json
    python benchmarks/data_path.py --override dataset.image_size=64
"""

from __future__ import annotations

import argparse
import itertools
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import common
import numba
from common import Schedule
from omegaconf import DictConfig

from datamodules.cache import open_cache
from datamodules.grouped import GroupedDataModule, GroupedLoader
from dcign.run.training import build

log = logging.getLogger("data_path")

LOAD_TARGET = 20.0  # cached loading / training images per second
RENDER_TARGET = 5.0  # rendering / training images per second
# Training steps: before timing, per block, and rounds of (render, load..., train).
SCHEDULE = Schedule(warmup=5, steps=20, rounds=5)
QUICK_SCHEDULE = Schedule(warmup=2, steps=3, rounds=2)


def datamodule(cfg: DictConfig, cache_dir: Path, **options: Any) -> GroupedDataModule:
    """The configured data set (``cfg.dataset``) with its cache in ``cache_dir``."""
    return build(cfg.dataset, cache_dir=str(cache_dir), **options)


def render_rate(cfg: DictConfig, cache_dir: Path) -> float:
    """Images per second of ``prepare_data()`` into the empty ``cache_dir``."""
    data = datamodule(cfg, cache_dir)
    begin = time.perf_counter()
    data.prepare_data()
    elapsed = time.perf_counter() - begin
    return rendered_images(data) / elapsed


def rendered_images(data: GroupedDataModule) -> int:
    """How many images the data set's cache holds (read from the cache, whatever the source)."""
    images, _, _ = open_cache(data.cache_path)
    return len(images)


def load_rate(loader: GroupedLoader, epoch: int) -> float:
    """Images per second over one epoch of ``loader`` (a new epoch's batches each time)."""
    loader.sampler.set_epoch(epoch)
    images = 0
    begin = time.perf_counter()
    for batch in loader:
        images += batch.images.shape[0] * batch.images.shape[1]
    return images / (time.perf_counter() - begin)


def measures(
    cfg: DictConfig,
    cache: Path,
    tmp: Path,
    workers: Sequence[int],
    batches_per_epoch: int,
    schedule: Schedule,
) -> dict[str, Callable[[], float]]:
    """One callable per measurement, each returning images per second, ready to alternate.

    The cache the loaders read is rendered first, and that render counts as the first render
    sample; later rounds render into fresh directories that are deleted afterwards.
    """
    first = render_rate(cfg, cache)
    log.info("Rendered the cache at %.0f images/s; now alternating rounds", first)
    renders = itertools.count()

    def render() -> float:
        round_ = next(renders)
        if round_ == 0:
            return first
        target = tmp / f"render-{round_}"
        try:
            return render_rate(cfg, target)
        finally:
            shutil.rmtree(target, ignore_errors=True)

    result: dict[str, Callable[[], float]] = {"render": render}
    for count in workers:
        data = datamodule(cfg, cache, num_workers=count, batches_per_epoch=batches_per_epoch)
        data.setup("fit")
        loader = data.train_dataloader()
        load_rate(loader, epoch=0)  # start the workers, touch the pages
        epochs = itertools.count(1)
        result[f"load_workers{count}"] = _epochs(loader, epochs)

    # The training loop steps on real batches of this data set, held in memory.
    data = datamodule(cfg, cache)
    data.setup("fit")
    batches = itertools.cycle(list(itertools.islice(data.train_dataloader(), 8)))
    bare = common.BareSGVB(
        common.architecture(cfg.model),
        cfg.model.optimizer,
        channels_last=bool(cfg.runtime.channels_last),
    )
    bare.run(batches, schedule.warmup)
    per_batch = common.images_per_batch(cfg)
    result["train"] = lambda: schedule.steps * per_batch / bare.run(batches, schedule.steps)
    return result


def _epochs(loader: GroupedLoader, epochs: itertools.count) -> Callable[[], float]:
    """A measure bound to this loader (a lambda in the loop would see only the last one)."""
    return lambda: load_rate(loader, next(epochs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_arguments(parser)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="num_workers")
    parser.add_argument("--batches", type=int, help="batches per loader epoch (500, quick 20)")
    common.add_schedule_arguments(parser)
    args = parser.parse_args()
    args.batches = args.batches or (20 if args.quick else 500)
    schedule = common.schedule(args, SCHEDULE, QUICK_SCHEDULE)
    common.start(args.threads, args.seed, args.allocator)

    # --quick renders a sixth of the identities (two each for val and test, as groups need).
    overrides = [
        *common.preset_overrides("small", args.quick),
        *(["dataset.n_identities=20"] if args.quick else []),
        *args.override,
    ]
    with tempfile.TemporaryDirectory(prefix="data_path-") as name:
        tmp = Path(name)
        cfg = common.compose_config(overrides, tmp / "run", tmp / "cache")
        # Compile (or load) the renderer's numba kernels on a one-identity data set first.
        datamodule(cfg, tmp / "warm-up", n_identities=1).prepare_data()
        samples = common.alternate(
            measures(cfg, tmp / "cache", tmp, args.workers, args.batches, schedule), schedule.rounds
        )
        images = rendered_images(datamodule(cfg, tmp / "cache"))

    rates = {key: common.summary(value) for key, value in samples.items()}
    ratios = {key: common.paired_ratio(value, samples["train"]) for key, value in samples.items()}
    targets = {"load_workers0": LOAD_TARGET, "render": RENDER_TARGET}
    rows = []
    labels = {"render": "render (cold cache, prepare_data)", "train": "training (bare SGVB loop)"}
    for key, rate in rates.items():
        target = targets.get(key)
        label = labels.get(key, f"cached loader, num_workers={key.removeprefix('load_workers')}")
        rows.append(
            [
                label,
                rate["median"],
                ratios[key],
                f">= {target:g}x" if target else "",
                ratios[key] >= target if target else "",
            ]
        )
    common.print_table(
        f"Data path vs training consumption ({args.threads} threads, median of rounds)",
        ["source", "images/s", "x training", "target", "met"],
        rows,
    )
    common.write_json(
        args.out,
        {
            "benchmark": "data_path",
            "quick": args.quick,
            "machine": {
                **common.machine_info(args.allocator),
                "numba_threads": numba.get_num_threads(),
            },
            "overrides": overrides,
            "dataset": {
                "images_rendered": images,
                "image_size": int(cfg.dataset.image_size),
                "supersample": cfg.dataset.get("supersample"),
                "groups_per_batch": int(cfg.dataset.groups_per_batch),
                "group_size": int(cfg.dataset.group_size),
                "batches_per_loader_epoch": args.batches,
            },
            "schedule": schedule._asdict(),
            "images_per_second": rates,
            "over_training": ratios,
            "targets": targets,
            "met": {key: ratios[key] >= target for key, target in targets.items()},
        },
    )


if __name__ == "__main__":
    main()
