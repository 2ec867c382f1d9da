"""Summarize a sweep from its directories: ``python -m dcign.summarize multirun/train/<date_time>``.

Writes what a multirun writes when it ends (dcign/run/sweep_summary.py): ``summary.csv``,
``summary.md``, ``plots/`` and the sweep's W&B run - for a sweep that was stopped, or whose
SLURM jobs ran elsewhere, or to summarize again after more jobs finished.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from dcign.errors import ConfigError
from dcign.run.sweep_summary import SUMMARY_MD, summarize, unfinished_message


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="the sweep directory (multirun/...)")
    parser.add_argument(
        "--no-wandb", action="store_true", help="no W&B run (default: when the jobs logged to W&B)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        summary = summarize(args.sweep_dir, False if args.no_wandb else None)
    except ConfigError as error:  # not a sweep directory: a usage error (exit status 2)
        parser.error(str(error))
    plots = len(summary.files) - 2  # the files after summary.csv and summary.md
    print(f"Wrote {args.sweep_dir / SUMMARY_MD}, summary.csv and {plots} plots.")
    if summary.wandb_run is not None:
        print(f"W&B run: {summary.wandb_run} (wandb sync {summary.wandb_run})")
    if summary.unfinished:
        print(unfinished_message(summary))


if __name__ == "__main__":
    main()
