"""A callback for subprocess tests: records what each training step saw, and can freeze a run.

Added to a ``train.py`` run with ``+callbacks.recorder._target_=tests.recorder.BatchRecorder``.
Each step appends one JSON line (global step and a fingerprint of the batch) before the step
runs, flushed at once, so the record survives a SIGKILL. With ``freeze_at_batch`` the run
writes ``<path>.frozen`` after that batch and then waits until it receives SIGTERM (or SIGUSR1,
which the preemption callback turns into SIGTERM), so a test can signal it at a known point.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl


class BatchRecorder(pl.Callback):
    def __init__(self, path: str, freeze_at_batch: int | None = None) -> None:
        self.path = Path(path)
        self.freeze_at_batch = freeze_at_batch
        self.batches = 0

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        digest = hashlib.sha256()
        for field in (batch.images, batch.identity, batch.factors, batch.group_type):
            digest.update(field.detach().cpu().contiguous().numpy().tobytes())
        record = {"step": trainer.global_step, "epoch": trainer.current_epoch, "batch": batch_idx}
        with open(self.path, "a") as file:
            file.write(json.dumps({**record, "fingerprint": digest.hexdigest()}) + "\n")

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self.batches += 1
        if self.batches == self.freeze_at_batch:
            self.path.with_suffix(".frozen").write_text(str(trainer.global_step))
            while not trainer.received_sigterm:
                time.sleep(0.1)


def read_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]
