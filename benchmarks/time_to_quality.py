"""Wall-clock minutes until the default faces run re-renders and encodes azimuth well.

Speed only matters through what it buys: how soon a run is good. This script trains the default
configuration (``conf/train.yaml``: procedural faces, small preset, DC-IGN + baseline) at
64x64 (``--size``) through the library's own entry point, ``dcign.run.training.train`` on the
composed Hydra config (as ``python train.py`` and the tests run it), and records after every
validation epoch the wall-clock minutes since start (data rendering included) with

* ``val/novel_view_gain/azimuth``: editing DC-IGN's azimuth latent, how much of the way from the
  unchanged image to the true new view the decoded image goes (1 = as good as the true view);
* ``val/equivariance/azimuth``: R^2 of a linear fit from the azimuth latent to the true azimuth.

It stops at the first validation where gain > 0.6 and equivariance > 0.9, or before an epoch
that would end past the time budget (``--minutes``), and writes JSON and a PNG of both metrics
against minutes (the baseline's, logged by the same run, in lighter colours). The run directory
keeps everything a normal run keeps (checkpoints, CSV log, figures); the records so far are in
``<run dir>/time_to_quality_records.json`` after every validation, so a killed run still has
its curve.

    python benchmarks/time_to_quality.py --minutes 120 --out ttq.json
    python benchmarks/time_to_quality.py --size 32 --override model.objective.invariance_weight=0.1
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import common
import pytorch_lightning as pl
from omegaconf import DictConfig, open_dict
from PIL import Image, ImageDraw

from datamodules.cache import is_complete
from dcign import plots
from dcign.run.training import build, train

log = logging.getLogger("time_to_quality")

GAIN = "val/novel_view_gain/azimuth"
EQUIVARIANCE = "val/equivariance/azimuth"
RECORDED = (
    GAIN,
    EQUIVARIANCE,
    "val/baseline/novel_view_gain/azimuth",
    "val/baseline/equivariance/azimuth",
    "val/recon_mse",
    "val/loss",
)
RECORDS_FILE = "time_to_quality_records.json"


class QualityTracker(pl.Callback):
    """Records the metrics after each validation and stops the run at the target or the budget.

    Built by ``dcign.run.training`` from a ``callbacks:`` entry like any configured callback, so the
    run is the library's normal one; it reports through ``records`` (a JSON file) because the
    training function owns the instance. ``started`` is ``time.monotonic()`` when the script
    began the run, so rendering and set-up count towards the minutes.
    """

    def __init__(
        self,
        records: str,
        started: float,
        minutes: float,
        gain: float,
        equivariance: float,
    ) -> None:
        self.path = Path(records)
        self.started = started
        self.budget = minutes
        self.gain = gain
        self.equivariance = equivariance
        self.records: list[dict[str, Any]] = []
        self._last = started

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        now = time.monotonic()
        metrics = trainer.callback_metrics
        record: dict[str, Any] = {
            "epochs": trainer.current_epoch + 1,
            "minutes": (now - self.started) / 60.0,
        }
        record.update({key: float(metrics[key]) for key in RECORDED if key in metrics})
        reached = (
            record.get(GAIN, math.nan) > self.gain
            and record.get(EQUIVARIANCE, math.nan) > self.equivariance
        )
        # Stop before an epoch that would end past the budget (epochs take about equally long).
        next_epoch_end = record["minutes"] + (now - self._last) / 60.0
        self._last = now
        if reached or next_epoch_end > self.budget:
            record["stop"] = "target" if reached else "budget"
            trainer.should_stop = True
        self.records.append(record)
        common.write_json(self.path, {"records": self.records})
        log.info(
            "epoch %d, %.1f min: gain %.3f, equivariance %.3f%s",
            record["epochs"],
            record["minutes"],
            record.get(GAIN, math.nan),
            record.get(EQUIVARIANCE, math.nan),
            f" -> stop ({record['stop']})" if "stop" in record else "",
        )


def configure(
    args: argparse.Namespace, run_dir: Path, cache_dir: Path | None
) -> tuple[DictConfig, list[str]]:
    """The default training config at ``--size`` with the tracker added as a callback, and the
    overrides that made it."""
    overrides = [
        f"seed={args.seed}",
        f"dataset.image_size={args.size}",
        "test=false",
        # --quick: the shipped two-epoch tiny run (conf/debug/tiny.yaml), a check in seconds.
        *(("debug=tiny",) if args.quick else ("trainer.max_epochs=-1",)),
        "trainer.enable_progress_bar=false",
        f"logger={args.logger}",
        f"retain_cpu_memory={args.allocator == 'retain'}",
        *args.override,
    ]
    cfg = common.compose_config(overrides, run_dir, cache_dir)
    with open_dict(cfg):
        if cfg.get("callbacks") is None:
            cfg.callbacks = {}
        cfg.callbacks.time_to_quality = {
            "_target_": f"{QualityTracker.__module__}.{QualityTracker.__qualname__}",
            "records": str(run_dir / RECORDS_FILE),
            "started": time.monotonic(),
            "minutes": args.minutes,
            "gain": args.gain,
            "equivariance": args.equivariance,
        }
    return cfg, overrides


# ----------------------------------------------------------------------------- the PNG


def plot(
    records: Sequence[dict[str, Any]], path: Path, thresholds: dict[str, float], title: str
) -> None:
    """Metric vs. minutes as a PNG, with PIL only (matplotlib is not a dependency)."""
    width, height, left, right, top, bottom = 1000, 540, 70, 300, 50, 60
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = plots.font(14)
    series = [
        (GAIN, "DC-IGN gain", (31, 119, 180), 3),
        (EQUIVARIANCE, "DC-IGN equivariance", (255, 127, 14), 3),
        ("val/baseline/novel_view_gain/azimuth", "baseline gain", (158, 202, 225), 2),
        ("val/baseline/equivariance/azimuth", "baseline equivariance", (253, 208, 162), 2),
    ]
    minutes = [r["minutes"] for r in records]
    values = [r[k] for r in records for k, *_ in series if math.isfinite(r.get(k, math.nan))]
    x_max = max([*minutes, 1e-3])
    y_min, y_max = min([0.0, *values]), max([1.0, *values])

    def to_xy(x: float, y: float) -> tuple[float, float]:
        return (
            left + (width - left - right) * x / x_max,
            height - bottom - (height - top - bottom) * (y - y_min) / (y_max - y_min),
        )

    for y in plots.ticks(y_min, y_max):
        start, end = to_xy(0, y), to_xy(x_max, y)
        draw.line([start, end], fill=(230, 230, 230))
        draw.text((left - 8, start[1]), f"{y:g}", fill="black", font=font, anchor="rm")
    for x in plots.ticks(0.0, x_max):
        position = to_xy(x, y_min)
        draw.line([position, to_xy(x, y_max)], fill=(240, 240, 240))
        draw.text((position[0], position[1] + 8), f"{x:g}", fill="black", font=font, anchor="mt")
    draw.rectangle([to_xy(0, y_max), to_xy(x_max, y_min)], outline="black")
    draw.text(((left + width - right) / 2, height - 20), "wall-clock minutes", "black", font, "mm")
    draw.text((left, 20), f"azimuth, {title}", fill="black", font=font, anchor="lm")

    legend_y = top
    for (key, label, colour, line_width), threshold_key in zip(
        series, (GAIN, EQUIVARIANCE, None, None), strict=True
    ):
        points = [
            to_xy(r["minutes"], r[key]) for r in records if math.isfinite(r.get(key, math.nan))
        ]
        if len(points) > 1:
            draw.line(points, fill=colour, width=line_width)
        for x, y in points:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        if threshold_key is not None:
            _dashed(draw, to_xy(0, thresholds[key]), to_xy(x_max, thresholds[key]), colour)
            label = f"{label} (target > {thresholds[key]:g})"
        draw.line([(width - right + 15, legend_y), (width - right + 40, legend_y)], colour, 3)
        draw.text((width - right + 48, legend_y), label, fill="black", font=font, anchor="lm")
        legend_y += 24
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    log.info("Wrote %s", path)


def _dashed(
    draw: ImageDraw.ImageDraw,
    start: tuple[float, float],
    end: tuple[float, float],
    colour: tuple[int, int, int],
    dash: float = 8.0,
) -> None:
    (x0, y0), (x1, y1) = start, end
    length = math.hypot(x1 - x0, y1 - y0)
    for i in range(int(length // (2 * dash)) + 1):
        a, b = 2 * i * dash / length, min(1.0, (2 * i + 1) * dash / length)
        draw.line(
            [(x0 + a * (x1 - x0), y0 + a * (y1 - y0)), (x0 + b * (x1 - x0), y0 + b * (y1 - y0))],
            colour,
            1,
        )


# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_arguments(parser)
    parser.add_argument("--size", type=int, default=64, help="image side (dataset.image_size)")
    parser.add_argument("--minutes", type=float, default=120.0, help="time budget")
    parser.add_argument("--gain", type=float, default=0.6, help="target: gain above this")
    parser.add_argument(
        "--equivariance", type=float, default=0.9, help="target: equivariance above this"
    )
    parser.add_argument("--png", type=Path, help="curve (default: --out with .png)")
    parser.add_argument("--run-dir", type=Path, help="run directory (default: outputs/...)")
    parser.add_argument("--cache-dir", type=Path, help="render cache (default: the config's)")
    parser.add_argument("--logger", default="csv", help="conf/logger group (csv, default, none)")
    args = parser.parse_args()
    if args.quick:
        args.size = 16
        args.minutes = min(args.minutes, 5.0)
    common.start(args.threads, args.seed, args.allocator)

    with tempfile.TemporaryDirectory(prefix="time_to_quality-") as tmp:
        stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
        default_run = common.ROOT / "outputs" / "benchmarks" / "time_to_quality" / stamp
        run_dir = args.run_dir or (Path(tmp) / "run" if args.quick else default_run)
        cache_dir = args.cache_dir or (Path(tmp) / "cache" if args.quick else None)
        cfg, overrides = configure(args, run_dir, cache_dir)
        cache_ready = is_complete(build(cfg.dataset).cache_path)
        log.info("Training in %s (render cache %s)", run_dir, "warm" if cache_ready else "cold")
        final = train(cfg)
        records = json.loads((run_dir / RECORDS_FILE).read_text())["records"]

    reached = next((r for r in records if r.get("stop") == "target"), None)
    thresholds = {GAIN: args.gain, EQUIVARIANCE: args.equivariance}
    rows = [
        [r["epochs"], r["minutes"], r.get(GAIN, math.nan), r.get(EQUIVARIANCE, math.nan)]
        for r in records
    ]
    common.print_table(
        f"Time to quality, faces {args.size}x{args.size} ({args.threads} threads): "
        + (
            f"target reached after {reached['minutes']:.1f} min"
            if reached
            else "target not reached"
        ),
        ["epochs", "minutes", "novel_view_gain/azimuth", "equivariance/azimuth"],
        rows,
    )
    png = args.png or (args.out.with_suffix(".png") if args.out else None)
    if png is not None and records:
        plot(records, png, thresholds, f"faces {args.size}x{args.size}, {args.threads} threads")
    common.write_json(
        args.out,
        {
            "benchmark": "time_to_quality",
            "quick": args.quick,
            "machine": common.machine_info(args.allocator),
            "overrides": overrides,
            "image_size": args.size,
            "budget_minutes": args.minutes,
            "targets": {key: f"> {value}" for key, value in thresholds.items()},
            "render_cache_was_warm": cache_ready,
            "run_dir": str(run_dir) if not args.quick else None,
            "reached": reached is not None,
            "minutes_to_target": reached["minutes"] if reached else None,
            "records": records,
            "final_metrics": {key: final[key] for key in RECORDED if key in final},
            "png": str(png) if png else None,
        },
    )


if __name__ == "__main__":
    main()
