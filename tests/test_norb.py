"""smallNORB from files in the official binary format: parsing, cache, official split, errors.

The fixture writes both halves of a miniature smallNORB with the real headers and file names:
2 categories x 2 instances x 2 elevations x 3 azimuths x 2 lightings = 48 stereo pairs of
24x24 per file. Every left image is one gray level, its row in the file (+100 in the testing
file), and its right image is 255 minus that, so any resize keeps the value and each cached
image can be traced back to the row and camera it came from.
"""

from __future__ import annotations

import gzip
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from datamodules.cache import open_cache
from datamodules.factors import factor_values
from datamodules.norb import PARTS, NorbDataModule, read_header
from dcign.errors import ConfigError
from dcign.model.layout import INTRINSIC
from dcign.run.training import build_data, train
from tests.conftest import CONF, TINY, ready

BYTE, INTEGER = 0x1E3D4C55, 0x1E3D4C54
SIDE = 24
ROWS = 48  # per file
CATEGORIES = (0, 1)
INSTANCES = {"training": (4, 6), "testing": (0, 1)}
ELEVATIONS = (0, 8)  # 30 and 70 degrees
AZIMUTHS = (0, 2, 34)  # 0, 20 and 340 degrees
LIGHTINGS = (0, 5)
FIRST_GRAY = {"training": 0, "testing": 100}
TRAIN, TEST = (f"{stem}-" for stem in PARTS.values())


def matrix_bytes(array: np.ndarray, magic: int) -> bytes:
    """LeCun's format: magic, ndim, max(3, ndim) dims (unused ones 1), little-endian data."""
    dims = [*array.shape, *[1] * (3 - array.ndim)]
    dtype = "u1" if magic == BYTE else "<i4"
    return np.array([magic, array.ndim, *dims], "<u4").tobytes() + array.astype(dtype).tobytes()


def write(path: Path, data: bytes) -> None:
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def norb_arrays(part: str, instances: tuple[int, ...] | None = None) -> dict[str, np.ndarray]:
    """dat, cat and info of one part: views in product order (lighting fastest)."""
    rows = list(
        itertools.product(CATEGORIES, instances or INSTANCES[part], ELEVATIONS, AZIMUTHS, LIGHTINGS)
    )
    labels = np.array(rows)
    gray = FIRST_GRAY[part] + np.arange(len(rows))
    pairs = np.stack([gray, 255 - gray], axis=1)[:, :, None, None]
    return {
        "dat": np.broadcast_to(pairs, (len(rows), 2, SIDE, SIDE)),
        "cat": labels[:, 0],
        "info": labels[:, 1:],
    }


def write_norb(root: Path, gz: bool = False, test_instances: tuple[int, ...] | None = None):
    root.mkdir(parents=True, exist_ok=True)
    suffix = ".mat.gz" if gz else ".mat"
    for part, prefix in (("training", TRAIN), ("testing", TEST)):
        instances = test_instances if part == "testing" else None
        for kind, array in norb_arrays(part, instances).items():
            write(
                root / f"{prefix}{kind}{suffix}",
                matrix_bytes(array, BYTE if kind == "dat" else INTEGER),
            )
    return root


def norb(root: Path, cache_dir: Path, **overrides) -> NorbDataModule:
    args = {
        "root": str(root),
        "image_size": 8,
        "group_size": 2,
        "groups_per_batch": 3,
        "split": {"train": 2, "val": 2},
        "cache_dir": cache_dir,
        "val_batches": 2,
        "batches_per_epoch": 4,
    }
    return NorbDataModule(**{**args, **overrides})


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return write_norb(tmp_path_factory.mktemp("smallnorb"))


@pytest.fixture(scope="module")
def converted(root, tmp_path_factory) -> NorbDataModule:
    return ready(norb(root, tmp_path_factory.mktemp("cache")))


@pytest.mark.parametrize("gz", [False, True])
def test_headers_are_parsed_from_plain_and_gzipped_files(tmp_path, gz):
    root = write_norb(tmp_path, gz=gz)
    suffix = ".mat.gz" if gz else ".mat"
    found = {kind: read_header(root / f"{TRAIN}{kind}{suffix}") for kind in ("dat", "cat", "info")}
    # Header bytes: 4 magic + 4 ndim + 4 * max(3, ndim) dims.
    assert (found["dat"].magic, found["dat"].shape, found["dat"].offset) == (
        BYTE,
        (ROWS, 2, SIDE, SIDE),
        24,
    )
    assert (found["cat"].magic, found["cat"].shape, found["cat"].offset) == (INTEGER, (ROWS,), 20)
    assert (found["info"].magic, found["info"].shape, found["info"].offset) == (
        INTEGER,
        (ROWS, 4),
        20,
    )


def test_factors_are_smallnorbs_grid_in_radians(converted):
    azimuth, elevation, light = converted.factors
    assert converted.factor_names == ["azimuth", "elevation", "light"]
    assert len(azimuth.values) == 18 and azimuth.periodic and azimuth.unit == "rad"
    assert azimuth.values[1] == pytest.approx(math.radians(20))
    assert azimuth.values[17] == pytest.approx(math.radians(340))
    assert len(elevation.values) == 9 and not elevation.periodic
    assert (elevation.values[0], elevation.values[8]) == pytest.approx(
        (math.radians(30), math.radians(70))
    )
    assert light.values == (0.0, 1.0, 2.0, 3.0, 4.0, 5.0) and light.unit == "category"
    assert converted.group_types == ["azimuth", "elevation", "light", INTRINSIC]
    assert converted.ratio == {"azimuth": 1.0, "elevation": 1.0, "light": 1.0, INTRINSIC: 3.0}


def test_cache_holds_left_images_identities_and_codes(converted):
    images, codes, meta = open_cache(converted.cache_path)
    assert images.shape == (2 * ROWS, 1, 8, 8)
    # Training rows first, each image its row's gray level (left camera).
    assert np.array_equal(images[:, 0, 0, 0], np.r_[0:48, 100:148])
    assert np.all(images == images[:, :, :1, :1])
    # Codes: identity = category * 10 + instance, then the azimuth index (raw / 2), elevation
    # and lighting. Row 0: category 0, instance 4, elevation 0, azimuth 0, lighting 0; row 7
    # (= 1 * 6 + 0 * 2 + 1): elevation 8, azimuth 0, lighting 5; row 47: category 1, instance 6,
    # elevation 8, azimuth 34, lighting 5.
    assert codes[0].tolist() == [4, 0, 0, 0]
    assert codes[7].tolist() == [4, 0, 8, 5]
    assert codes[47].tolist() == [16, 17, 8, 5]
    assert codes[48 + 47].tolist() == [11, 17, 8, 5]
    values = factor_values(converted.factors, codes[[47], 1:])[0]
    assert values == pytest.approx([math.radians(340), math.radians(70), 5.0])
    assert meta["test_identities"] == [0, 1, 10, 11]


def test_right_camera_and_channels(root, tmp_path):
    dm = norb(root, tmp_path, camera=1, channels=3)
    dm.prepare_data()
    images, _, _ = open_cache(dm.cache_path)
    assert images.shape == (2 * ROWS, 3, 8, 8)
    assert np.array_equal(images[:, 2, 7, 7], 255 - np.r_[0:48, 100:148])


def test_official_split_keeps_the_test_files_instances_in_test(converted, root, tmp_path):
    test = converted.split_info("test")
    assert test.identities.tolist() == [0, 1, 10, 11]
    assert test.rows.tolist() == list(range(ROWS, 2 * ROWS))
    train, val = converted.split_info("train"), converted.split_info("val")
    assert sorted([*train.identities, *val.identities]) == [4, 6, 14, 16]
    assert len(val.identities) == 2 and len(val.rows) == 24
    # Another split seed may change val, never test; fractions divide the training identities.
    other = ready(norb(root, tmp_path, split_seed=3, split={"train": 0.5, "val": 0.5}))
    assert other.split_info("test").identities.tolist() == [0, 1, 10, 11]
    assert len(other.split_info("val").identities) == 2
    with pytest.raises(ConfigError, match="official one"):
        norb(root, tmp_path, split={"train": 0.8, "val": 0.1, "test": 0.1})


def test_every_group_varies_exactly_its_factor(converted):
    names = converted.group_types
    test_ids = set(converted.split_info("test").identities.tolist())
    loaders = {"train": converted.train_dataloader(), "test": converted.test_dataloader()}
    for split, loader in loaders.items():
        for batch in loader:
            for factors, identity, kind in zip(
                batch.factors, batch.identity, batch.group_type, strict=True
            ):
                assert (set(identity.tolist()) <= test_ids) == (split == "test")
                factor_columns = zip(converted.factor_names, factors.T, strict=True)
                columns = {"identity": identity, **dict(factor_columns)}
                varying = {n for n, column in columns.items() if len(set(column.tolist())) > 1}
                expected = "identity" if names[kind] == INTRINSIC else names[kind]
                assert varying == {expected}


def test_gzipped_files_give_the_same_cache(converted, tmp_path):
    dm = ready(norb(write_norb(tmp_path / "gz", gz=True), tmp_path / "cache"))
    images, codes, _ = open_cache(dm.cache_path)
    expected_images, expected_codes, _ = open_cache(converted.cache_path)
    assert np.array_equal(images, expected_images) and np.array_equal(codes, expected_codes)


def test_second_setup_reuses_the_cache_without_reading_the_files(tmp_path):
    root = write_norb(tmp_path / "norb")
    first = ready(norb(root, tmp_path / "cache"))
    # Same sizes, unreadable contents: any read would fail on the magic number.
    for path in root.iterdir():
        path.write_bytes(bytes(path.stat().st_size))
    second = ready(norb(root, tmp_path / "cache"))
    assert second.cache_path == first.cache_path
    assert second.split_info("test").identities.tolist() == [0, 1, 10, 11]
    assert norb(root, tmp_path / "cache", camera=1).cache_path != first.cache_path


def test_missing_root_and_missing_files(tmp_path):
    with pytest.raises(ConfigError, match=r"dataset.root='.*nowhere' does not exist"):
        norb(tmp_path / "nowhere", tmp_path)
    root = write_norb(tmp_path / "norb")
    (root / f"{TEST}info.mat").unlink()
    (root / f"{TRAIN}cat.mat").unlink()
    with pytest.raises(ConfigError) as error:
        norb(root, tmp_path)
    message = str(error.value)
    assert f"['{TRAIN}cat.mat', '{TEST}info.mat']" in message
    assert "dataset.root=/data/smallnorb" in message and "-training-dat.mat.gz" in message


def conversion_error(root: Path, cache: Path) -> str:
    """The message of the ConfigError that converting ``root`` raises; nothing may be cached."""
    with pytest.raises(ConfigError) as error:
        norb(root, cache).prepare_data()
    assert not cache.exists() or not any(cache.iterdir())
    return str(error.value)


def test_bad_magic_and_wrong_element_type(tmp_path):
    root = write_norb(tmp_path / "norb")
    dat = root / f"{TRAIN}dat.mat"
    array = norb_arrays("training")["dat"]
    write(dat, matrix_bytes(array, 0x12345678))
    assert "magic number 0x12345678" in conversion_error(root, tmp_path / "cache")
    write(dat, matrix_bytes(array, INTEGER))
    message = conversion_error(root, tmp_path / "cache")
    assert f"'{dat}' holds integer elements of shape [48, 2, 24, 24]" in message
    assert "holds byte elements of shape [N, cameras, H, W]" in message


def test_truncated_plain_file(tmp_path):
    root = write_norb(tmp_path / "norb")
    dat = root / f"{TEST}dat.mat"
    dat.write_bytes(dat.read_bytes()[:-100])
    message = conversion_error(root, tmp_path / "cache")
    # 48 pairs x 2 x 24 x 24 = 55296 bytes after the 24-byte header; 100 are cut.
    assert f"'{dat}' is truncated" in message
    assert "(55296 bytes after the 24-byte header)" in message
    assert "holds only 55196 bytes" in message


def test_truncated_gzipped_files(tmp_path):
    root = write_norb(tmp_path / "norb", gz=True)
    dat = root / f"{TEST}dat.mat.gz"
    # A complete gzip stream whose matrix lacks its last pair (1152 bytes): found while reading,
    # after the training images went into the cache being written, which must vanish.
    full = matrix_bytes(norb_arrays("testing")["dat"], BYTE)
    write(dat, full[:-1152])
    assert "holds only 54144 bytes" in conversion_error(root, tmp_path / "cache")
    # A cut download: the gzip stream itself ends early.
    compressed = gzip.compress(full)
    dat.write_bytes(compressed[: len(compressed) // 2])
    message = conversion_error(root, tmp_path / "cache")
    assert f"Cannot read '{dat}'" in message and "download it again" in message


def test_mismatched_lengths(tmp_path):
    root = write_norb(tmp_path / "norb")
    write(root / f"{TEST}cat.mat", matrix_bytes(norb_arrays("testing")["cat"][:47], INTEGER))
    message = conversion_error(root, tmp_path / "cache")
    assert f"['{TEST}dat.mat', '{TEST}cat.mat', '{TEST}info.mat']" in message
    assert "hold [48, 47, 48] rows" in message


@pytest.mark.parametrize(
    ("kind", "column", "value", "expected"),
    [
        (
            "info",
            2,
            3,
            "1 row(s) whose azimuth is not one of smallNORB's 0, 2, ..., 34; the "
            "first is row 5 with azimuth 3",
        ),
        ("info", 1, 9, "whose elevation is not one of smallNORB's 0..8; the first is row 5"),
        ("cat", None, 7, "whose category is not one of smallNORB's 0..4; the first is row 5"),
    ],
)
def test_out_of_range_labels(tmp_path, kind, column, value, expected):
    root = write_norb(tmp_path / "norb")
    array = norb_arrays("training")[kind].copy()
    array[5 if column is None else (5, column)] = value
    path = root / f"{TRAIN}{kind}.mat"
    write(path, matrix_bytes(array, INTEGER))
    message = conversion_error(root, tmp_path / "cache")
    assert f"'{path}' has " in message and expected in message


def test_instances_in_both_files(tmp_path):
    root = write_norb(tmp_path / "norb", test_instances=INSTANCES["training"])
    assert "identities [4, 6, 14, 16]" in conversion_error(root, tmp_path / "cache")


# The tiny model, trainer and callback settings of the shared tests; their data set keys are
# the procedural data sets' own; one epoch is enough here.
TINY_RUN = [o for o in TINY if not o.startswith(("dataset.", "trainer.max_epochs"))]


def test_train_on_smallnorb_end_to_end(root, tmp_path):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[
                *TINY_RUN,
                "dataset=norb",
                f"dataset.root={root}",
                "dataset.image_size=16",
                "dataset.group_size=3",
                "dataset.groups_per_batch=2",
                "dataset.batches_per_epoch=2",
                "dataset.val_batches=1",
                "dataset.split={train: 2, val: 2}",
                "trainer.max_epochs=1",
                "logger=csv",
                f"paths.output_dir={tmp_path / 'run'}",
                f"paths.cache_dir={tmp_path / 'cache'}",
            ],
        )
    assert build_data(cfg).layout == {"azimuth": 2, "elevation": 1, "light": 1, INTRINSIC: None}
    metrics = train(cfg)
    assert {"val/loss", "test/recon_mse"} <= metrics.keys()
    assert np.isfinite(metrics["test/recon_mse"])
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
