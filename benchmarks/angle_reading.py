"""How a volume decoder's angle is read and drawn at every value of a view factor.

    python benchmarks/angle_reading.py --ckpt outputs/train/<run>/checkpoints/last.ckpt
    python benchmarks/angle_reading.py --ckpt <run>/checkpoints/last.ckpt --factor elevation \\
        --split val --settings 1 --out angles.json

A volume decoder (``model=dcign3d``, ``dcign3d_learnt``; docs/volume.md) turns its volume by
the angle its encoder reads from the image. Beyond a ``dataset.train_range`` a re-render can
fail in two places: the encoder may read the wrong angle, or the decoder may draw badly even
at the right one. For every value of the factor, over every identity of the split at the
middle and ``--settings`` random settings of the other factors, this script reports the
encoder's reading (mean and spread, in the factor's unit) and the reconstruction's MSE against
the true image twice: decoded with the angle as read, and with the true angle put in its place.
A value whose reading is off while the true angle draws well needs a better reading; one whose
true angle draws worse than the misread one needs a better decoder there.

A told decoder's angle is the data's value. A learnt one turns its volume in a frame of its
own: mirrored, offset, or scaled (docs/volume.md). For it the true angle is first carried into
that frame by a fit of the readings against the values over the validation images at the
trained values, whichever split is scored (a least-squares line; on a full turn, the sign and
offset that agree best),
reported beside the table: the true angle is then the frame's value at the truth, not the raw
value, which such a decoder would draw turned the wrong way.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import machine_info, print_table
from identity_by_view import (
    Setting,
    choose_settings,
    in_batches,
    parse_view_arguments,
    run_view_script,
    setting_values,
)
from omegaconf import OmegaConf

from datamodules.factors import FactorSpec
from datamodules.gallery import Gallery
from dcign.errors import ConfigError
from dcign.model.interface import Renderer
from dcign.run.restore import data_config, load_checkpoint
from dcign.run.training import build
from dcign.scoring.latent_fit import turn_direction

log = logging.getLogger("benchmarks.angle_reading")

HEADERS = ["value", "trained", "images", "read", "read sd", "MSE as read", "MSE at the true angle"]
# The MSE columns of the printed table, in thousandths (the JSON keeps the plain values).
MSE_SCALE = 1000


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", type=Path, required=True, help="a volume decoder's checkpoint")
    parser.add_argument("--factor", default="azimuth", help="the angle's factor")
    return parse_view_arguments(parser, argv, settings=3)


def angle_latent(
    angle_factors: dict[str, Sequence[str]], latents: dict[str, int], name: str
) -> int:
    """The latent DC-IGN's volume decoder reads as ``name``'s angle, or a message saying why
    there is none."""
    angles = list(angle_factors.get("dcign", ()))
    if name not in angles:
        raise ConfigError(
            f"The checkpoint's decoder reads no angle for '{name}' (angles: {angles or 'none'}). "
            "This script measures a volume decoder (model=dcign3d or dcign3d_learnt), whose "
            "encoder reads azimuth and elevation as angles."
        )
    return latents[name]


Frame = Callable[[torch.Tensor], torch.Tensor]


def setting_images(gallery: Gallery, index: int, setting: Setting) -> tuple[torch.Tensor, ...]:
    """Every identity's image at every value of factor ``index`` (one setting of the others)
    that the split holds, ``[N, C, H, W]``, and each image's value of the factor ``[N]``."""
    values = torch.from_numpy(setting_values(gallery.factors, index, setting))
    views = gallery.at(values)  # images [V, K, C, H, W], identity [V, K] (-1: missing)
    present = (views.identity >= 0).flatten()
    true = values[:, index].repeat_interleave(views.identity.shape[1])[present]
    return views.images.flatten(0, 1)[present], true


def encoded(renderer: Renderer, images: torch.Tensor, batch: int) -> torch.Tensor:
    """The posterior means of ``images``, ``batch`` at a time."""
    return in_batches(lambda chunk: renderer.encode(chunk)[0].float(), images, batch)


def learnt_frame(
    renderer: Renderer,
    latent: int,
    reference: Gallery,
    index: int,
    settings: Sequence[Setting],
    periodic: bool,
    batch: int,
    trained: Sequence[float],
) -> dict[str, float]:
    """A learnt decoder's frame, fitted on the ``reference`` split's readings (validation:
    never on the images it is then scored on when the test split is) at the ``trained``
    values only: a view held out of training (``dataset.train_range``) is never seen in
    fitting, as in ``novel_view.py --beyond``."""
    pairs = [setting_images(reference, index, setting) for setting in settings]
    read = torch.cat([encoded(renderer, images, batch)[:, latent] for images, _ in pairs])
    true = torch.cat([true for _, true in pairs]).numpy()
    seen = np.isclose(true[:, None], np.asarray(trained, dtype=float)[None]).any(axis=1)
    return fitted_frame(true[seen], read.numpy()[seen], periodic)


def score_setting(
    renderer: Renderer,
    latent: int,
    gallery: Gallery,
    index: int,
    setting: Setting,
    batch: int,
    frame: Frame = lambda true: true,
) -> dict[str, np.ndarray]:
    """Per image of every identity at every value of factor ``index`` (one setting of the
    others): the true value, the angle read, the MSE as read and at the true angle (carried
    into the decoder's own ``frame``)."""
    images, true = setting_images(gallery, index, setting)

    def error(codes: torch.Tensor) -> torch.Tensor:
        drawn = in_batches(renderer.decode, codes, batch).float()
        return (drawn - images).square().flatten(1).mean(dim=1)

    codes = encoded(renderer, images, batch)
    told = codes.clone()
    told[:, latent] = frame(true).to(told)
    return {
        "true": true.numpy(),
        "read": codes[:, latent].numpy(),
        "mse_read": error(codes).numpy(),
        "mse_true": error(told).numpy(),
    }


def fitted_frame(true: np.ndarray, read: np.ndarray, periodic: bool) -> dict[str, float]:
    """A learnt angle's frame: ``read ~ offset + slope * true``, fitted on every reading.
    Bounded: the least-squares line. A full turn: the slope is the sign (1, or -1 for a
    mirrored reading) whose residuals agree best, and the offset their circular mean."""
    if not periodic:
        slope, offset = np.polyfit(true, read, 1)
        return {"slope": float(slope), "offset": float(offset)}
    sign = turn_direction(torch.from_numpy(true).double(), torch.from_numpy(read).double()[:, None])
    return {"slope": sign, "offset": float(np.angle(np.exp(1j * (read - sign * true)).mean()))}


def in_frame(frame: dict[str, float]) -> Frame:
    """The map that carries a true angle into a fitted ``frame``."""
    return lambda true: frame["offset"] + frame["slope"] * true


def by_value(
    scores: Sequence[dict[str, np.ndarray]], factor: FactorSpec, trained: Sequence[float]
) -> list[dict[str, Any]]:
    """One row per value of the factor, angles in degrees (the data's radians converted); a
    full turn's readings are taken modulo the turn, about each value."""
    joined = {key: np.concatenate([s[key] for s in scores]) for key in scores[0]}
    scale = 180 / math.pi if factor.unit == "rad" else 1.0
    rows = []
    for value in factor.values:
        at = np.isclose(joined["true"], value)
        if not at.any():
            continue
        read = joined["read"][at]
        if factor.periodic:
            # On a full turn, each reading on the value's side of the turn: 186 degrees read as
            # -174 is 6 off, not 360 (the mean and spread of raw readings either side of the
            # half turn would say 0 and 180).
            read = value + np.remainder(read - value + math.pi, 2 * math.pi) - math.pi
        read = read * scale
        rows.append(
            {
                "value": float(value) * scale,
                "trained": bool(np.isclose(value, trained).any()),
                "images": int(at.sum()),
                "read": float(read.mean()),
                "read_sd": float(read.std()),
                "mse_read": float(joined["mse_read"][at].mean()),
                "mse_true": float(joined["mse_true"][at].mean()),
            }
        )
    return rows


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Load the checkpoint and its data, score every chosen setting, print and return the
    report."""
    began = time.perf_counter()
    model, run_config = load_checkpoint(str(args.ckpt))
    model.eval()
    layout = model.latent_layout
    latents = {name: layout.indices(name)[0] for name in layout.names}
    latent = angle_latent(model.angle_factors, latents, args.factor)
    datamodule = build(data_config(OmegaConf.create({}), run_config), layout=model.hparams.layout)
    index = datamodule.factor_names.index(args.factor)
    factor = datamodule.factors[index]
    datamodule.prepare_data()
    datamodule.setup("test")
    trained_range = {r.factor.name: r.kept_values() for r in datamodule.train_range}
    trained = trained_range.get(args.factor, list(factor.values))
    gallery = datamodule.split_info(args.split).gallery
    settings = choose_settings(datamodule.factors, index, args.settings, args.seed)
    told = (model.hparams.get("pose") or {}).get("source") == "told"
    frame = {"slope": 1.0, "offset": 0.0}
    with torch.inference_mode():
        if not told:
            reference = datamodule.split_info("val").gallery
            frame = learnt_frame(
                model, latent, reference, index, settings, factor.periodic, args.batch, trained
            )
            log.info(
                "the learnt angle's frame (validation): read = %(offset).3f + %(slope).3f x true",
                frame,
            )
        scores = [
            score_setting(model, latent, gallery, index, setting, args.batch, in_frame(frame))
            for setting in settings
        ]
    rows = by_value(scores, factor, trained)
    table = [
        [r["value"], r["trained"], r["images"], r["read"], r["read_sd"]]
        + [r[key] * MSE_SCALE for key in ("mse_read", "mse_true")]
        for r in rows
    ]
    print_table(
        f"{args.factor}'s angle read and drawn ({args.ckpt}, {args.split} split, "
        f"{len(gallery.identities)} identities, {len(settings)} settings; angles in degrees, "
        f"MSE x 1/{MSE_SCALE})",
        HEADERS,
        table,
    )
    seconds = time.perf_counter() - began
    log.info("wall time %.0f s on %d thread(s)", seconds, torch.get_num_threads())
    return {
        "benchmark": "angle_reading",
        "checkpoint": str(args.ckpt),
        "factor": args.factor,
        "unit": "deg" if factor.unit == "rad" else factor.unit,
        "split": args.split,
        "trained_values": list(trained),
        "frame": frame,
        "rows": rows,
        "seconds": seconds,
        "machine": machine_info("retain"),
    }


def main(argv: Sequence[str] | None = None) -> None:
    run_view_script(parse_arguments, measure, argv)


if __name__ == "__main__":
    main()
