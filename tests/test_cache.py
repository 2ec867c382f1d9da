"""The render-once cache: stable keys, atomic writes, reuse, and clear errors."""

from __future__ import annotations

import errno
import json

import numpy as np
import pytest

from datamodules.cache import build_cache, cache_key, open_cache
from dcign.errors import ConfigError

SHAPE = (1, 4, 5)
VIEWS = 3


def views_of(item: int) -> np.ndarray:
    values = np.arange(VIEWS * np.prod(SHAPE)).reshape(VIEWS, *SHAPE) + 17 * item
    return (values % 256).astype(np.uint8)


def codes_for(n_items: int) -> np.ndarray:
    return np.array([[i, v] for i in range(n_items) for v in range(VIEWS)], dtype=np.int64)


def build(root, produce=views_of, n_items: int = 4, key: str = "k1", meta=None):
    items = ((produce(i), codes_for(n_items)[i * VIEWS : (i + 1) * VIEWS]) for i in range(n_items))
    return build_cache(
        root,
        key,
        SHAPE,
        items,
        n_items * VIEWS,
        meta or {"columns": ["identity", "azimuth"], "config": {"size": 5}},
        desc="test",
        total=n_items,
    )


def test_key_is_stable_short_and_ignores_dict_order():
    config = {"generator": "faces", "version": 1, "grid": [0.0, 0.5], "image_size": 16}
    key = cache_key(config)
    assert key == cache_key(dict(reversed(list(config.items()))))
    assert key == cache_key({**config, "image_size": np.int64(16), "grid": np.array([0.0, 0.5])})
    assert len(key) == 16 and int(key, 16) >= 0


@pytest.mark.parametrize(
    "change", [{"image_size": 32}, {"version": 2}, {"grid": [0.0, 0.25]}, {"seed": 1}]
)
def test_key_changes_with_anything_that_changes_pixels(change):
    config = {"generator": "faces", "version": 1, "grid": [0.0, 0.5], "image_size": 16}
    assert cache_key({**config, **change}) != cache_key(config)


def test_cache_reads_back_what_was_written(tmp_path):
    path = build(tmp_path)
    assert path == tmp_path / "k1"
    images, codes, meta = open_cache(path)
    assert isinstance(images, np.memmap) and images.dtype == np.uint8
    assert images.shape == (4 * VIEWS, *SHAPE)
    np.testing.assert_array_equal(images, np.concatenate([views_of(i) for i in range(4)]))
    np.testing.assert_array_equal(codes, codes_for(4))
    assert meta["columns"] == ["identity", "azimuth"] and meta["config"] == {"size": 5}
    assert meta["n_images"] == 4 * VIEWS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k1"]  # no temporary left


def test_second_build_does_not_produce_again(tmp_path):
    build(tmp_path)

    def must_not_run(item: int) -> np.ndarray:
        raise AssertionError("rendered again")

    assert build(tmp_path, produce=must_not_run) == tmp_path / "k1"


def test_failure_while_producing_leaves_nothing_behind(tmp_path):
    root = tmp_path / "cache"

    def fails_late(item: int) -> np.ndarray:
        if item == 2:
            raise RuntimeError("renderer crashed")
        return views_of(item)

    with pytest.raises(RuntimeError, match="renderer crashed"):
        build(root, produce=fails_late)
    assert list(root.iterdir()) == []
    assert build(root).exists()  # and the next attempt starts from scratch


def test_wrong_views_are_rejected_and_cleaned_up(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        build(tmp_path, produce=lambda item: views_of(item).astype(np.float32))
    assert list(tmp_path.iterdir()) == []


def test_uncreatable_root_is_a_config_error_naming_the_path(tmp_path):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where a directory should be")
    root = blocker / "cache"
    with pytest.raises(ConfigError, match="dataset.cache_dir") as error:
        build(root)
    assert str(root) in str(error.value)


def test_race_loser_keeps_the_winners_cache(tmp_path):
    def racing(item: int) -> np.ndarray:
        if item == 3:  # another process finishes the same cache meanwhile
            build(tmp_path)
            meta = tmp_path / "k1" / "meta.json"
            meta.write_text(json.dumps({**json.loads(meta.read_text()), "winner": True}))
        return views_of(item)

    path = build(tmp_path, produce=racing)
    assert json.loads((path / "meta.json").read_text())["winner"] is True
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k1"]


def test_incomplete_cache_directory_is_reported(tmp_path):
    (tmp_path / "k1").mkdir()
    (tmp_path / "k1" / "images.npy").write_bytes(b"")
    with pytest.raises(ConfigError, match="Delete that directory"):
        build(tmp_path)


def test_unreadable_cache_is_reported(tmp_path):
    path = build(tmp_path)
    (path / "codes.npy").write_bytes(b"garbage")
    with pytest.raises(ConfigError, match="Cannot read the data cache"):
        open_cache(path)


def test_items_may_have_any_number_of_views_and_the_array_is_cut_to_fit(tmp_path):
    """Real data: a chair with missing views, a skipped file (0 views)."""
    counts = [3, 0, 1, 2]
    items = [
        (views_of(i)[:v], np.array([[i, k] for k in range(v)]).reshape(v, 2))
        for i, v in enumerate(counts)
    ]
    meta = {"columns": ["identity", "azimuth"]}
    path = build_cache(tmp_path, "var", SHAPE, iter(items), capacity=12, meta=meta, desc="t")
    images, codes, meta = open_cache(path)
    assert images.shape == (6, *SHAPE) and meta["n_images"] == 6
    np.testing.assert_array_equal(images, np.concatenate([v for v, _ in items]))
    np.testing.assert_array_equal(codes[:, 0], [0, 0, 0, 2, 3, 3])
    assert sorted(p.name for p in (tmp_path / "var").iterdir()) == sorted(
        ["images.npy", "codes.npy", "meta.json"]
    )


def test_meta_can_be_completed_by_the_producer(tmp_path):
    meta = {"columns": ["identity", "azimuth"]}

    def produce(item: int) -> np.ndarray:
        meta["skipped"] = item + 1
        return views_of(item)

    _, _, stored = open_cache(build(tmp_path, produce=produce, meta=meta))
    assert stored["skipped"] == 4


def test_disk_full_is_a_clear_error_and_leaves_nothing(tmp_path):
    def disk_full(item: int) -> np.ndarray:
        if item == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return views_of(item)

    with pytest.raises(ConfigError, match="filled up") as error:
        build(tmp_path, produce=disk_full)
    assert "dataset.cache_dir" in str(error.value)
    assert list(tmp_path.iterdir()) == []
