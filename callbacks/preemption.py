"""Save the run when the cluster says it is about to end it (SIGTERM, SIGUSR1, SIGUSR2).

Schedulers announce preemption and time limits with a signal a little before they kill the
job: SLURM sends SIGUSR1 with ``--signal=USR1@90``, submitit (the SLURM launcher) SIGUSR2,
Kubernetes and most batch systems SIGTERM. Lightning turns SIGTERM into a clean stop at the
next batch boundary (agreed by all DDP ranks, since rank 0 broadcasts it) but saves nothing.
This callback makes the warning signals mean the same, and on that stop writes ``last.ckpt`` -
model, both optimizers, loop and sampler positions - so that ``ckpt_path=last`` continues
exactly where the run stopped. A handler that was installed before (submitit's, which requeues
the job) is called after the checkpoint is safely written.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.utilities.exceptions import SIGTERMException

from dcign.errors import ConfigError

log = logging.getLogger(__name__)


class PreemptionCheckpoint(pl.Callback):
    """Writes ``dirpath/filename.ckpt`` when training stops on SIGTERM or one of ``signals``.

    After the stop, :attr:`saved_path` is the checkpoint written and :attr:`signal_number` the
    signal that caused it, so the entry point can say how to resume and exit with
    ``128 + signal`` as a killed process would.
    """

    def __init__(
        self, dirpath: str, filename: str = "last", signals: Sequence[str] = ("SIGUSR1", "SIGUSR2")
    ) -> None:
        try:
            self.signals = [signal.Signals[name] for name in signals]
        except KeyError as error:
            raise ConfigError(
                f"callbacks.preemption.signals must name signals such as SIGUSR1, got {signals}."
            ) from error
        self.dirpath = Path(dirpath)
        self.filename = filename
        self.saved_path: Path | None = None
        self.signal_number: int = signal.SIGTERM
        self._previous: dict[signal.Signals, Any] = {}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Make the warning signals Lightning's SIGTERM stop (main thread only: Python's rule)."""
        if stage == "fit" and threading.current_thread() is threading.main_thread():
            for signum in self.signals:
                self._previous[signum] = signal.signal(signum, self._on_warning)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _on_warning(self, signum: int, frame: FrameType | None) -> None:
        log.warning("Received %s: stopping at the next batch", signal.Signals(signum).name)
        self.signal_number = signum
        signal.raise_signal(signal.SIGTERM)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        """On a signal stop during fitting, save (every rank takes part, rank 0 writes)."""
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != "fit":
            return
        path = self.dirpath / f"{self.filename}.ckpt"
        trainer.save_checkpoint(path)
        self.saved_path = path
        step = trainer.global_step
        log.warning("Stopped by signal %d at step %d; saved %s", self.signal_number, step, path)
        previous = self._previous.get(signal.Signals(self.signal_number))
        if callable(previous):  # e.g. submitit's requeue, now that nothing is lost
            previous(self.signal_number, None)
