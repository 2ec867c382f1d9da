"""Render once, memory-map forever: the on-disk cache of a data set's images and factor codes.

Rendering or decoding a data set takes minutes; a training step must not wait for it, and DDP
ranks and data-loader workers must not each hold a copy. So ``prepare_data`` writes every image
once into a uint8 ``.npy`` array next to its code table, and every process memory-maps it.

A cache directory is named by a hash of everything that changes its pixels, so changing the
config can never silently reuse stale images, and it appears atomically (written elsewhere,
then renamed), so a crash or a racing process can never leave a half-written cache behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
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
    n_items: int,
    views_per_item: int,
    image_shape: tuple[int, int, int],
    produce: Callable[[int], np.ndarray],
    codes: np.ndarray,
    meta: Mapping[str, Any],
    desc: str,
) -> Path:
    """Write ``root/key`` unless it is already there, and return its path.

    ``produce(i)`` returns item ``i``'s views as ``uint8 [views_per_item, C, H, W]``; they are
    stored at rows ``i * views_per_item ...``, so ``codes`` (one row per image) must be in the
    same order. ``meta`` (factors, column names, config) is stored as ``meta.json``. If another
    process finishes the same cache first, its copy is kept and ours is discarded.
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
    codes = np.asarray(codes)
    n_images = n_items * views_per_item
    if codes.ndim != 2 or codes.shape[0] != n_images:
        raise ValueError(f"codes must have {n_images} rows (one per image), got {codes.shape}")
    tmp = _make_temp_dir(root, key)
    try:
        images = np.lib.format.open_memmap(
            tmp / IMAGES, mode="w+", dtype=np.uint8, shape=(n_images, *image_shape)
        )
        expected = (views_per_item, *image_shape)
        for i in tqdm(range(n_items), desc=desc, unit="item"):
            views = produce(i)
            if views.dtype != np.uint8 or views.shape != expected:
                raise ValueError(
                    f"produce({i}) must return uint8 {expected}, got {views.dtype} {views.shape}"
                )
            images[i * views_per_item : (i + 1) * views_per_item] = views
        images.flush()
        del images
        np.save(tmp / CODES, codes)
        header = {"n_items": n_items, "views_per_item": views_per_item, "shape": image_shape}
        (tmp / META).write_text(json.dumps({**header, **meta}, indent=1, default=_to_json))
        try:
            os.replace(tmp, final)
        except OSError:
            if not is_complete(final):
                raise
            log.info("Another process finished the cache %s first; keeping its copy.", final)
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


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
