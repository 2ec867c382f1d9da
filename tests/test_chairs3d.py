"""The real 3D-chairs renders, from fixtures written in their exact layout and naming."""

from __future__ import annotations

import itertools
import logging
import math
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import datamodules.image_files as images
from datamodules.cache import open_cache
from datamodules.chairs3d import Chairs3DDataModule, chairs_datamodule
from datamodules.procedural import ChairsDataModule
from dcign.errors import ConfigError
from dcign.run.training import build, train
from tests.conftest import compose_train, group_types_seen, ready

# Written in this order, which is not the sorted one: ids must follow the sorted folder names.
CHAIRS = ("f_chair", "b_chair", "d_chair", "a_chair", "e_chair", "c_chair")
SORTED = sorted(CHAIRS)
AZIMUTHS = (0, 11, 23, 348)  # degrees, as in the real names t000, t011, t023, ..., t348
ELEVATIONS = (20, 30)
MISSING = ("c_chair", 23, 30)  # this chair has no render at azimuth 23, elevation 30
SIZE = 24
# Each chair is a rectangle in rows 4..19 and columns 4+k .. 13+k of its 24 x 24 renders: larger
# side 16, border ceil(0.05 * 16) = 1, so an 18-pixel square at rows 3..20, columns k..k+17.
# Converted at image_size 18 (no resampling), the chair fills rows 1..16, columns 4..13.
CROPPED = 18
CHAIR_ROWS, CHAIR_COLS = slice(1, 17), slice(4, 14)


def shade(azimuth: int, elevation: int) -> int:
    """The gray level a fixture chair is painted at in one view, so a pixel tells its view."""
    return 20 + 20 * AZIMUTHS.index(azimuth) + 10 * ELEVATIONS.index(elevation)


def write_chairs(root: Path, chairs=CHAIRS, missing=MISSING) -> Path:
    """``root/<chair>/renders/image_NNN_pPPP_tTTT_r096.png`` on white, NNN shuffled."""
    views = list(itertools.product(ELEVATIONS, AZIMUTHS))
    rng = np.random.default_rng(7)
    for k, chair in enumerate(chairs):
        renders = root / chair / "renders"
        renders.mkdir(parents=True)
        for index, (elevation, azimuth) in zip(rng.permutation(len(views)), views, strict=True):
            if (chair, azimuth, elevation) == missing:
                continue
            pixels = np.full((SIZE, SIZE, 3), 255, dtype=np.uint8)
            pixels[4:20, 4 + k : 14 + k] = shade(azimuth, elevation)
            name = f"image_{index:03d}_p{elevation:03d}_t{azimuth:03d}_r096.png"
            Image.fromarray(pixels).save(renders / name)
    (root / "all_chair_names.mat").write_bytes(b"MATLAB 5.0 MAT-file")
    return root


@pytest.fixture(scope="module")
def chairs_root(tmp_path_factory) -> Path:
    return write_chairs(tmp_path_factory.mktemp("data") / "rendered_chairs")


def chairs(root: Path, cache_dir: Path, **overrides) -> Chairs3DDataModule:
    args = {
        "image_size": CROPPED,
        "group_size": 2,
        "groups_per_batch": 3,
        "split": {"train": 2, "val": 2, "test": 2},
        "cache_dir": cache_dir,
        "val_batches": 2,
    }
    return Chairs3DDataModule(root, **{**args, **overrides})


def test_angles_and_identities_come_from_the_names(chairs_root, tmp_path):
    dm = chairs(chairs_root, tmp_path)
    azimuth, elevation = dm.factors
    assert azimuth.name == "azimuth" and azimuth.periodic and azimuth.unit == "rad"
    np.testing.assert_allclose(
        azimuth.values, [0.0, 11 * math.pi / 180, 23 * math.pi / 180, 348 * math.pi / 180]
    )
    assert elevation.name == "elevation" and not elevation.periodic
    np.testing.assert_allclose(elevation.values, [math.pi / 9, math.pi / 6])
    ready(dm)
    pixels, codes, meta = open_cache(dm.cache_path)
    assert meta["identities"] == SORTED
    assert len(codes) == len(CHAIRS) * 8 - 1
    for image, (chair, a, e) in zip(pixels, codes, strict=True):
        view = (AZIMUTHS[a], ELEVATIONS[e])
        expected = np.zeros((CROPPED, CROPPED), dtype=np.uint8)
        expected[CHAIR_ROWS, CHAIR_COLS] = 255 - shade(*view)  # inverted: a light chair on black
        np.testing.assert_array_equal(image[0], expected, err_msg=f"{SORTED[chair]} {view}")
    assert (SORTED.index(MISSING[0]), 2, 1) not in set(map(tuple, codes.tolist()))


def test_missing_views_are_reported_and_groups_still_vary_one_factor(chairs_root, tmp_path, caplog):
    dm = chairs(chairs_root, tmp_path, layout={"azimuth": 1, "elevation": 1, "intrinsic": None})
    with caplog.at_level(logging.WARNING):
        ready(dm)
    assert "1 of 6 identities lack some of the 8 combinations" in caplog.text
    meta = open_cache(dm.cache_path)[2]
    assert meta["incomplete_identities"] == 1 and meta["incomplete_examples"] == [MISSING[0]]
    assert meta["skipped_files"] == 0
    assert group_types_seen(dm) == {"azimuth", "elevation", "intrinsic"}


def test_splits_are_identity_disjoint_and_seeded_by_split_seed(chairs_root, tmp_path):
    def splits(**overrides):
        dm = ready(chairs(chairs_root, tmp_path, **overrides))
        return {name: dm.split_info(name).identities.tolist() for name in ("train", "val", "test")}

    first = splits(split_seed=3)
    assert sorted(sum(first.values(), [])) == list(range(len(CHAIRS)))
    assert all(len(ids) == 2 for ids in first.values())
    assert splits(split_seed=3, seed=11) == first  # the training seed keeps the split
    assert splits(split_seed=4) != first


def test_the_default_split_has_the_papers_proportions(chairs_root, tmp_path):
    # 0.86 / 0.03 / 0.11 of 6 chairs: val and test get two each (enough to vary identity in a
    # group), train the other two.
    dm = ready(chairs(chairs_root, tmp_path, split=None))
    assert [len(dm.split_info(s).identities) for s in ("train", "val", "test")] == [2, 2, 2]


def test_a_second_setup_reads_no_image(chairs_root, tmp_path, monkeypatch):
    ready(chairs(chairs_root, tmp_path))

    def no_reading(*args, **kwargs):
        raise AssertionError("an image was decoded although the cache exists")

    monkeypatch.setattr(images, "read_rgb", no_reading)
    dm = ready(chairs(chairs_root, tmp_path))
    assert len(dm.split_info("train").rows) > 0


def test_rgb_and_no_inversion_keep_the_colours(chairs_root, tmp_path):
    dm = ready(chairs(chairs_root, tmp_path, channels=3, invert=False, crop=False, image_size=SIZE))
    pixels, codes, _ = open_cache(dm.cache_path)
    chair, a, e = codes[0]
    k = CHAIRS.index(SORTED[chair])
    assert pixels.shape[1:] == (3, SIZE, SIZE)
    assert np.all(pixels[0][:, 4:20, 4 + k : 14 + k] == shade(AZIMUTHS[a], ELEVATIONS[e]))
    assert np.all(pixels[0][:, :4] == 255)  # the white background stays white


def test_a_root_without_renders_says_what_is_expected(tmp_path):
    (tmp_path / "rendered_chairs" / "chair" / "renders").mkdir(parents=True)
    with pytest.raises(ConfigError) as error:
        chairs(tmp_path, tmp_path)
    message = str(error.value)
    assert "<root>/*/renders/image_*_p*_t*_r*.png" in message
    assert "renders/image_000_p020_t000_r096.png" in message
    assert f"Did you mean dataset.root={tmp_path / 'rendered_chairs'}?" in message
    with pytest.raises(ConfigError, match="does not exist"):
        chairs(tmp_path / "nowhere", tmp_path)
    with pytest.raises(ConfigError, match="dataset.root is not set"):
        chairs(None, tmp_path)


def test_a_misnamed_file_stops_or_is_skipped(tmp_path):
    root = write_chairs(tmp_path / "rendered_chairs")
    renders = root / "a_chair" / "renders"
    (renders / "image_001_p020_t000.png").write_bytes(b"")
    (renders / "notes.txt").write_text("not a png: ignored")
    with pytest.raises(ConfigError, match=r"image_001_p020_t000.png.*image_NNN_pPPP_tTTT_rRRR"):
        chairs(root, tmp_path)
    dm = ready(chairs(root, tmp_path / "cache", skip_bad_files=True))
    meta = open_cache(dm.cache_path)[2]
    assert meta["skipped_files"] == 1
    assert meta["skipped_examples"] == [str(renders / "image_001_p020_t000.png")]


def test_two_renders_of_one_view_are_an_error(tmp_path):
    root = write_chairs(tmp_path / "rendered_chairs")
    renders = root / "b_chair" / "renders"
    first = next(renders.glob("image_*_p020_t011_r096.png"))
    (renders / "image_099_p020_t011_r120.png").write_bytes(first.read_bytes())
    with pytest.raises(
        ConfigError, match=r"image_.*_p020_t011_r.*image_.*_p020_t011_r.*one render"
    ):
        chairs(root, tmp_path)


def test_a_truncated_png_stops_naming_it_and_leaves_no_cache_or_is_skipped(tmp_path):
    root = write_chairs(tmp_path / "rendered_chairs")
    broken = next((root / "e_chair" / "renders").glob("image_*_p030_t348_r096.png"))
    broken.write_bytes(broken.read_bytes()[:60])
    cache_dir = tmp_path / "cache"
    with pytest.raises(ConfigError, match=f"{broken.name}.*skip_bad_files=true"):
        ready(chairs(root, cache_dir))
    assert os.listdir(cache_dir) == []
    dm = ready(chairs(root, cache_dir, skip_bad_files=True))
    _, codes, meta = open_cache(dm.cache_path)
    assert len(codes) == len(CHAIRS) * 8 - 2
    assert meta["skipped_files"] == 1 and meta["skipped_examples"] == [str(broken)]
    assert meta["incomplete_identities"] == 2


def test_without_a_root_the_factory_gives_the_procedural_chairs(chairs_root, tmp_path, caplog):
    common = {"image_size": 16, "cache_dir": tmp_path, "n_identities": 7}
    with caplog.at_level(logging.WARNING):
        procedural = chairs_datamodule(None, crop=True, background=[255, 255, 255], **common)
    assert type(procedural) is ChairsDataModule and not caplog.records
    assert procedural.cache_config() == ChairsDataModule(**common).cache_config()
    with caplog.at_level(logging.WARNING):
        chairs_datamodule(None, invert=False, skip_bad_files=True, **common)
    assert "dataset.invert, dataset.skip_bad_files" in caplog.text
    real = chairs_datamodule(str(chairs_root), render_seed=3, supersample=2, **common)
    assert type(real) is Chairs3DDataModule and real.source == chairs_root


def test_the_chairs_config_keeps_the_procedural_chairs_without_a_root(tmp_path):
    dm = build(compose_train(tmp_path, "dataset=chairs", "paths.output_dir=unused").dataset)
    assert type(dm) is ChairsDataModule
    assert dm.n_identities == 500 and dm.split == {"train": 0.8, "val": 0.1, "test": 0.1}
    assert dm.group_types == ["azimuth", "intrinsic"]


# A run small enough for 2 CPU cores: 16 x 16 images, a tiny network, two steps.
TINY_RUN = [
    "dataset.image_size=16",
    "dataset.group_size=2",
    "dataset.groups_per_batch=2",
    "dataset.batches_per_epoch=2",
    "dataset.val_batches=1",
    "model.net.latent_dim=8",
    "model.net.encoder_filters=[4,4,4]",
    "model.net.decoder_filters=[4,4,4]",
    "trainer.max_epochs=1",
    "trainer.enable_model_summary=false",
    "trainer.enable_progress_bar=false",
    "logger=none",
    "callbacks.latent_sweep.num_images=2",
    "callbacks.latent_sweep.reference_images=4",
    "callbacks.latent_sweep.steps=3",
    "callbacks.equivariance_plot.num_images=8",
    "callbacks.posterior_uncertainty.samples=2",
]


def train_tiny(cache_dir: Path, run_dir: Path, *overrides: str) -> dict[str, float]:
    """``python train.py <overrides>`` with :data:`TINY_RUN`, through the real config tree."""
    cfg = compose_train(cache_dir, *TINY_RUN, f"paths.output_dir={run_dir}", *overrides)
    return train(cfg)


def test_training_on_the_renders_end_to_end(chairs_root, tmp_path):
    metrics = train_tiny(
        tmp_path / "cache",
        tmp_path / "run",
        "dataset=chairs",
        f"dataset.root={chairs_root}",
        "dataset.split={train: 2, val: 2, test: 2}",
    )
    assert np.isfinite(metrics["val/loss"]) and "test/recon_mse" in metrics
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
