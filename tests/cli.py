"""Running ``python train.py`` as users do, from tests: to completion or in the background."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, tiny

# Runs that only check training itself: no pictures (slow, and tested on their own), CSV only.
QUIET = [
    "logger=csv",
    "test=false",
    "callbacks.latent_sweep=null",
    "callbacks.baseline_comparison=null",
    "callbacks.equivariance_plot=null",
    "callbacks.posterior_uncertainty=null",
]


def cli_command(*args: str) -> list[str]:
    """``train.py`` with the tiny overrides; ``-m``-style flags go first, as Hydra wants."""
    flags = [arg for arg in args if arg.startswith("-")]
    overrides = [arg for arg in args if not arg.startswith("-")]
    return [sys.executable, "train.py", *flags, *tiny(overrides), *overrides]


def cli_env(cache_dir: Path) -> dict[str, str]:
    return {**os.environ, "DCIGN_CACHE": str(cache_dir), "WANDB_MODE": "offline"}


def run_cli(*args: str, cache_dir: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``train.py`` to the end and capture its output."""
    return subprocess.run(
        cli_command(*args),
        cwd=ROOT,
        env=cli_env(cache_dir),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_cli(*args: str, cache_dir: Path, log: Path) -> subprocess.Popen:
    """Start ``train.py`` in the background (output to ``log``), for tests that signal it."""
    with open(log, "w") as out:
        return subprocess.Popen(
            cli_command(*args), cwd=ROOT, env=cli_env(cache_dir), stdout=out, stderr=out
        )
