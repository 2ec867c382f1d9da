"""Write the procedural faces as a user's data would be: an image folder with a CSV manifest,
or a folder of meshes.

    python benchmarks/export_faces.py outputs/faces_folder
    python benchmarks/export_faces.py outputs/faces_meshes --meshes
    python benchmarks/quality.py --override dataset=meshes \\
        --override dataset.root=outputs/faces_meshes
    python benchmarks/quality.py --override dataset=folder \\
        --override dataset.manifest=outputs/faces_folder/faces.csv \\
        --override "dataset.factors={azimuth: {unit: deg}, elevation: {unit: deg}, \
                                     light: {unit: deg}}"

Learning quality on real data cannot be measured on this machine (it holds none), but the
real-format loaders' defaults can: the same renders, read back through ``dataset=folder``
(PNG decoding, the manifest, the folder's default layout - one latent per varied factor - and
ratio), train and score as any folder of pictures would; the same heads as OBJ files (vertex
colours as their albedo) through ``dataset=meshes`` (loading, normalising, the chairs' view
grid and the mesh folder's defaults).
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import trimesh
from common import compose_config
from PIL import Image

from dcign.run.training import build_data

log = logging.getLogger("export_faces")


def write_meshes(datamodule: Any, out: Path) -> None:
    """Each identity's head as ``face<identity>.obj`` with its albedo as gray vertex colours."""
    out.mkdir(parents=True, exist_ok=True)
    for identity, mesh in datamodule.meshes({}):
        gray = (np.clip(mesh.albedo, 0, 1) * 255).round().astype(np.uint8)
        colours = np.column_stack([gray, gray, gray, np.full_like(gray, 255)])
        shape = trimesh.Trimesh(mesh.vertices, mesh.faces, vertex_colors=colours, process=False)
        shape.export(out / f"face{identity:04d}.obj")
    log.info("Wrote %d meshes under %s", datamodule.n_identities, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write (images under img/, faces.csv)")
    parser.add_argument("--override", action="append", default=[], help="faces config override")
    parser.add_argument("--meshes", action="store_true", help="write one OBJ per head instead")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cfg = compose_config(args.override, args.out / "config")
    if args.meshes:
        write_meshes(build_data(cfg), args.out)
        return
    datamodule = build_data(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    names = datamodule.factor_names
    rows = []
    for split in ("train", "val", "test"):
        count = len(datamodule.split_info(split).rows)
        if not count:
            continue
        views = datamodule.sample_images(split, count)
        for k, (image, values, identity) in enumerate(zip(*views, strict=True)):
            path = Path("img") / f"{int(identity):04d}" / f"{split}{k:06d}.png"
            (args.out / path).parent.mkdir(parents=True, exist_ok=True)
            pixels = (image.numpy() * 255).round().astype(np.uint8)
            Image.fromarray(pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)).save(
                args.out / path
            )
            degrees = [f"{math.degrees(float(v)):.6f}" for v in values]
            rows.append([str(path), f"face{int(identity):04d}", *degrees])
    with open(args.out / "faces.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "identity", *names])
        writer.writerows(rows)
    log.info("Wrote %d images and %s", len(rows), args.out / "faces.csv")


if __name__ == "__main__":
    main()
