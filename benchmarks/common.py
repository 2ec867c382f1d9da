"""Shared pieces of the speed benchmarks: configs, the bare reference loop, timing and output.

The benchmarks compare the library against a bare PyTorch loop and against each other, so they
must agree on what a preset is (the composed Hydra config, never a copy of its numbers), on the
reference loop, and on how a number is taken (fixed threads, fixed seeds, alternating rounds,
medians) and reported (a table on stdout, JSON with the machine it came from). Keeping those in
one place is what makes numbers from different scripts comparable.

Each script puts its own directory first on ``sys.path`` (Python does that for a script), so
``import common`` works when a benchmark is run as ``python benchmarks/<name>.py``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig

from dcign.batch import GroupedBatch
from dcign.model.networks import Architecture, InverseGraphicsNet
from dcign.run.allocator import retain_freed_memory
from dcign.run.training import build_data

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


# A preset is a set of overrides of conf/train.yaml, so the benchmarks measure what
# `python train.py <overrides>` trains, not a copy of its numbers.
PRESETS: dict[str, tuple[str, ...]] = {
    # The defaults: model=small, faces at 32x32, batches of 4 groups x 10 images.
    "small": (),
    # The paper's faces experiment: model=paper (96/64/32 5x5 in, 32/64/96 7x7 out, D=200),
    # 150x150, one group of 20 images per batch.
    "paper": ("experiment=paper_faces",),
}
# --quick shrinks only what makes a preset slow (image and group size), so the code path is the
# same and a check takes seconds.
QUICK_PRESETS: dict[str, tuple[str, ...]] = {
    "small": (),
    "paper": ("experiment=paper_faces", "dataset.image_size=32", "dataset.group_size=2"),
}


def preset_overrides(name: str, quick: bool) -> tuple[str, ...]:
    """The config overrides that select preset ``name`` (shrunk under ``--quick``)."""
    return (QUICK_PRESETS if quick else PRESETS)[name]


# ----------------------------------------------------------------------------- set-up


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every benchmark takes."""
    parser.add_argument(
        "--quick", action="store_true", help="tiny settings: checks that the script works"
    )
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument(
        "--threads",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="torch.set_num_threads (default: the CPUs this process may use)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of weights and data")
    parser.add_argument(
        "--allocator",
        choices=("retain", "default"),
        default="retain",
        help="retain: the library's default (dcign.run.allocator); default: glibc's own thresholds",
    )
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra Hydra override of conf/train.yaml, after the preset's (repeatable)",
    )


class Schedule(NamedTuple):
    """How a measurement is repeated: steps run before timing, steps per timed block, rounds."""

    warmup: int
    steps: int
    rounds: int


def add_schedule_arguments(parser: argparse.ArgumentParser) -> None:
    """``--warmup``, ``--steps`` and ``--rounds``, overriding the script's per-preset defaults."""
    parser.add_argument("--warmup", type=int, help="steps before timing (default per preset)")
    parser.add_argument("--steps", type=int, help="steps per timed block (default per preset)")
    parser.add_argument("--rounds", type=int, help="alternating rounds (default per preset)")


def schedule(args: argparse.Namespace, default: Schedule, quick: Schedule) -> Schedule:
    """The script's default schedule (its quick one under ``--quick``) with the user's overrides."""
    base = quick if args.quick else default
    return Schedule(
        args.warmup if args.warmup is not None else base.warmup,
        args.steps or base.steps,
        args.rounds or base.rounds,
    )


def start(threads: int, seed: int, allocator: str) -> None:
    """Fix threads, seeds and the CPU allocator and quieten the libraries' start-up chatter.

    The thread count is set once, before anything runs, so every variant of a comparison runs
    on the same intra-op pool; Lightning does not change it for a single CPU process. The
    allocator setting is process-wide, so the library and the bare loop it is compared with
    run under the same one (``train.py``'s default, ``retain``, unless asked otherwise).
    """
    if allocator == "retain":
        retain_freed_memory()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for name in ("pytorch_lightning", "lightning", "lightning_fabric", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Expected in a benchmark's short fits on in-memory batches; they would bury the table.
    for message in (
        ".*does not have many workers.*",
        ".*but have no `val_dataloader`.*",
        ".*smaller than the logging interval.*",
        ".*Experiment logs directory .* exists and is not empty.*",
    ):
        warnings.filterwarnings("ignore", message=message)
    torch.set_num_threads(threads)
    pl.seed_everything(seed, workers=True, verbose=False)


def machine_info(allocator: str) -> dict[str, Any]:
    """What a number depends on besides the code: CPUs, threads, allocator, library versions."""
    return {
        "allocator": allocator,
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "processor": platform.processor() or platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pytorch_lightning": pl.__version__,
        "numpy": np.__version__,
        "load_average": os.getloadavg(),
        "glibc": platform.libc_ver()[1] or None,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def compose_config(
    overrides: Sequence[str], output_dir: Path, cache_dir: Path | None = None
) -> DictConfig:
    """``conf/train.yaml`` composed with ``overrides``, as ``tests/conftest.py`` does.

    ``paths.output_dir`` is normally Hydra's run directory, which does not exist outside
    ``@hydra.main``, so it is given here.
    """
    paths = [f"paths.output_dir={output_dir}"]
    if cache_dir is not None:
        paths.append(f"paths.cache_dir={cache_dir}")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=[*overrides, *paths])


def architecture(model: Mapping[str, Any]) -> Architecture:
    """The network sizes a composed ``cfg.model`` asks for (its ``net`` node)."""
    return instantiate(model["net"], _convert_="all")


def images_per_batch(cfg: DictConfig) -> int:
    return int(cfg.dataset.groups_per_batch) * int(cfg.dataset.group_size)


def synthetic_batches(cfg: DictConfig, count: int, seed: int) -> list[GroupedBatch]:
    """``count`` in-memory batches shaped like the datamodule's (``images [G, S, C, H, W]``).

    Pixel values do not change the cost of a step, so uniform noise stands in for rendered
    images; group types are drawn with the configured ratio, as the sampler draws them. This
    keeps data loading (measured by ``data_path.py``) out of the step measurements and lets the
    paper preset run without rendering its 150x150 data set.
    """
    datamodule = build_data(cfg)  # its layout and ratio, without rendering anything
    names = datamodule.group_types
    probabilities = datamodule.type_probabilities
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    shape = (
        int(cfg.dataset.groups_per_batch),
        int(cfg.dataset.group_size),
        int(cfg.dataset.channels),
        int(cfg.dataset.image_size),
        int(cfg.dataset.image_size),
    )
    batches = []
    for _ in range(count):
        types = rng.choice(len(names), size=shape[0], p=probabilities)
        batches.append(
            GroupedBatch(
                images=torch.rand(shape, generator=generator),
                factors=torch.zeros(*shape[:2], len(names)),
                identity=torch.zeros(shape[:2], dtype=torch.int64),
                group_type=torch.as_tensor(types, dtype=torch.int64),
            )
        )
    return batches


# ----------------------------------------------------------------------------- reference loop


class BareSGVB:
    """The reference: the same encoder/decoder trained with plain SGVB in a bare PyTorch loop.

    Reparameterise, Bernoulli reconstruction (BCE with logits, summed over pixels), KL to
    N(0, I), mean over images, Adam step - no Lightning, no clamping, no logging. Whatever the
    library's step costs beyond this is overhead. The optimizer's hyper-parameters and the
    convolutions' memory layout (``channels_last``) come from the config so that both sides do
    the same update with the same kernels.
    """

    def __init__(
        self,
        arch: Architecture,
        optimizer: Mapping[str, Any],
        state: Mapping[str, torch.Tensor] | None = None,
        channels_last: bool = False,
    ) -> None:
        if optimizer.get("_target_") != "torch.optim.Adam":
            raise ValueError("the reference loop uses Adam; run the benchmarks with adam")
        self.net = InverseGraphicsNet(arch)
        if state is not None:
            self.net.load_state_dict(state)
        if channels_last:
            self.net.to(memory_format=torch.channels_last)
        self.net.train()
        self.optimizer = torch.optim.Adam(
            self.net.parameters(),
            lr=float(optimizer.get("lr", 5e-4)),
            betas=tuple(float(b) for b in optimizer.get("betas", (0.9, 0.99))),
            eps=float(optimizer.get("eps", 1e-8)),
        )

    def loss(self, images: torch.Tensor) -> torch.Tensor:
        """Negative ELBO per image, averaged over the batch (images ``[..., C, H, W]``)."""
        x = images.flatten(0, images.dim() - 4)
        mu, logvar = self.net.encoder(x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        logits = self.net.decoder(z)
        reconstruction = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
        kl = 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum()
        return (reconstruction + kl) / x.shape[0]

    def step(self, batch: GroupedBatch) -> None:
        loss = self.loss(batch.images)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def run(self, batches: Iterator[GroupedBatch], steps: int) -> float:
        """Seconds for ``steps`` steps on the next batches of ``batches``."""
        return timed_steps(self.step, batches, steps)


def timed_steps(
    step: Callable[[GroupedBatch], Any], batches: Iterator[GroupedBatch], steps: int
) -> float:
    """Seconds for ``steps`` calls of ``step``, each on the next batch of ``batches``.

    Pass an ``itertools.cycle`` over a few in-memory batches: consecutive blocks then see
    consecutive batches instead of repeating the first ones.
    """
    with torch.enable_grad():
        begin = time.perf_counter()
        for _ in range(steps):
            step(next(batches))
        return time.perf_counter() - begin


# ----------------------------------------------------------------------------- statistics


def alternate(measures: Mapping[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Run every measure once per round, in order (ABCABC...), and collect the samples.

    Alternating spreads slow drifts of a shared machine (other jobs, clock changes) over all
    variants instead of letting them land on whichever ran last.
    """
    samples: dict[str, list[float]] = {name: [] for name in measures}
    for _ in range(rounds):
        for name, measure in measures.items():
            samples[name].append(measure())
    return samples


def summary(samples: Sequence[float]) -> dict[str, Any]:
    """Median (the reported number), spread and the raw samples."""
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "samples": list(samples),
    }


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> float:
    """Median of round-by-round ratios: each pair ran back to back, so drift cancels."""
    return statistics.median(a / b for a, b in zip(numerator, denominator, strict=True))


def paired_ratio_interval(
    numerator: Sequence[float],
    denominator: Sequence[float],
    level: float = 0.9,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Bootstrap interval of :func:`paired_ratio` (percentile method, rounds resampled).

    On a shared machine one round can run 10% slower than the next; the interval says whether
    a few percent between two variants (a 1.05 target, say) is resolved by the rounds taken or
    needs more of them (``--rounds``).
    """
    ratios = np.array([a / b for a, b in zip(numerator, denominator, strict=True)])
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(ratios), size=(resamples, len(ratios)))
    medians = np.median(ratios[picks], axis=1)
    tail = (1 - level) / 2
    return float(np.quantile(medians, tail)), float(np.quantile(medians, 1 - tail))


# ----------------------------------------------------------------------------- output


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A Markdown table on stdout (pastes straight into docs/performance.md)."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    print(f"\n{title}\n")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    print()


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "-"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.3f}"
    return str(value)


def write_json(path: Path | None, payload: Mapping[str, Any]) -> None:
    """Write ``payload`` as JSON (non-finite floats become null, which JSON can represent)."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_finite(payload), indent=2, default=str)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text + "\n")
    tmp.replace(path)
    logging.getLogger("benchmarks").info("Wrote %s", path)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
