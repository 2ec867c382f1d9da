"""How fast the explorer answers a slider move, at 32x32 and 64x64.

    python benchmarks/explorer_speed.py --out explorer.json

A slider move is one ``ExplorerSession.render`` call: edit the code, decode it with DC-IGN and
the baseline, render the true view of a procedural face, and encode the three pictures as PNG
for the page. Its time does not depend on what the weights learned, so the networks are the
default preset's at each size, freshly initialised, on a faces set of a few identities (the
renderer draws one mesh per identity). The targets are 100 ms at 32x32 and 300 ms at 64x64 on
two CPU cores; the HTTP round trip on 127.0.0.1 adds about a millisecond.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from common import (
    add_common_arguments,
    compose_config,
    machine_info,
    print_table,
    start,
    write_json,
)

from dcign.explorer.session import ExplorerSession
from dcign.run.training import build_data, build_model

TARGET_MS = {32: 100.0, 64: 300.0}


def session_at(size: int, identities: int, workdir: Path) -> ExplorerSession:
    overrides = [f"dataset.image_size={size}", f"dataset.n_identities={identities}"]
    cfg = compose_config(overrides, workdir)
    datamodule = build_data(cfg)
    datamodule.prepare_data()
    datamodule.setup("test")
    model = build_model(cfg, datamodule)
    return ExplorerSession(model, datamodule, gallery_size=4, reference_images=64)


def slider_moves(session: ExplorerSession, moves: int) -> list[float]:
    """Milliseconds per render while the azimuth slider sweeps back and forth."""
    session.pick("g0")
    spec = session.factor_sliders[0].spec()
    positions = np.linspace(float(spec["min"]), float(spec["max"]), moves)
    times = []
    for value in positions:
        began = time.perf_counter()
        session.render("g0", {"azimuth": float(value)})
        times.append(1000 * (time.perf_counter() - began))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(parser)
    parser.add_argument("--moves", type=int, default=200, help="slider moves per size")
    args = parser.parse_args()
    start(args.threads, args.seed, args.allocator)
    workdir = Path("outputs") / "explorer_speed"
    sizes = (16,) if args.quick else (32, 64)
    moves = 10 if args.quick else args.moves
    results, rows = {}, []
    for size in sizes:
        session = session_at(size, 8, workdir)
        slider_moves(session, 5)  # warm-up: first calls build the mesh and allocate buffers
        times = slider_moves(session, moves)
        median = statistics.median(times)
        p95 = float(np.percentile(times, 95))
        target = TARGET_MS.get(size)
        results[size] = {"median_ms": median, "p95_ms": p95, "target_ms": target, "ms": times}
        rows.append(
            [
                f"{size}x{size}",
                median,
                p95,
                target or float("nan"),
                bool(target is None or p95 <= target),
            ]
        )
    print_table(
        f"Explorer: one slider move (render DC-IGN + baseline + truth, PNG), {moves} moves",
        ["size", "median ms", "p95 ms", "target ms", "met"],
        rows,
    )
    write_json(
        args.out,
        {"benchmark": "explorer_speed", "sizes": results, "machine": machine_info(args.allocator)},
    )


if __name__ == "__main__":
    main()
