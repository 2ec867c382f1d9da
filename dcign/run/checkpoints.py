"""Checkpoints that are safe to resume from: written atomically, checked before they load.

A crash or preemption in the middle of writing must never leave a file that loads as valid but
wrong, and resuming a run under a different architecture or latent layout must say so instead
of failing deep inside ``load_state_dict`` (or, for a renamed layout of the same size, loading
silently with latents that now mean something else).
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning_fabric.utilities.cloud_io import get_filesystem
from pytorch_lightning.callbacks import ModelCheckpoint

from dcign.errors import ConfigError


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a local checkpoint to a temporary file beside it, syncs it, then renames it.

    The rename is atomic on POSIX file systems, so ``last.ckpt`` is always either the previous
    complete checkpoint or the new complete one, whatever moment the process dies at. (Remote
    paths keep Lightning's own writer.)
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        if storage_options is not None or not _is_local(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        try:
            with open(temporary, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)


def _is_local(path: str | os.PathLike) -> bool:
    protocol = get_filesystem(path).protocol
    return "file" in (protocol if isinstance(protocol, tuple) else (protocol,))


def last_checkpoint(trainer: pl.Trainer) -> str | None:
    """The newest checkpoint file the run has written so far (``None`` if there is none)."""
    paths = [
        path
        for callback in trainer.checkpoint_callbacks
        if isinstance(callback, ModelCheckpoint)
        for path in (callback.last_model_path, callback.best_model_path)
        if path and os.path.isfile(path)
    ]
    return max(paths, key=os.path.getmtime) if paths else None


def is_intact(path: Path) -> bool:
    """Whether ``path`` is a complete checkpoint archive (torch.save writes a zip file).

    Reading the archive's directory and checksums needs no unpickling, so a truncated copy (a
    full disk, a half-synced file) or a foreign file is recognised before anything loads it.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (zipfile.BadZipFile, OSError, EOFError):
        return False


def newest_intact(directory: Path, besides: Path) -> Path | None:
    """The most recently written intact ``*.ckpt`` in ``directory`` other than ``besides``."""
    candidates = sorted(
        (p for p in directory.glob("*.ckpt") if p.resolve() != besides.resolve()),
        key=os.path.getmtime,
        reverse=True,
    )
    return next((p for p in candidates if is_intact(p)), None)


def check_checkpoint_file(path: Path, given_as: str) -> None:
    """A ConfigError naming ``path`` (given as ``ckpt_path=given_as``) unless it is intact."""
    if not path.is_file():
        raise ConfigError(
            f"ckpt_path={given_as}: {path} is not a file. Pass a checkpoint written by train.py, "
            "e.g. ckpt_path=outputs/train/<run>/checkpoints/last.ckpt."
        )
    if is_intact(path):
        return
    intact = newest_intact(path.parent, besides=path)
    hint = (
        f" The newest intact checkpoint in {path.parent} is {intact.name}: use ckpt_path={intact}."
        if intact
        else ""
    )
    raise ConfigError(
        f"Could not read {path} as a dcign checkpoint: it is truncated or not a checkpoint "
        f"file. Is it a complete file written by train.py?{hint}"
    )


def resume_checkpoint(ckpt_path: str | None, checkpoint_dir: Path) -> None:
    """Check ``ckpt_path`` of a run (a file, or ``last`` in ``checkpoint_dir``) before it starts.

    ``last`` without a ``last.ckpt`` is left to Lightning, which starts afresh with a warning.
    """
    if ckpt_path is None:
        return
    path = checkpoint_dir / "last.ckpt" if ckpt_path == "last" else Path(ckpt_path)
    if ckpt_path == "last" and not path.exists():
        return
    check_checkpoint_file(path, ckpt_path)
    check_resumable(path)


def check_resumable(path: Path) -> None:
    """Refuse a checkpoint that would run code when loaded, and one of the earlier layout
    with one optimizer per network.

    Those counted two steps per batch, so their step counters, schedules and file names mean
    something else; their weights still load for evaluation.
    """
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as error:
        raise ConfigError(
            f"The checkpoint {path} holds objects other than tensors and plain containers, "
            "so it was refused: loading it could run code stored in the file. Resume only from "
            f"checkpoints this program wrote ({error})."
        ) from error
    states = checkpoint.get("optimizer_states", [])
    if len(states) > 1:
        raise ConfigError(
            f"{path} was written by an earlier dcign that kept one optimizer per network "
            f"({len(states)} optimizer states) and counted two steps per batch, so training "
            "cannot resume from it. Its weights still load: evaluate it with "
            f"`python -m dcign.evaluate ckpt_path={path}`, or start a new run."
        )
