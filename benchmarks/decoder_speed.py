"""The training step of DC-IGN with the 3D (volume) decoder against the image decoder.

Each variant is the real ``DCIGN`` module built from the config as ``python train.py`` builds it
(the co-trained baseline included, as in the default run; ``--override model.baseline=null``
for DC-IGN alone), stepped on the same in-memory batches (loss of every network, one backward,
Adam). Variants alternate in rounds in one process with fixed threads, warm-up excluded; each
ratio to the image decoder is the median of the round-by-round ratios. The target: a 32x32 run
of the volume decoder at most 3 times the default run's time.

    python benchmarks/decoder_speed.py --out decoder_speed.json
    python benchmarks/decoder_speed.py --override model.baseline=null
    python benchmarks/decoder_speed.py --variant "told, 16 channels" model=dcign3d \
        model.net.volume_channels=16

``--variant NAME OVERRIDE...`` adds a variant of one's own (a larger volume, a wider renderer)
to the same rounds, so that its cost is a ratio measured beside the others, not a time taken on
another day.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import tempfile
from pathlib import Path
from typing import Any

import common
import pytorch_lightning as pl
import torch
from common import Schedule

from dcign.batch import GroupedBatch
from dcign.run.training import build_data, build_model

log = logging.getLogger("decoder_speed")

VARIANTS: dict[str, tuple[str, ...]] = {
    "image": (),
    "volume (learnt)": ("model=dcign3d_learnt",),
    "volume (told)": ("model=dcign3d",),
}
DEFAULT = Schedule(warmup=10, steps=40, rounds=5)
QUICK = Schedule(warmup=1, steps=2, rounds=2)


class Stepper:
    """One variant: its module, an Adam over every network, and the batches it steps on."""

    def __init__(self, overrides: list[str], seed: int, batches: int) -> None:
        cfg = common.compose_config(overrides, Path(tempfile.gettempdir()) / "dcign-decoders")
        pl.seed_everything(seed)
        self.model = build_model(cfg, build_data(cfg))
        self.model.train()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.batches = itertools.cycle(common.synthetic_batches(cfg, batches, seed))
        self.parameters = sum(p.numel() for p in self.model.dcign.parameters())

    def step(self, batch: GroupedBatch) -> None:
        parts = self.model.network_losses(batch)
        total = torch.stack([part.total for part in parts.values()]).sum()
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()

    def run(self, steps: int) -> float:
        return common.timed_steps(self.step, self.batches, steps)


def variants(extra: list[list[str]] | None) -> dict[str, tuple[str, ...]]:
    """The built-in variants and the user's ``--variant NAME OVERRIDE...``, by name."""
    chosen = dict(VARIANTS)
    for name, *overrides in extra or []:
        if name in chosen:
            raise SystemExit(f"--variant {name!r}: that name is taken; use another.")
        if not overrides or any("=" not in item for item in overrides):
            raise SystemExit(
                f"--variant {name!r} needs one or more KEY=VALUE overrides after its name, "
                f"got {overrides}."
            )
        chosen[name] = tuple(overrides)
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_arguments(parser)
    common.add_schedule_arguments(parser)
    parser.add_argument(
        "--variant",
        action="append",
        nargs="+",
        metavar=("NAME", "KEY=VALUE"),
        help="a further variant: its name, then its overrides (repeatable)",
    )
    args = parser.parse_args()
    chosen = variants(args.variant)
    common.start(args.threads, args.seed, args.allocator)
    schedule = common.schedule(args, DEFAULT, QUICK)
    quick = ["debug=tiny"] if args.quick else []
    steppers = {
        name: Stepper([*quick, *overrides, *args.override], args.seed, batches=4)
        for name, overrides in chosen.items()
    }
    for stepper in steppers.values():
        stepper.run(schedule.warmup)
    samples = common.alternate(
        {name: lambda s=stepper: s.run(schedule.steps) for name, stepper in steppers.items()},
        schedule.rounds,
    )
    results: dict[str, Any] = {}
    rows = []
    for name, seconds in samples.items():
        per_step = [1000 * s / schedule.steps for s in seconds]
        ratio = common.paired_ratio(seconds, samples["image"])
        results[name] = {
            "variant_overrides": list(chosen[name]),
            "ms_per_step": common.summary(per_step),
            "ratio_to_image": ratio,
            "dcign_parameters": steppers[name].parameters,
        }
        rows.append(
            [name, steppers[name].parameters / 1e6, common.summary(per_step)["median"], ratio]
        )
    common.print_table(
        f"training step, {args.threads} threads, {schedule.rounds} rounds of {schedule.steps} "
        f"steps, overrides {args.override or 'none'}",
        ["decoder", "DC-IGN M params", "ms / step", "x image"],
        rows,
    )
    common.write_json(
        args.out,
        {
            "benchmark": "decoder_speed",
            "overrides": args.override,
            "schedule": schedule._asdict(),
            "results": results,
            "machine": common.machine_info(args.allocator),
        },
    )


if __name__ == "__main__":
    main()
