"""Faces of morphable models: BFM 2009 .mat and eos .bin files, rendered as ``dataset=faces``."""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import scipy.io

import datamodules.procedural as procedural
from datamodules.cache import open_cache
from datamodules.face_models import UNIFORM_ALBEDO, load_bfm, load_eos
from datamodules.meshes import FRAME_RADIUS
from datamodules.procedural import FacesDataModule
from dcign.errors import ConfigError
from dcign.run.training import train

# A 3x3 grid "face mask" in the xy plane (micrometres, like the BFM) whose centre vertex, the
# "nose", sticks out toward +z. Vertex k = 3 * row + col, x = col - 1, y = 1 - row.
GRID = (
    np.array(
        [
            [col - 1.0, 1.0 - row, 1.0 if (row, col) == (1, 1) else 0.0]
            for row in range(3)
            for col in range(3)
        ]
    )
    * 1e4
)
# Two triangles per grid square, 1-based as in the BFM's ``tl``.
TL = np.array(
    [[1, 4, 2], [2, 4, 5], [2, 5, 3], [3, 5, 6], [4, 7, 5], [5, 7, 8], [5, 8, 6], [6, 8, 9]]
)
# Shape component 0 moves the nose's z (value 14 = 3 * 4 + 2), component 1 vertex 0's x.
SHAPE_PC = np.zeros((27, 2))
SHAPE_PC[14, 0] = 1.0
SHAPE_PC[0, 1] = 1.0
SHAPE_EV = np.array([[3000.0], [1000.0]])
# Texture: gray 128 everywhere; component 0 adds red to vertex 4, component 1 green to vertex 0.
TEX_PC = np.zeros((27, 2))
TEX_PC[12, 0] = 1.0
TEX_PC[1, 1] = 1.0
TEX_EV = np.array([[50.0], [20.0]])


def bfm_fields() -> dict[str, np.ndarray]:
    return {
        "shapeMU": GRID.reshape(27, 1).astype(np.float32),
        "shapePC": SHAPE_PC.astype(np.float32),
        "shapeEV": SHAPE_EV.astype(np.float32),
        "texMU": np.full((27, 1), 128.0, np.float32),
        "texPC": TEX_PC.astype(np.float32),
        "texEV": TEX_EV.astype(np.float32),
        "tl": TL.astype(np.float64),  # the BFM stores indices as doubles
        "segbin": np.zeros((9, 4)),  # a field the loader does not need
    }


def write_bfm(path: Path, **changes: np.ndarray | None) -> Path:
    """The tiny model with fields replaced (or dropped, for ``None``)."""
    fields = {**bfm_fields(), **changes}
    scipy.io.savemat(path, {k: v for k, v in fields.items() if v is not None})
    return path


# The eos fixture: a tetrahedron (4 vertices, 12 mean values), 2 components.
EOS_MEAN = [0.0, 0.0, 0.0, 10.0, 0.0, 0.0, 0.0, 10.0, 0.0, 0.0, 0.0, 10.0]
EOS_COL0 = [float(i) for i in range(12)]  # basis column 0: 0, 1, ..., 11
EOS_COL1 = [100.0 + i for i in range(12)]  # basis column 1: 100, ..., 111
EOS_VARIANCES = [4.0, 0.25]  # standard deviations 2 and 0.5
EOS_TRIANGLES = [(0, 2, 1), (0, 1, 3), (0, 3, 2), (1, 2, 3)]


def eos_bytes(triangles=EOS_TRIANGLES, version: int = 1) -> bytes:
    """An eos cereal archive written field by field; the basis column by column."""
    data = struct.pack("<I", version)
    data += struct.pack("<ii", 12, 1) + struct.pack("<12f", *EOS_MEAN)
    data += struct.pack("<ii", 12, 2) + struct.pack("<24f", *EOS_COL0, *EOS_COL1)
    data += struct.pack("<ii", 2, 1) + struct.pack("<2f", *EOS_VARIANCES)
    data += struct.pack("<Q", len(triangles))
    data += b"".join(struct.pack("<3i", *t) for t in triangles)
    # A real file goes on with the colour model and more; the loader stops before them.
    return data + b"\x00" * 16


def write_eos(path: Path, data: bytes | None = None) -> Path:
    path.write_bytes(eos_bytes() if data is None else data)
    return path


@pytest.fixture
def bfm(tmp_path) -> Path:
    return write_bfm(tmp_path / "01_MorphableModel.mat")


def faces(tmp_path: Path, face_model: Path | None, **overrides) -> FacesDataModule:
    args = {
        "n_identities": 4,
        "n_azimuth": 3,
        "n_elevation": 1,
        "n_light": 2,
        "image_size": 16,
        "supersample": 1,
        "group_size": 2,
        "split": {"train": 2, "val": 1, "test": 1},
        "ratio": {"azimuth": 1, "light": 1},
        "cache_dir": tmp_path / "cache",
        "face_model": face_model,
    }
    return FacesDataModule(**{**args, **overrides})


# --- the BFM file ------------------------------------------------------------------------------


def test_bfm_face_is_mean_plus_components_times_deviations(bfm) -> None:
    model = load_bfm(bfm)
    mesh = model.mesh(np.array([1.5, -2.0]), np.array([1.0, -1.0]))
    expected = GRID.copy()
    expected[4, 2] = 1e4 + 1.5 * 3000.0  # the nose moves out
    expected[0, 0] = -1e4 - 2.0 * 1000.0  # vertex 0 moves left
    np.testing.assert_allclose(mesh.vertices, expected)
    # Gray of (R, G, B) = 0.21 R + 0.72 G + 0.07 B, over 255.
    albedo = np.full(9, 128.0 / 255.0)
    albedo[4] = (0.21 * 178.0 + 0.72 * 128.0 + 0.07 * 128.0) / 255.0
    albedo[0] = (0.21 * 128.0 + 0.72 * 108.0 + 0.07 * 128.0) / 255.0
    np.testing.assert_allclose(mesh.albedo, albedo, rtol=1e-6)
    np.testing.assert_array_equal(mesh.faces, TL - 1)
    assert mesh.smooth


def test_fewer_components_use_the_first_ones(bfm) -> None:
    model = load_bfm(bfm)
    mesh = model.mesh(np.array([1.0]), np.array([-1.0]))
    expected = GRID.copy()
    expected[4, 2] += 3000.0
    np.testing.assert_allclose(mesh.vertices, expected)
    assert mesh.albedo[4] == pytest.approx((0.21 * 78.0 + 0.79 * 128.0) / 255.0, rel=1e-6)


def test_sampled_faces_are_seeded_normalized_and_face_plus_z(bfm) -> None:
    model = load_bfm(bfm)
    shape, texture = model.coefficients(3, 0, None)
    assert shape.shape == texture.shape == (2,)
    again = model.coefficients(3, 0, None)
    np.testing.assert_array_equal(shape, again[0])
    assert not np.allclose(shape, model.coefficients(4, 0, None)[0])
    assert not np.allclose(shape, model.coefficients(3, 1, None)[0])
    # One component keeps the first coefficient of the same identity.
    assert model.coefficients(3, 0, 1)[0] == pytest.approx(shape[:1])

    raw = model.mesh(shape, texture).vertices.astype(np.float64)
    centre = (raw.min(0) + raw.max(0)) / 2
    scale = FRAME_RADIUS / np.linalg.norm(raw - centre, axis=1).max()
    face = model.sample(3, 0, None)
    np.testing.assert_allclose(face.vertices, (raw - centre) * scale, atol=1e-6)
    np.testing.assert_allclose(face.vertices.min(0) + face.vertices.max(0), 0.0, atol=1e-6)
    assert np.linalg.norm(face.vertices, axis=1).max() == pytest.approx(FRAME_RADIUS)
    assert np.argmax(face.vertices[:, 2]) == 4  # no axis flipped: the nose still points to +z


# --- the eos file ------------------------------------------------------------------------------


def test_eos_model_is_read_column_major_with_standard_deviations(tmp_path) -> None:
    model = load_eos(write_eos(tmp_path / "sfm_shape_4.bin"))
    np.testing.assert_array_equal(model.shape.mean, EOS_MEAN)
    np.testing.assert_array_equal(model.shape.basis[:, 0], EOS_COL0)
    np.testing.assert_array_equal(model.shape.basis[:, 1], EOS_COL1)
    np.testing.assert_allclose(model.shape.std, [2.0, 0.5])
    np.testing.assert_array_equal(model.triangles, EOS_TRIANGLES)
    assert model.texture is None
    mesh = model.mesh(np.array([1.0, -2.0]), None)
    # Vertex 1 = mean (10, 0, 0) + 2 * (3, 4, 5) - 0.5 * 2 * (103, 104, 105).
    np.testing.assert_allclose(mesh.vertices[1], [10 + 6 - 103, 8 - 104, 10 - 105])
    np.testing.assert_allclose(mesh.albedo, UNIFORM_ALBEDO)


# Byte offsets of the eos fixture: version 4, mean 8 + 48, basis 8 + 96, eigenvalues 8 + 8,
# triangle count 8, triangles 48.
@pytest.mark.parametrize(
    ("length", "where"),
    [
        (2, "the version number"),
        (8, r"the mean \(matrix 1 of 3\)"),
        (30, r"the mean \(matrix 1 of 3\)"),
        (100, r"the orthonormal PCA basis \(matrix 2 of 3\)"),
        (175, r"the eigenvalues \(matrix 3 of 3\)"),
        (184, "the triangle count"),
        (200, r"the triangle list \(4 triangles\)"),
    ],
)
def test_truncated_eos_file_says_where_it_ended(tmp_path, length, where) -> None:
    path = write_eos(tmp_path / "cut.bin", eos_bytes()[:length])
    with pytest.raises(ConfigError, match=f"'{path}' ends inside {where}"):
        load_eos(path)


def test_eos_triangle_out_of_range(tmp_path) -> None:
    path = write_eos(tmp_path / "bad.bin", eos_bytes(triangles=[(0, 1, 4)]))
    with pytest.raises(ConfigError, match=f"'{path}'.*from 0 to 4.*4 vertices.*start at 0"):
        load_eos(path)


# --- bad BFM files -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"texEV": None, "tl": None}, r"lacks the fields \['texEV', 'tl'\]"),
        ({"shapePC": np.zeros((24, 2))}, r"shapePC has shape \(24, 2\), but shapeMU has 27"),
        ({"shapeEV": np.ones((3, 1))}, "shapeEV has 3 values but shapePC has 2 columns"),
        ({"texMU": np.ones((24, 1))}, "texPC has shape .*, but texMU has 24"),
        ({"shapeMU": np.ones((26, 1))}, "shapeMU has 26 values; it must hold 3 per vertex"),
        ({"tl": TL[:, :2]}, r"tl has shape \(8, 2\)"),
        ({"tl": np.where(TL == 9, 10, TL)}, "from 1 to 10, but the model has 9 vertices"),
        ({"tl": TL - 1}, "from 0 to 8, .* start at 1"),
        ({"shapeEV": -SHAPE_EV}, "shapeEV has negative values"),
    ],
)
def test_bad_bfm_file_names_the_file_and_the_problem(tmp_path, changes, message) -> None:
    path = write_bfm(tmp_path / "model.mat", **changes)
    with pytest.raises(ConfigError, match=message) as error:
        load_bfm(path)
    assert str(path) in str(error.value)


def test_unreadable_mat_file(tmp_path) -> None:
    path = tmp_path / "model.mat"
    path.write_bytes(b"not a MATLAB file" * 20)
    with pytest.raises(ConfigError, match=f"Cannot read the face model '{path}'"):
        load_bfm(path)


# --- the data module ---------------------------------------------------------------------------


def test_procedural_faces_keep_their_cache_key(tmp_path) -> None:
    config = faces(tmp_path, None).cache_config()
    assert set(config) == {
        "generator",
        "version",
        "n_identities",
        "render_seed",
        "supersample",
        "fixed_light",
        "image_shape",
        "factors",
    }


def test_face_model_renders_distinct_identities_and_views(tmp_path, bfm) -> None:
    dm = faces(tmp_path, bfm)
    dm.prepare_data()
    images, codes, meta = open_cache(dm.cache_path)
    assert images.shape == (4 * 6, 1, 16, 16)
    assert meta["config"]["face_model"]["path"] == str(bfm)
    views = np.asarray(images, dtype=np.int64).reshape(4, 6, -1)
    assert (views.max(-1) > 0).all()  # every view shows the face
    first_view = views[:, 0]
    assert all(np.abs(first_view[a] - first_view[b]).sum() > 0 for a in range(4) for b in range(a))
    one_face = views[0]
    assert all(np.abs(one_face[a] - one_face[b]).sum() > 0 for a in range(6) for b in range(a))
    np.testing.assert_array_equal(codes[:, 0], np.repeat(np.arange(4), 6))


def test_eos_model_renders(tmp_path) -> None:
    dm = faces(tmp_path, write_eos(tmp_path / "sfm.bin"))
    dm.prepare_data()
    images, _, _ = open_cache(dm.cache_path)
    assert (np.asarray(images).reshape(24, -1).max(-1) > 0).all()


def test_cache_is_reused_without_loading_the_model(tmp_path, bfm, monkeypatch) -> None:
    first = faces(tmp_path, bfm)
    first.prepare_data()

    def must_not_load(path):
        raise AssertionError(f"loaded {path} again")

    monkeypatch.setattr(procedural, "load_face_model", must_not_load)
    second = faces(tmp_path, bfm)
    second.setup("fit")
    assert second.cache_path == first.cache_path
    # The procedural faces, other components and a changed file are other caches.
    assert faces(tmp_path, None).cache_path != first.cache_path
    assert faces(tmp_path, bfm, n_components=1).cache_path != first.cache_path
    os.utime(bfm, ns=(0, bfm.stat().st_mtime_ns + 10**9))
    assert faces(tmp_path, bfm).cache_path != first.cache_path


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("missing.mat", r"dataset.face_model='.*missing.mat' does not exist.*Example: python"),
        ("model.obj", r"unknown extension '.obj'.*\.mat \(Basel Face Model 2009\)"),
    ],
)
def test_bad_face_model_path(tmp_path, name, message) -> None:
    (tmp_path / "model.obj").write_text("v 0 0 0\n")
    with pytest.raises(ConfigError, match=message):
        faces(tmp_path, tmp_path / name)


def test_bad_component_counts(tmp_path, bfm) -> None:
    with pytest.raises(ConfigError, match="dataset.n_components only applies to a face model"):
        faces(tmp_path, None, n_components=5)
    with pytest.raises(ConfigError, match="dataset.n_components must be an integer >= 1"):
        faces(tmp_path, bfm, n_components=0)
    with pytest.raises(ConfigError, match=f"n_components=3, but the shape model of '{bfm}' has 2"):
        faces(tmp_path, bfm, n_components=3).prepare_data()


def test_bad_file_stops_prepare_data_with_its_name(tmp_path) -> None:
    path = write_bfm(tmp_path / "model.mat", texPC=None)
    dm = faces(tmp_path, path)
    with pytest.raises(ConfigError, match=rf"'{path}' lacks the fields \['texPC'\]"):
        dm.prepare_data()
    assert not dm.cache_path.exists()


def test_training_on_a_face_model(compose_config, tmp_path, bfm) -> None:
    cfg = compose_config(f"dataset.face_model={bfm}", "logger=csv", "trainer.max_epochs=1")
    metrics = train(cfg)
    assert math.isfinite(metrics["val/loss"])
    assert math.isfinite(metrics["test/recon_mse"])
