"""How sharp must a re-render be to be recognised? Identity kept by the true view, blurred.

    python benchmarks/lineup_blur.py --out blur.json                       # faces, validation
    python benchmarks/lineup_blur.py --override dataset=chairs --split test

``identity_kept`` (docs/evaluation.md) judges a re-rendered view in the line-up of the true
images of every identity of the split at exactly the target's view, by pixel distance. A model
that draws the right face a little blurred can still be picked out; one that draws it very
blurred cannot. How much blur the line-up forgives depends on the data (how far apart its
identities are), not on any model, so this script measures it once per data set: every true
image of the split, blurred by a Gaussian, is judged in its own view's line-up exactly as a
re-render is. Sigma is given in pixels per 32 pixels of image side (at 32x32, pixels), the
unit of the detail band, so the table reads the same at every resolution. A model's identity
kept then has a reading as a blur: "as recognisable as the truth blurred by about s pixels".
No model is involved.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from common import compose_config, machine_info, print_table, start, write_json

from datamodules.gallery import Gallery
from dcign.run.training import build_data
from dcign.scoring.fidelity import gaussian_blur, nearest_identity

SIGMAS = (0.0, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0)
# A few identities at a few views: the code path in seconds.
QUICK = (
    "dataset.n_identities=30",
    "dataset.n_azimuth=3",
    "dataset.n_elevation=2",
    "dataset.n_light=2",
)


def kept_at_sigmas(
    images: torch.Tensor, identity: torch.Tensor, sigmas: list[float]
) -> list[torch.Tensor]:
    """For one view's line-up ``images [K, C, H, W]`` of identities ``identity [K]``
    (``-1``: absent): per sigma (relative to a 32-pixel side), whether each present image,
    blurred, is still nearest to its own identity ``[K_present]``."""
    present = identity >= 0
    count = int(present.sum())
    lineup = images[None].expand(count, *images.shape)
    lineup_identity = identity[None].expand(count, -1)
    side = max(images.shape[-2:])
    truth, own = images[present], identity[present]
    found = []
    for sigma in sigmas:
        pixels = sigma * side / 32.0
        probes = truth
        if pixels > 0:
            probes = gaussian_blur(truth, pixels, max(1, int(np.ceil(3 * pixels))))
        found.append(nearest_identity(probes, lineup, lineup_identity) == own)
    return found


def measure(gallery: Gallery, sigmas: list[float], cells: int | None, seed: int) -> dict:
    """Identity kept by the blurred true images of a split's ``gallery`` over its view cells
    (all, or ``cells`` of them drawn with ``seed``)."""
    chosen = np.arange(len(gallery.keys))
    if cells is not None and cells < len(chosen):
        chosen = np.sort(np.random.default_rng(seed).choice(chosen, size=cells, replace=False))
    hits = np.zeros(len(sigmas))
    judged = 0
    lineup_sizes = []
    for cell in chosen:
        views = gallery.read_rows(gallery.table[cell])
        lineup_sizes.append(int((views.identity >= 0).sum()))
        for k, found in enumerate(kept_at_sigmas(views.images.float(), views.identity, sigmas)):
            hits[k] += float(found.sum())
        judged += lineup_sizes[-1]
    return {
        "cells": len(chosen),
        "images_judged": judged,
        "lineup_size": {"min": min(lineup_sizes), "max": max(lineup_sizes)},
        "chance": 1.0 / max(1, int(np.mean(lineup_sizes))),
        "kept": {str(sigma): hits[k] / judged for k, sigma in enumerate(sigmas)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--override", action="append", default=[], help="data config override")
    parser.add_argument("--split", default="val", choices=("val", "test"))
    parser.add_argument("--sigmas", type=float, nargs="+", default=list(SIGMAS))
    parser.add_argument("--cells", type=int, default=None, help="views to sample (all: omit)")
    parser.add_argument("--seed", type=int, default=0, help="which views --cells samples")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="a tiny data set, for a check")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if any(sigma < 0 for sigma in args.sigmas):
        parser.error(f"--sigmas must be >= 0, got {args.sigmas}")
    if args.cells is not None and args.cells < 1:
        parser.error(f"--cells must be >= 1 (or omitted for every view), got {args.cells}")
    start(args.threads, args.seed, "retain")
    overrides = [*(QUICK if args.quick else ()), *args.override]
    workdir = (args.out.parent if args.out else Path("outputs")) / "lineup_blur"
    datamodule = build_data(compose_config(overrides, workdir / "config"))
    datamodule.prepare_data()
    datamodule.setup("test")
    began = time.perf_counter()
    report = measure(datamodule.split_info(args.split).gallery, args.sigmas, args.cells, args.seed)
    report.update(split=args.split, overrides=overrides, seconds=time.perf_counter() - began)
    report["machine"] = machine_info("retain")
    print_table(
        f"{' '.join(overrides) or 'defaults'}: the {args.split} split's true views, blurred, "
        f"in their line-ups ({report['images_judged']} images, {report['cells']} views, "
        f"chance {report['chance']:.2f})",
        ["sigma (px per 32 px)", "identity kept"],
        [[sigma, kept] for sigma, kept in report["kept"].items()],
    )
    write_json(args.out, report)


if __name__ == "__main__":
    main()
