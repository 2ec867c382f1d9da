"""Throughput of the CPU renderer on the procedural chairs and faces.

Every data set is rendered into its cache before the first training step, so render speed is
time a user waits at start-up (and, for large grids, the difference between seconds and hours).
This script renders the 62-view 3D-chairs grid for a few hundred identities (with and without
supersampling) and the same number of random face views, and logs images per second. Mesh
generation and numba compilation are timed separately: a warm-up render runs first.

    python benchmarks/render_speed.py --identities 300 --size 64
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable

import numpy as np

from datamodules.chair_meshes import CHAIR_AZIMUTHS, CHAIR_ELEVATIONS, chair_mesh
from datamodules.face_meshes import (
    FACE_AZIMUTH_RANGE,
    FACE_ELEVATION_RANGE,
    FACE_LIGHT_RANGE,
    face_mesh,
)
from datamodules.renderer import Mesh, render_views

log = logging.getLogger("render_speed")


def _build(factory: Callable[[int], Mesh], identities: int, label: str) -> list[Mesh]:
    start = time.perf_counter()
    meshes = [factory(identity) for identity in range(identities)]
    elapsed = time.perf_counter() - start
    log.info(
        "%-24s %8.2f ms per identity (%d triangles on average)",
        f"{label} meshes",
        1e3 * elapsed / identities,
        np.mean([len(m.faces) for m in meshes]),
    )
    return meshes


def _throughput(
    meshes: list[Mesh],
    views: tuple[np.ndarray, np.ndarray, np.ndarray],
    size: int,
    supersample: int,
    label: str,
) -> float:
    render_views(meshes[0], *views, size, supersample=supersample)  # compile or load the cache
    start = time.perf_counter()
    for mesh in meshes:
        render_views(mesh, *views, size, supersample=supersample)
    elapsed = time.perf_counter() - start
    rate = len(meshes) * len(views[0]) / elapsed
    log.info(
        "%-24s %8.0f images/s (%d images in %.2f s)",
        label,
        rate,
        len(meshes) * len(views[0]),
        elapsed,
    )
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identities", type=int, default=300, help="objects per measurement")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    chair_views = (np.tile(CHAIR_AZIMUTHS, 2), np.repeat(CHAIR_ELEVATIONS, 31), np.zeros(62))
    chairs = _build(chair_mesh, args.identities, "chair")
    for supersample in (1, 2):
        _throughput(
            chairs, chair_views, args.size, supersample, f"chairs {args.size}px ss={supersample}"
        )

    rng = np.random.default_rng(0)
    face_views = (
        rng.uniform(*FACE_AZIMUTH_RANGE, 62),
        rng.uniform(*FACE_ELEVATION_RANGE, 62),
        rng.uniform(*FACE_LIGHT_RANGE, 62),
    )
    faces = _build(face_mesh, args.identities, "face")
    for supersample in (1, 2):
        _throughput(
            faces, face_views, args.size, supersample, f"faces {args.size}px ss={supersample}"
        )


if __name__ == "__main__":
    main()
