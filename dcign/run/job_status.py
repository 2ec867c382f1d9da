"""How each job of a multirun ended, written into its directory for the sweep's summary.

A sweep's summary is built from the job directories alone - when the multirun ends, or later for
a stopped sweep or SLURM jobs that ran elsewhere - and a directory does not say whether its job
finished, failed or was stopped. So every multirun job writes ``status.json`` when it ends
(dcign/run/sweep_job.py): ``finished`` (with the value returned to the sweeper), ``failed``
(with the error's first line) or ``stopped`` (a deliberate stop before the end: a non-finite
loss, a signal, Ctrl-C), and the job's wall-clock minutes. A job directory without the file
belongs to a job that never ended (killed, or still running): ``incomplete``.

This module is the file's format only, and imports nothing heavy, so that summarizing a sweep
from the command line needs neither torch nor Lightning.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

STATUS_FILE = "status.json"
FINISHED, FAILED, STOPPED, INCOMPLETE = "finished", "failed", "stopped", "incomplete"


@dataclass(frozen=True)
class JobEnd:
    """How a job ended: status, the error's first line, wall-clock minutes, returned value."""

    status: str
    error: str = ""
    minutes: float | None = None
    objective: float | None = None


def write_status(directory: Path, end: JobEnd) -> None:
    """``status.json`` in ``directory``, replaced in one step so that a summary reading it
    meanwhile never sees half a file; a non-finite objective is written as null."""
    record = asdict(end)
    if not _finite(record["objective"]):
        record["objective"] = None
    record["ended"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    directory.mkdir(parents=True, exist_ok=True)
    partial = directory / f".{STATUS_FILE}.{os.getpid()}"
    partial.write_text(json.dumps(record, indent=1) + "\n")
    partial.replace(directory / STATUS_FILE)


def read_status(directory: Path) -> JobEnd:
    """The recorded end of the job in ``directory``; ``incomplete`` when it recorded none."""
    try:
        record = json.loads((directory / STATUS_FILE).read_text())
        return JobEnd(
            str(record["status"]),
            str(record.get("error") or ""),
            record.get("minutes"),
            record.get("objective"),
        )
    except FileNotFoundError:
        return JobEnd(INCOMPLETE)
    except (OSError, ValueError, KeyError, TypeError) as error:
        return JobEnd(INCOMPLETE, f"unreadable {STATUS_FILE}: {error}")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
