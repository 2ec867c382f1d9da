"""How much each latent group of a network's code carries: its posterior noise against its spread.

    python benchmarks/code_noise.py --ckpt outputs/train/<run>/checkpoints/last.ckpt --split val
    python benchmarks/code_noise.py --images 1000 --out noise.json    # the shipped weights

A decoder is trained on samples of the posterior, ``mu + sigma * eps``. Where a latent's noise
``sigma`` is as large as the spread of its means over the data, the decoder cannot tell the
images that latent tells apart, and learns to draw their average. For ``--images`` images of
the split (every identity at every view, drawn at random), per latent: the spread (standard
deviation) of the posterior means, the mean posterior standard deviation, their ratio, and the
information the latent passes, ``0.5 * log(1 + spread^2 / noise^2)`` nats (what a Gaussian
channel with that signal and noise carries). Per latent group of the layout: the ranges, the
median ratio, how many latents are noisier than half their spread, and the information in all.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import machine_info, print_table, start, write_json
from omegaconf import OmegaConf

from datamodules.gallery import MISSING, Gallery
from dcign.errors import ConfigError
from dcign.model.layout import LatentLayout
from dcign.run.restore import data_config, load_checkpoint
from dcign.run.training import build, run_or_explain
from dcign.ship import SHIPPED

log = logging.getLogger("benchmarks.code_noise")

HEADERS = [
    "network",
    "group",
    "latents",
    "spread",
    "noise",
    "median noise / spread",
    "noisier than half",
    "information (nats)",
]
# A latent whose noise is more than this share of its spread passes under 0.8 nats.
NOISY = 0.5


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", type=Path, default=SHIPPED, help="default: the shipped weights")
    parser.add_argument("--split", choices=("test", "val"), default="val")
    parser.add_argument("--images", type=int, default=3000, help="images drawn (default 3000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the images drawn")
    parser.add_argument("--batch", type=int, default=512, help="images per encoder call")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.images < 2 or args.batch < 1 or args.threads < 1:
        parser.error("--images must be at least 2, --batch and --threads at least 1")
    return args


def latent_noise(mu: torch.Tensor, logvar: torch.Tensor) -> dict[str, np.ndarray]:
    """Per latent of posteriors ``mu, logvar [N, D]``: the spread of the means, the mean
    posterior standard deviation, their ratio, and the information passed in nats."""
    spread = mu.double().std(dim=0)
    noise = (0.5 * logvar.double()).exp().mean(dim=0)
    ratio = noise / spread.clamp_min(torch.finfo(torch.float64).tiny)
    information = 0.5 * torch.log1p((spread / noise).square())
    return {
        "spread": spread.numpy(),
        "noise": noise.numpy(),
        "ratio": ratio.numpy(),
        "information": information.numpy(),
    }


def by_group(stats: dict[str, np.ndarray], layout: LatentLayout) -> list[dict[str, Any]]:
    """One row per latent group of ``layout``, in the layout's order."""
    rows = []
    for name in layout.names:
        at = list(layout.indices(name))
        ratio = stats["ratio"][at]
        rows.append(
            {
                "group": name,
                "latents": len(at),
                "spread": (float(stats["spread"][at].min()), float(stats["spread"][at].max())),
                "noise": (float(stats["noise"][at].min()), float(stats["noise"][at].max())),
                "median_ratio": float(np.median(ratio)),
                "noisier_than_half": int((ratio > NOISY).sum()),
                "information": float(stats["information"][at].sum()),
            }
        )
    return rows


def split_images(gallery: Gallery, count: int, seed: int) -> torch.Tensor:
    """``count`` images of the split's identities at its views, drawn without replacement."""
    rows = gallery.table[gallery.table != MISSING]
    if len(rows) < 2:
        raise ConfigError(f"The split holds {len(rows)} images; the spread needs at least two.")
    chosen = np.random.default_rng(seed).choice(rows, min(count, len(rows)), replace=False)
    return gallery.reader.read(np.sort(chosen)).images.float()


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Load the checkpoint and its data, encode the images, print and return the report."""
    began = time.perf_counter()
    model, run_config = load_checkpoint(str(args.ckpt))
    model.eval()
    datamodule = build(data_config(OmegaConf.create({}), run_config), layout=model.hparams.layout)
    datamodule.prepare_data()
    datamodule.setup("test")
    images = split_images(datamodule.split_info(args.split).gallery, args.images, args.seed)
    networks: dict[str, Any] = {}
    with torch.inference_mode():
        for name, network in model.networks.items():
            chunks = [network.encode(chunk) for chunk in images.split(args.batch)]
            mu, logvar = (torch.cat(parts) for parts in zip(*chunks, strict=True))
            stats = latent_noise(mu.float(), logvar.float())
            networks[name] = {
                "groups": by_group(stats, model.latent_layout),
                "latents": {key: value.tolist() for key, value in stats.items()},
            }
    table = [
        [name, r["group"], r["latents"]]
        + [f"{lo:.3f}-{hi:.3f}" for lo, hi in (r["spread"], r["noise"])]
        + [r["median_ratio"], r["noisier_than_half"], r["information"]]
        for name, report in networks.items()
        for r in report["groups"]
    ]
    print_table(
        f"Posterior noise against spread ({args.ckpt}, {args.split} split, {len(images)} images)",
        HEADERS,
        table,
    )
    seconds = time.perf_counter() - began
    log.info("wall time %.0f s on %d thread(s)", seconds, torch.get_num_threads())
    return {
        "benchmark": "code_noise",
        "checkpoint": str(args.ckpt),
        "split": args.split,
        "images": len(images),
        "networks": networks,
        "seconds": seconds,
        "machine": machine_info("retain"),
    }


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_arguments(argv)
    start(args.threads, args.seed, "retain")
    write_json(args.out, run_or_explain(measure, args))


if __name__ == "__main__":
    main()
