"""Checks shared by the data sets read from users' files: roots, and files that cannot be read.

A real data set on disk is the user's: a wrong path or one broken file among thousands must
give a message that names the path and says what was expected, and a broken file is never
dropped silently. It stops the conversion by default; with ``dataset.skip_bad_files=true``
it is skipped, counted, and the count is logged and stored in the cache metadata.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig

from dcign.errors import ConfigError

log = logging.getLogger(__name__)

# How many skipped file names are kept in the cache metadata and the log (the count is exact).
LISTED = 20


def existing_path(
    path: str | os.PathLike | None, option: str, expected: str, example: str, *, is_dir: bool
) -> Path:
    """``path`` as an absolute path, or a ConfigError saying what ``option`` should point to.

    ``expected`` describes the format ("a folder of <model>/renders/image_*.png"), ``example``
    is a command-line example; both go into the message.
    """
    if path is None or str(path) == "":
        raise ConfigError(f"{option} is not set. It must point to {expected}. Example: {example}")
    resolved = from_start_dir(Path(path).expanduser())
    shown = f"'{path}'" if str(path) == str(resolved) else f"'{path}' ({resolved})"
    kind = "folder" if is_dir else "file"
    if not resolved.exists():
        raise ConfigError(
            f"{option}={shown} does not exist. It must point to {expected}. Example: {example}"
        )
    if resolved.is_dir() != is_dir:
        raise ConfigError(
            f"{option}={shown} is not a {kind}. It must point to {expected}. Example: {example}"
        )
    return resolved


def from_start_dir(path: Path) -> Path:
    """``path`` made absolute against the directory the program started in.

    With ``hydra.job.chdir=true`` the working directory is the run's output folder, where a
    relative data path given on the command line does not exist (and a relative cache there
    would be rebuilt for every run).
    """
    if path.is_absolute():
        return path
    start = Path(HydraConfig.get().runtime.cwd) if HydraConfig.initialized() else Path.cwd()
    return start / path


class BadFiles:
    """Decides what happens to an input file that cannot be read: stop (default) or skip.

    ``kind`` names what the files are ("image", "mesh") for messages. Call :meth:`handle` in
    the ``except`` clause of the read; it raises a ConfigError naming the file unless skipping
    is on, in which case the file is counted. :meth:`summary` goes into the cache metadata.
    """

    def __init__(self, skip: bool, kind: str) -> None:
        if not isinstance(skip, bool):
            raise ConfigError(f"dataset.skip_bad_files must be true or false, got {skip!r}.")
        self.skip = skip
        self.kind = kind
        self.skipped: list[str] = []

    def handle(self, path: str | os.PathLike, error: BaseException) -> None:
        """Stop with a message naming ``path``, or count it as skipped."""
        if not self.skip:
            raise ConfigError(
                f"Cannot read the {self.kind} '{path}' ({error}). Replace or delete that file, "
                "or set dataset.skip_bad_files=true to skip unreadable files (they are counted "
                "and listed in the log)."
            ) from error
        if len(self.skipped) < LISTED:
            log.warning("Skipping the unreadable %s '%s' (%s)", self.kind, path, error)
        self.skipped.append(os.fspath(path))

    def summary(self) -> dict[str, Any]:
        """The count and the first file names, for the cache metadata; logs the count."""
        if self.skipped:
            log.warning("Skipped %d unreadable %s files", len(self.skipped), self.kind)
        return {"skipped_files": len(self.skipped), "skipped_examples": self.skipped[:LISTED]}
