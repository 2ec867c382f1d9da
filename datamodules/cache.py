"""Render once, memory-map forever: the on-disk cache of a data set's images and factor codes.

Rendering or decoding a data set takes minutes; a training step must not wait for it, and DDP
ranks and data-loader workers must not each hold a copy. So ``prepare_data`` writes every image
once into a uint8 ``.npy`` array next to its code table, and every process memory-maps it.

A cache directory is named by a hash of everything that changes its pixels, so changing the
config can never silently reuse stale images, and it appears atomically (written elsewhere,
then renamed), so a crash or a racing process can never leave a half-written cache behind.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from dcign.errors import ConfigError

log = logging.getLogger(__name__)

IMAGES = "images.npy"
CODES = "codes.npy"
META = "meta.json"
_FILES = (IMAGES, CODES, META)


def _to_json(value: Any) -> Any:
    """JSON form of the numpy scalars, arrays and paths a config may hold."""
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"cannot put {type(value).__name__} into a cache key: {value!r}")


def cache_key(config: Mapping[str, Any]) -> str:
    """A short, stable name for a cache: sha256 of the config's canonical JSON (16 hex digits).

    ``config`` must hold everything that changes the pixels (generator name and version,
    parameters, image size, seed, factor grids) and nothing else, so that unrelated settings
    share one cache.
    """
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=_to_json)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def is_complete(path: Path) -> bool:
    """Whether ``path`` is a finished cache (it can only exist finished: it is moved in whole)."""
    return all((path / name).is_file() for name in _FILES)


def _make_temp_dir(root: Path, key: str) -> Path:
    """A fresh directory next to the final cache, so that moving it into place is atomic."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{key}.tmp-{os.getpid()}-", dir=root))
    except OSError as error:
        raise ConfigError(
            f"Cannot write the data cache under '{root}' ({error.strerror or error}). The "
            "rendered images are stored there; point it to a writable directory with "
            "dataset.cache_dir=/path/to/cache (or the DCIGN_CACHE environment variable)."
        ) from error


def build_cache(
    root: Path,
    key: str,
    image_shape: tuple[int, int, int],
    items: Iterable[tuple[np.ndarray, np.ndarray]],
    capacity: int,
    meta: Mapping[str, Any],
    desc: str,
    total: int | None = None,
) -> Path:
    """Write ``root/key`` unless it is already there, and return its path.

    ``items`` yields one item at a time (an identity's views, a file's images) as
    ``(uint8 [v, C, H, W], codes [v, K])``; ``v`` may differ between items and be 0 (a chair with
    missing views, a skipped file), so real data sets need not be complete grids. ``capacity``
    bounds the number of images: they are written straight into a memory map of that size
    (no copy of the data set in memory) and the array is cut to the rows written at the end.
    ``meta`` (factors, column names, config) is stored as ``meta.json`` after the last item, so
    a producer may still add to it while it runs (for example the count of skipped files).
    ``total`` is the item count for the progress bar. If another process finishes the same
    cache first, its copy is kept and ours is discarded; on any failure nothing is left behind.
    """
    root = Path(root)
    final = root / key
    if final.exists():
        if not is_complete(final):
            raise ConfigError(
                f"The data cache '{final}' exists but lacks some of {list(_FILES)}; it was not "
                "written by this program or was damaged. Delete that directory to rebuild it."
            )
        return final
    tmp = _make_temp_dir(root, key)
    try:
        n_images, codes = _write_images(tmp / IMAGES, image_shape, items, capacity, desc, total)
        np.save(tmp / CODES, codes)
        header = {"n_images": n_images, "shape": image_shape}
        (tmp / META).write_text(json.dumps({**header, **meta}, indent=1, default=_to_json))
        try:
            os.replace(tmp, final)
        except OSError:
            if not is_complete(final):
                raise
            log.info("Another process finished the cache %s first; keeping its copy.", final)
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError as error:
        shutil.rmtree(tmp, ignore_errors=True)
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise ConfigError(
                f"The disk under '{root}' filled up while writing the data cache {key} "
                f"({error.strerror}); nothing was kept. Free space there or point "
                "dataset.cache_dir (or DCIGN_CACHE) to a larger disk."
            ) from error
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _write_images(
    path: Path,
    image_shape: tuple[int, int, int],
    items: Iterable[tuple[np.ndarray, np.ndarray]],
    capacity: int,
    desc: str,
    total: int | None,
) -> tuple[int, np.ndarray]:
    """Stream ``items`` into the ``.npy`` at ``path``; returns the image count and all codes."""
    images = np.lib.format.open_memmap(
        path, mode="w+", dtype=np.uint8, shape=(capacity, *image_shape)
    )
    codes: list[np.ndarray] = []
    n = 0
    for i, (views, item_codes) in enumerate(tqdm(items, desc=desc, unit="item", total=total)):
        views = np.asarray(views)
        item_codes = np.asarray(item_codes)
        if views.dtype != np.uint8 or views.shape[1:] != tuple(image_shape):
            raise ValueError(
                f"item {i} must be uint8 [v, {', '.join(map(str, image_shape))}], got "
                f"{views.dtype} {views.shape}"
            )
        if item_codes.ndim != 2 or len(item_codes) != len(views):
            raise ValueError(
                f"item {i} has {len(views)} images but codes of shape {item_codes.shape}"
            )
        if n + len(views) > capacity:
            raise ValueError(f"more than capacity={capacity} images were produced")
        images[n : n + len(views)] = views
        if len(views):
            codes.append(item_codes)
        n += len(views)
    images.flush()
    if n < capacity:
        _shrink(path, images, n)
    del images
    return n, (np.concatenate(codes) if codes else np.zeros((0, 1), np.int64))


def _shrink(path: Path, images: np.memmap, n: int) -> None:
    """Rewrite ``path`` with only its first ``n`` images, in chunks (memory stays bounded)."""
    smaller = path.with_name(f"shrink-{path.name}")
    out = np.lib.format.open_memmap(
        smaller, mode="w+", dtype=np.uint8, shape=(n, *images.shape[1:])
    )
    chunk = max(1, (64 << 20) // max(1, int(np.prod(images.shape[1:]))))
    for start in range(0, n, chunk):
        out[start : start + chunk] = images[start : min(n, start + chunk)]
    out.flush()
    del out
    os.replace(smaller, path)


def open_cache(path: Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Memory-map a finished cache: ``(images uint8 [N, C, H, W], codes [N, K], meta)``."""
    path = Path(path)
    try:
        images = np.load(path / IMAGES, mmap_mode="r")
        codes = np.load(path / CODES)
        meta = json.loads((path / META).read_text())
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"Cannot read the data cache '{path}' ({error}). Delete that directory so that "
            "prepare_data() rebuilds it."
        ) from error
    if images.ndim != 4 or images.dtype != np.uint8 or len(codes) != len(images):
        raise ConfigError(
            f"The data cache '{path}' is inconsistent: images {images.dtype} {images.shape}, "
            f"codes {codes.shape}. Delete that directory so that prepare_data() rebuilds it."
        )
    return images, codes, meta
