"""A folder of images listed by a CSV manifest, from fixtures written in that format."""

from __future__ import annotations

import csv
import itertools
import math
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datamodules.cache import open_cache
from datamodules.folder import FolderDataModule
from dcign.errors import ConfigError
from tests.conftest import group_types_seen, ready
from tests.test_chairs3d import train_tiny

OBJECTS = ("vase", "mug", "cup", "bowl")  # identities are text; ids follow the sorted names
AZIMUTHS = (90, 0, 45)  # degrees, deliberately unsorted in the file
LIGHTS = ("right", "left")  # a categorical factor
FACTORS = {"azimuth": {"unit": "deg", "periodic": True}, "light": {"unit": "none"}}


def shade(name: str, azimuth: int, light: str) -> int:
    """The gray level of one image, so that a pixel tells its row."""
    return (
        10
        + 40 * OBJECTS.index(name)
        + 10 * sorted(AZIMUTHS).index(azimuth)
        + 5 * (light == "right")
    )


def write_folder(root: Path, header=("path", "identity", "azimuth", "light")) -> Path:
    """``root/factors.csv`` and one solid 16 x 16 gray PNG per row, under ``root/img/<name>/``;
    the first image is listed by its absolute path."""
    rows = []
    for name, azimuth, light in itertools.product(OBJECTS, AZIMUTHS, LIGHTS):
        relative = Path("img") / name / f"{azimuth}_{light}.png"
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        pixels = np.full((16, 16, 3), shade(name, azimuth, light), dtype=np.uint8)
        Image.fromarray(pixels).save(root / relative)
        rows.append([str(root / relative) if not rows else str(relative), name, azimuth, light])
    write_csv(root / "factors.csv", [header, *rows])
    return root / "factors.csv"


def write_csv(path: Path, rows) -> Path:
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    return write_folder(tmp_path_factory.mktemp("cups"))


def folder(manifest: Path, cache_dir: Path, **overrides) -> FolderDataModule:
    args = {
        "factors": FACTORS,
        "image_size": 8,
        "group_size": 2,
        "groups_per_batch": 3,
        "layout": {"azimuth": 1, "light": 1, "intrinsic": None},
        "split": {"train": 2, "val": 0, "test": 2},
        "cache_dir": cache_dir,
        "val_batches": 2,
    }
    return FolderDataModule(manifest, **{**args, **overrides})


def test_the_default_layout_follows_the_declared_factors(manifest, tmp_path):
    """Without model.layout: a latent per varied factor, two for the periodic azimuth."""
    dm = folder(manifest, tmp_path, layout=None)
    assert dm.layout == {"azimuth": 2, "light": 1, "intrinsic": None}
    assert dm.group_types == ["azimuth", "light", "intrinsic"]


def test_factors_identities_and_pixels_follow_the_manifest(manifest, tmp_path):
    dm = ready(folder(manifest, tmp_path))
    azimuth, light = dm.factors
    assert azimuth.periodic and azimuth.unit == "rad"
    np.testing.assert_allclose(azimuth.values, [0.0, math.pi / 4, math.pi / 2])
    assert not light.periodic and light.unit == "none" and light.values == (0.0, 1.0)
    pixels, codes, meta = open_cache(dm.cache_path)
    assert meta["identities"] == ["bowl", "cup", "mug", "vase"]
    assert meta["labels"] == {"light": ["left", "right"]}
    assert len(codes) == 4 * 3 * 2 and meta["incomplete_identities"] == 0
    for image, (identity, a, lit) in zip(pixels, codes, strict=True):
        name = meta["identities"][identity]
        expected = shade(name, sorted(AZIMUTHS)[a], ["left", "right"][lit])
        assert np.all(image == expected), (name, a, lit)


def test_groups_vary_exactly_one_factor(manifest, tmp_path):
    dm = ready(folder(manifest, tmp_path))
    assert group_types_seen(dm) == {"azimuth", "light", "intrinsic"}


def test_column_names_are_configurable_and_rgb_keeps_colour(tmp_path):
    manifest = write_folder(tmp_path, header=("file", "object", "azimuth", "light"))
    dm = ready(
        folder(
            manifest, tmp_path / "cache", path_column="file", identity_column="object", channels=3
        )
    )
    pixels, codes, _ = open_cache(dm.cache_path)
    assert pixels.shape[1:] == (3, 8, 8)
    # The cache holds the identities in sorted order, each one's rows in manifest order.
    assert codes[0].tolist() == [0, 2, 1]
    assert np.all(pixels[0] == shade("bowl", 90, "right"))


def test_a_layout_group_that_is_not_a_factor_is_refused(manifest, tmp_path):
    with pytest.raises(ConfigError, match=r"model.layout has groups \['elevation'\]"):
        folder(manifest, tmp_path, layout={"elevation": 1, "intrinsic": None})


@pytest.mark.parametrize(
    ("factors", "message"),
    [
        (None, "dataset.factors must name the manifest's factor columns"),
        ({"azimuth": {"unit": "degrees"}}, r"dataset.factors.azimuth must be \{unit: deg\|rad"),
        ({"azimuth": {"periodic": True}}, r"dataset.factors.azimuth must be \{unit"),
        ({"azimuth": {"unit": "deg", "period": 1}}, r"dataset.factors.azimuth must be"),
        ({"light": {"unit": "none", "periodic": True}}, "periodic but has unit none"),
        ({"identity": {"unit": "none"}}, "may not name 'identity'"),
        ({"intrinsic": {"unit": "none"}}, "may not name 'intrinsic'"),
    ],
)
def test_bad_factor_declarations(manifest, tmp_path, factors, message):
    with pytest.raises(ConfigError, match=message):
        folder(manifest, tmp_path, factors=factors)


def test_manifest_errors_name_the_file_and_what_is_wrong(manifest, tmp_path):
    with pytest.raises(ConfigError, match="dataset.manifest is not set.*dataset=folder"):
        folder(None, tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        folder(tmp_path / "nothing.csv", tmp_path)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ConfigError, match="is empty.*path,identity,azimuth,light"):
        folder(empty, tmp_path)
    with pytest.raises(ConfigError, match="has a header but no rows"):
        folder(
            write_csv(tmp_path / "header.csv", [["path", "identity", "azimuth", "light"]]), tmp_path
        )


def test_missing_columns_are_named_with_the_ones_present(manifest, tmp_path):
    with pytest.raises(ConfigError) as error:
        folder(manifest, tmp_path, factors={**FACTORS, "elevation": {"unit": "deg"}})
    assert "has no column ['elevation']" in str(error.value)
    assert "its columns are ['path', 'identity', 'azimuth', 'light']" in str(error.value)


def rewrite(manifest: Path, path: Path, line: int, column: int, value: str) -> Path:
    """A copy of ``manifest`` in the same folder with one cell changed (line 1 is the header)."""
    rows = list(csv.reader(manifest.open(newline="")))
    rows[line - 1][column] = value
    return write_csv(path, rows)


def test_a_non_number_in_an_angle_column_names_its_line(manifest):
    bad = rewrite(manifest, manifest.with_name("bad_number.csv"), 4, 2, "thirty")
    with pytest.raises(ConfigError, match="Line 4 .*'thirty' in column 'azimuth'.*unit deg"):
        folder(bad, manifest.parent / "cache")
    empty_cell = rewrite(manifest, manifest.with_name("empty_cell.csv"), 5, 1, " ")
    with pytest.raises(ConfigError, match="Line 5 .* no value in column 'identity'"):
        folder(empty_cell, manifest.parent / "cache")


def test_a_missing_image_names_its_line_or_is_left_out(manifest, tmp_path):
    bad = rewrite(manifest, manifest.with_name("missing.csv"), 3, 0, "img/gone.png")
    with pytest.raises(ConfigError) as error:
        folder(bad, tmp_path)
    message = str(error.value)
    assert "1 of the 24 images" in message and "'img/gone.png' on line 3" in message
    assert str(manifest.parent / "img" / "gone.png") in message
    dm = ready(folder(bad, tmp_path, skip_bad_files=True))
    _, codes, meta = open_cache(dm.cache_path)
    assert len(codes) == 23 and meta["skipped_files"] == 1
    assert meta["incomplete_identities"] == 1


def test_a_corrupt_image_stops_naming_it_or_is_skipped(tmp_path):
    manifest = write_folder(tmp_path)
    broken = tmp_path / "img" / "mug" / "45_left.png"
    broken.write_bytes(broken.read_bytes()[:40])
    with pytest.raises(ConfigError, match="45_left.png.*skip_bad_files=true"):
        ready(folder(manifest, tmp_path / "cache"))
    assert os.listdir(tmp_path / "cache") == []
    dm = ready(folder(manifest, tmp_path / "cache", skip_bad_files=True))
    _, codes, meta = open_cache(dm.cache_path)
    assert len(codes) == 23 and meta["skipped_examples"] == [str(broken)]


def test_training_on_a_manifest_folder_end_to_end(manifest, tmp_path):
    metrics = train_tiny(
        tmp_path / "cache",
        tmp_path / "run",
        "dataset=folder",
        f"dataset.manifest={manifest}",
        "dataset.factors={azimuth: {unit: deg, periodic: true}, light: {unit: none}}",
        "dataset.split={train: 2, val: 1, test: 1}",
        "dataset.ratio={azimuth: 1, light: 1, intrinsic: 0}",
    )
    assert np.isfinite(metrics["val/loss"]) and "test/recon_mse" in metrics
