"""One job of a multirun, as ``train.py`` runs it: its end recorded, its failure its own.

Global rank 0 of every multirun job writes how the job ended to ``status.json``
(dcign/run/job_status.py), which the sweep's summary reads.

With the summary switched on (``hydra.callbacks.sweep_summary``, conf/train.yaml), a
failure ends its own job only: it is logged and recorded, and the job returns nan to the sweeper
(Optuna records a failed trial). Hydra's sweepers would otherwise abort the multirun on a job's
exception - the basic sweeper after the batch, before any multirun-end callback; Optuna at
once - and an explained error (``run_or_explain``) would exit the process, so the other jobs
would not run and nothing would be summarized. A signal still ends the multirun.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from pytorch_lightning.utilities import rank_zero_only

from dcign.errors import RunStoppedError
from dcign.run.job_status import FAILED, FINISHED, STOPPED, JobEnd, write_status
from dcign.run.training import user_error

log = logging.getLogger(__name__)

# The name of the summary's entry under hydra.callbacks: with it, failures end their job only.
SUMMARY_CALLBACK = "sweep_summary"


def sweep_job(function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)`` as one job of ``train.py``; in a multirun, its end is recorded.

    Outside a multirun (a single run, or a DDP child, which Lightning starts as a single run
    of its job) nothing changes.
    """
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return function(*args)
    hydra = HydraConfig.get()
    contain = (hydra.callbacks or {}).get(SUMMARY_CALLBACK) is not None
    return run_recorded(Path(hydra.runtime.output_dir), contain, function, *args)


def run_recorded(directory: Path, contain: bool, function: Callable[..., Any], *args: Any) -> Any:
    """Run ``function(*args)`` and record how it ended in ``directory`` (global rank 0 only:
    a DDP job's other processes and a multi-task SLURM job's other tasks record nothing).

    With ``contain``, a failure (anything but a signal) is logged and the job returns nan; a
    signal, or any failure without ``contain``, is raised again after it is recorded.
    """
    started = time.monotonic()
    try:
        value = function(*args)
    except BaseException as error:
        _record(directory, ending(error, _minutes_since(started)))
        if not contain or ended_by_signal(error):
            raise
        # run_or_explain has logged an explained error's message; anything else is a bug,
        # whose traceback goes to the job's log.
        traceback = None if user_error(error) else error
        log.error(
            "This job failed; the sweep goes on and its summary lists it.", exc_info=traceback
        )
        return math.nan
    _record(directory, JobEnd(FINISHED, minutes=_minutes_since(started), objective=value))
    return value


def ending(error: BaseException, minutes: float) -> JobEnd:
    """The record of a job that ``error`` ended: stopped (on purpose) or failed, and why."""
    if _interrupted(error):
        return JobEnd(STOPPED, "KeyboardInterrupt", minutes)
    cause = user_error(error) or error
    status = STOPPED if isinstance(cause, RunStoppedError) else FAILED
    return JobEnd(status, first_line(cause), minutes)


def ended_by_signal(error: BaseException) -> bool:
    """True for Ctrl-C and for a run stopped by a signal (exit code 128 + signal number)."""
    problem = user_error(error)
    return _interrupted(error) or (problem is not None and problem.exit_code > 128)


def first_line(error: BaseException) -> str:
    """``Type: first line of the message`` - what a table cell can hold of an error."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _interrupted(error: BaseException) -> bool:
    """Whether Ctrl-C is behind ``error``: Lightning answers it with ``sys.exit(1)`` (and
    ignores SIGINT from then on), so only the exception's context tells."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


def _record(directory: Path, end: JobEnd) -> None:
    if rank_zero_only.rank == 0:
        write_status(directory, end)


def _minutes_since(started: float) -> float:
    return (time.monotonic() - started) / 60
