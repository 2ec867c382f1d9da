"""A folder of .obj/.ply meshes as ``dataset=meshes``: finding, loading, rendering, errors."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

import datamodules.mesh_folder as mesh_folder
from datamodules.cache import open_cache
from datamodules.chair_meshes import CHAIR_AZIMUTHS, CHAIR_ELEVATIONS
from datamodules.face_models import UNIFORM_ALBEDO
from datamodules.mesh_folder import MeshFolderDataModule, find_mesh_files, load_mesh
from datamodules.meshes import FRAME_RADIUS
from dcign.errors import ConfigError
from dcign.run.training import build_data, train
from tests.conftest import CONF, TINY

# A cube of side 2 centred at (5, -1, 3), as OBJ text (1-based faces, outward winding).
CUBE_CORNERS = [(5 + x, -1 + y, 3 + z) for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)]
CUBE_QUADS = [(1, 2, 4, 3), (5, 7, 8, 6), (1, 5, 6, 2), (3, 4, 8, 7), (1, 3, 7, 5), (2, 6, 8, 4)]
TETRA_OBJ = "o tetra\nv 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nf 1 3 2\nf 1 2 4\nf 1 4 3\nf 2 3 4\n"
# A tetrahedron with red, green, blue and white vertices.
COLOURED_PLY = """ply
format ascii 1.0
element vertex 4
property float x
property float y
property float z
property uchar red
property uchar green
property uchar blue
element face 4
property list uchar int vertex_indices
end_header
0 0 0 255 0 0
2 0 0 0 255 0
0 2 0 0 0 255
0 0 2 255 255 255
3 0 2 1
3 0 1 3
3 0 3 2
3 1 2 3
"""


def box_obj(corners: list[tuple[float, float, float]]) -> str:
    lines = [f"v {x} {y} {z}" for x, y, z in corners]
    lines += [f"f {a} {b} {c}\nf {a} {c} {d}" for a, b, c, d in CUBE_QUADS]
    return "\n".join(lines) + "\n"


def box(sx: float, sy: float, sz: float) -> str:
    return box_obj([(x * sx, y * sy, z * sz) for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)])


@pytest.fixture
def folder(tmp_path) -> Path:
    """cube.obj, sub/tetra.obj and coloured.PLY, plus a file that is not a mesh."""
    root = tmp_path / "meshes"
    (root / "sub").mkdir(parents=True)
    (root / "cube.obj").write_text(box_obj(CUBE_CORNERS))
    (root / "sub" / "tetra.obj").write_text(TETRA_OBJ)
    (root / "coloured.PLY").write_text(COLOURED_PLY)
    (root / "README.txt").write_text("not a mesh")
    return root


def meshes(root: Path | None, tmp_path: Path, **overrides) -> MeshFolderDataModule:
    args = {
        "root": root,
        "n_azimuth": 4,
        "elevations_deg": [20],
        "image_size": 16,
        "supersample": 1,
        "group_size": 2,
        "split": {"train": 1, "val": 1, "test": 1},
        "ratio": {"azimuth": 1},
        "cache_dir": tmp_path / "cache",
    }
    return MeshFolderDataModule(**{**args, **overrides})


# --- files and meshes --------------------------------------------------------------------------


def test_mesh_files_are_found_recursively_and_sorted(folder) -> None:
    names = [path.relative_to(folder).as_posix() for path in find_mesh_files(folder)]
    assert names == ["coloured.PLY", "cube.obj", "sub/tetra.obj"]


def test_mesh_is_centred_and_scaled_to_the_frame(folder) -> None:
    mesh = load_mesh(folder / "cube.obj")
    # Centre (5, -1, 3) moves to the origin; corners at distance sqrt(3) move to FRAME_RADIUS.
    corner = FRAME_RADIUS / math.sqrt(3)
    expected = [(x * corner, y * corner, z * corner) for x, y, z in CUBE_CORNERS]
    expected = np.array(expected) - np.array([5, -1, 3]) * corner
    np.testing.assert_allclose(np.sort(mesh.vertices, 0), np.sort(expected, 0), atol=1e-6)
    assert len(mesh.faces) == 12 and not mesh.smooth
    np.testing.assert_allclose(mesh.albedo, UNIFORM_ALBEDO)


def test_vertex_colours_become_gray_albedo(folder) -> None:
    mesh = load_mesh(folder / "coloured.PLY")
    # Red, green, blue, white: the luminance weights themselves, then 1.
    np.testing.assert_allclose(mesh.albedo, [0.21, 0.72, 0.07, 1.0], rtol=1e-6)
    # Bounding box [0, 2]^3: centre (1, 1, 1), farthest corner (-1, -1, -1) at sqrt(3).
    scale = FRAME_RADIUS / math.sqrt(3)
    np.testing.assert_allclose(mesh.vertices[0], [-scale] * 3, atol=1e-6)
    np.testing.assert_allclose(mesh.vertices[1], [scale, -scale, -scale], atol=1e-6)


# --- the data module ---------------------------------------------------------------------------


def test_default_grid_is_the_chairs_grid(folder, tmp_path) -> None:
    dm = MeshFolderDataModule(root=folder, cache_dir=tmp_path)
    azimuth, elevation = dm.factors
    np.testing.assert_array_equal(azimuth.values, CHAIR_AZIMUTHS)
    np.testing.assert_array_equal(elevation.values, CHAIR_ELEVATIONS)
    assert azimuth.periodic
    assert dm.group_types == ["azimuth", "intrinsic"]


def test_configured_grid(folder, tmp_path) -> None:
    azimuth, elevation = meshes(folder, tmp_path, elevations_deg=[0, 45]).factors
    np.testing.assert_allclose(azimuth.values, [0, math.pi / 2, math.pi, 3 * math.pi / 2])
    np.testing.assert_allclose(elevation.values, [0, math.pi / 4])


def test_meshes_render_distinct_identities_and_views(folder, tmp_path) -> None:
    dm = meshes(folder, tmp_path)
    dm.prepare_data()
    images, codes, meta = open_cache(dm.cache_path)
    assert images.shape == (3 * 4, 1, 16, 16)
    np.testing.assert_array_equal(codes[:, 0], np.repeat([0, 1, 2], 4))
    assert meta["files"] == ["coloured.PLY", "cube.obj", "sub/tetra.obj"]
    assert meta["skipped_files"] == 0
    views = np.asarray(images, dtype=np.int64).reshape(3, 4, -1)
    assert (views.max(-1) > 0).all()
    assert all(np.abs(views[a, 1] - views[b, 1]).sum() > 0 for a in range(3) for b in range(a))
    # The tetrahedron looks different from every side (the cube at 0 and 90 degrees does not).
    tetra = views[2]
    assert all(np.abs(tetra[a] - tetra[b]).sum() > 0 for a in range(4) for b in range(a))


def test_cache_is_reused_without_loading_the_meshes(folder, tmp_path, monkeypatch) -> None:
    first = meshes(folder, tmp_path)
    first.prepare_data()

    def must_not_load(path):
        raise AssertionError(f"loaded {path} again")

    monkeypatch.setattr(mesh_folder, "load_mesh", must_not_load)
    second = meshes(folder, tmp_path)
    second.setup("fit")
    assert second.cache_path == first.cache_path
    # A changed, added or removed file makes another cache.
    cube = folder / "cube.obj"
    os.utime(cube, ns=(0, cube.stat().st_mtime_ns + 10**9))
    changed = meshes(folder, tmp_path).cache_path
    assert changed != first.cache_path
    (folder / "sub" / "tetra.obj").unlink()
    assert meshes(folder, tmp_path).cache_path not in (first.cache_path, changed)


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("broken.obj", "this is not an OBJ file\n", "holds no triangles"),
        ("broken.ply", "ply\nformat ascii 1.0\nelement vertex 3\n", ""),
        ("empty.obj", "", "holds no triangles"),
    ],
)
def test_bad_mesh_stops_with_its_name(folder, tmp_path, name, content, reason) -> None:
    bad = folder / name
    bad.write_text(content)
    with pytest.raises(ConfigError, match=f"Cannot read the mesh '{bad}'.*{reason}"):
        meshes(folder, tmp_path).prepare_data()


def test_bad_mesh_is_skipped_and_counted(folder, tmp_path) -> None:
    (folder / "broken.obj").write_text("this is not an OBJ file\n")
    dm = meshes(folder, tmp_path, skip_bad_files=True)
    dm.prepare_data()
    _, codes, meta = open_cache(dm.cache_path)
    # Files: broken.obj (0), coloured.PLY (1), cube.obj (2), sub/tetra.obj (3).
    np.testing.assert_array_equal(np.unique(codes[:, 0]), [1, 2, 3])
    assert meta["skipped_files"] == 1
    assert meta["skipped_examples"] == [str(folder / "broken.obj")]


def test_no_readable_mesh_at_all(tmp_path) -> None:
    root = tmp_path / "broken"
    root.mkdir()
    (root / "a.obj").write_text("nothing\n")
    with pytest.raises(ConfigError, match="None of the 1 mesh files"):
        meshes(root, tmp_path, skip_bad_files=True).prepare_data()


@pytest.mark.parametrize(
    ("root", "message"),
    [
        (None, "dataset.root is not set"),
        ("missing", r"dataset.root='.*missing' does not exist"),
        ("empty", r"holds no .obj/.ply files \(searched recursively\)"),
        ("file.obj", "is not a folder"),
    ],
)
def test_bad_root(tmp_path, root, message) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no meshes here")
    (tmp_path / "file.obj").write_text(TETRA_OBJ)
    path = None if root is None else tmp_path / root
    with pytest.raises(ConfigError, match=f"{message}.*Example: python train.py dataset=meshes"):
        meshes(path, tmp_path)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"elevations_deg": []}, "dataset.elevations_deg must be a non-empty list"),
        ({"elevations_deg": [20, 95]}, r"between -90 and 90; got \[20, 95\]"),
        ({"n_azimuth": 0}, "dataset.n_azimuth must be an integer >= 1"),
        ({"skip_bad_files": "yes"}, "dataset.skip_bad_files must be true or false"),
    ],
)
def test_bad_options(folder, tmp_path, overrides, message) -> None:
    with pytest.raises(ConfigError, match=message):
        meshes(folder, tmp_path, **overrides)


def test_training_on_a_mesh_folder(cache_dir, tmp_path) -> None:
    root = tmp_path / "shapes"
    root.mkdir()
    sizes = [(1, 1, 1), (1, 2, 1), (2, 1, 1), (1, 1, 3), (3, 1, 2), (1, 3, 2)]
    for i, size in enumerate(sizes):
        (root / f"box{i}.obj").write_text(box(*size))
    # The procedural sets' counts of identities, elevations and lights are not options here.
    tiny = [
        o
        for o in TINY
        if o.split("=")[0] not in ("dataset.n_identities", "dataset.n_elevation", "dataset.n_light")
    ]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[
                "dataset=meshes",
                *tiny,
                f"dataset.root={root}",
                f"paths.output_dir={tmp_path / 'run'}",
                f"paths.cache_dir={cache_dir}",
                "logger=csv",
                "trainer.max_epochs=1",
            ],
        )
    assert cfg.model.layout is None  # the data set's own layout
    assert build_data(cfg).layout == {"azimuth": 2, "intrinsic": None}
    metrics = train(cfg)
    assert math.isfinite(metrics["val/loss"])
    assert math.isfinite(metrics["test/recon_mse"])
