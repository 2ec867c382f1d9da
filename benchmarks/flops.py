"""FLOPs per image of each preset, and how much of the CPU's matmul peak a training step reaches.

A slow step is either a lot of arithmetic or arithmetic done badly (small convolutions, memory
traffic, per-op overhead); the two need different fixes. This script counts, with
``torch.utils.flop_counter.FlopCounterMode`` (matmuls and convolutions; 1 multiply-add = 2
FLOPs), the FLOPs per image of the encoder and decoder forward, of one network's
forward+backward (bare SGVB), and of the library's step as configured (DC-IGN, plus the
baseline unless ``model.baseline=null``). It then times the bare SGVB step against a large float32
``torch.mm`` in alternating rounds (same process, same threads) and reports the achieved FLOP/s
of the step as a fraction of that matmul rate - an empirical peak of this machine, not a
datasheet number.

    python benchmarks/flops.py --out flops.json
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import common
import torch
from common import Schedule
from omegaconf import DictConfig
from torch.utils.flop_counter import FlopCounterMode

from dcign.batch import GroupedBatch
from dcign.model.module import DCIGN
from dcign.run.training import build_data, build_model

log = logging.getLogger("flops")

SCHEDULES = {"small": Schedule(5, 20, 5), "paper": Schedule(1, 1, 3)}
QUICK_SCHEDULES = {"small": Schedule(2, 3, 2), "paper": Schedule(1, 1, 2)}


def count(function: Callable[[], Any]) -> int:
    """FLOPs that ``function`` runs (matmuls and convolutions, forward and backward)."""
    with FlopCounterMode(display=False) as counter:
        function()
    return int(counter.get_total_flops())


def library_step(model: DCIGN, batch: GroupedBatch) -> None:
    """The forward and backward of the module's training step (its optimizers hold no FLOPs
    the counter sees): DC-IGN's loss, plus the baseline's when it has one."""
    total = sum(parts.total for parts in model.network_losses(batch).values())
    total.backward()


def preset_flops(cfg: DictConfig, batch: GroupedBatch, bare: common.BareSGVB) -> dict[str, Any]:
    """FLOPs per image: encoder and decoder forward, bare SGVB step, library step."""
    images = batch.images.shape[0] * batch.images.shape[1]
    x = batch.images.flatten(0, 1)
    with torch.no_grad():
        encoder = count(lambda: bare.net.encoder(x))
        mu, _ = bare.net.encoder(x)
        decoder = count(lambda: bare.net.decoder(mu))
    sgvb = count(lambda: bare.loss(batch.images).backward())
    bare.optimizer.zero_grad(set_to_none=True)
    model: DCIGN = build_model(cfg, build_data(cfg))
    library = count(lambda: library_step(model, batch))
    return {
        "parameters_per_network": sum(p.numel() for p in bare.net.parameters()),
        "baseline": "baseline" in model.comparisons,
        "per_image": {
            "encoder_forward": encoder / images,
            "decoder_forward": decoder / images,
            "forward": (encoder + decoder) / images,
            "forward_backward": sgvb / images,
            "library_step": library / images,
        },
    }


def matmul_rate(size: int, repeats: int) -> Callable[[], float]:
    """A measure of float32 ``torch.mm`` FLOP/s on ``size`` x ``size`` matrices."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator)
    b = torch.randn(size, size, generator=generator)
    out = torch.empty(size, size)
    torch.mm(a, b, out=out)

    def measure() -> float:
        begin = time.perf_counter()
        for _ in range(repeats):
            torch.mm(a, b, out=out)
        return 2.0 * size**3 * repeats / (time.perf_counter() - begin)

    return measure


def measure_preset(
    cfg: DictConfig, schedule: Schedule, peak: Callable[[], float], seed: int
) -> dict[str, Any]:
    """FLOP counts of one preset, then its bare step alternated with the matmul peak."""
    arch = common.architecture(cfg.model)
    batches = common.synthetic_batches(cfg, count=4, seed=seed)
    bare = common.BareSGVB(arch, cfg.model.optimizer, channels_last=bool(cfg.runtime.channels_last))
    result = preset_flops(cfg, batches[0], bare)
    step_flops = result["per_image"]["forward_backward"] * common.images_per_batch(cfg)
    cycle = itertools.cycle(batches)
    bare.run(cycle, schedule.warmup)
    samples = common.alternate(
        {
            "matmul": peak,
            "step": lambda: schedule.steps * step_flops / bare.run(cycle, schedule.steps),
        },
        schedule.rounds,
    )
    achieved = common.summary(samples["step"])
    matmul = common.summary(samples["matmul"])
    result.update(
        architecture=dataclasses.asdict(arch),
        images_per_batch=common.images_per_batch(cfg),
        schedule=schedule._asdict(),
        step_flops_per_second=achieved,
        matmul_flops_per_second=matmul,
        images_per_second=achieved["median"] / result["per_image"]["forward_backward"],
        # A peak is the best the machine did; the step's rate is its typical one.
        fraction_of_peak=achieved["median"] / matmul["max"],
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_arguments(parser)
    parser.add_argument("--presets", nargs="+", default=["small", "paper"], choices=common.PRESETS)
    parser.add_argument("--matmul-size", type=int, help="side of the matmul (2048, quick 512)")
    parser.add_argument("--matmul-repeats", type=int, default=5, help="matmuls per timing")
    common.add_schedule_arguments(parser)
    args = parser.parse_args()
    common.start(args.threads, args.seed, args.allocator)
    size = args.matmul_size or (512 if args.quick else 2048)
    peak = matmul_rate(size, args.matmul_repeats)

    results: dict[str, Any] = {}
    rows = []
    for name in args.presets:
        overrides = [*common.preset_overrides(name, args.quick), *args.override]
        # Nothing here writes to the run directory; it only has to exist in the config.
        cfg = common.compose_config(overrides, Path(tempfile.gettempdir()) / "dcign-flops")
        schedule = common.schedule(args, SCHEDULES[name], QUICK_SCHEDULES[name])
        log.info("%s: counting and timing (%s)", name, schedule)
        result = measure_preset(cfg, schedule, peak, args.seed)
        result["overrides"] = overrides
        results[name] = result
        per_image = result["per_image"]
        rows.append(
            [
                name,
                f"{cfg.dataset.image_size}px",
                result["parameters_per_network"] / 1e6,
                per_image["forward"] / 1e6,
                per_image["forward_backward"] / 1e6,
                per_image["library_step"] / 1e6,
                result["images_per_second"],
                result["step_flops_per_second"]["median"] / 1e9,
                result["matmul_flops_per_second"]["max"] / 1e9,
                100.0 * result["fraction_of_peak"],
            ]
        )
    common.print_table(
        f"FLOPs and achieved FLOP/s ({args.threads} threads; peak: float32 mm {size}x{size})",
        [
            "preset",
            "image",
            "params/net (M)",
            "fwd MFLOP/img",
            "fwd+bwd MFLOP/img",
            "library step MFLOP/img",
            "images/s (bare step)",
            "achieved GFLOP/s",
            "peak GFLOP/s",
            "% of peak",
        ],
        rows,
    )
    common.write_json(
        args.out,
        {
            "benchmark": "flops",
            "quick": args.quick,
            "machine": common.machine_info(args.allocator),
            "matmul": {"size": size, "repeats": args.matmul_repeats, "dtype": "float32"},
            "presets": results,
        },
    )


if __name__ == "__main__":
    main()
