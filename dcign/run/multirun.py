"""DDP inside a Hydra multirun job: children that run this job, not the whole sweep again.

Lightning's DDP starts ranks 1.. by running the program again with its command line plus
``hydra.run.dir=<run dir>``. In a multirun job that command line still holds ``-m`` and every
swept value, so each child would start the whole sweep again (in the sweep's directories),
and the run dir it passes is the single-run pattern, not the job's directory. Around each
multirun job this module makes the command line the job's own (its resolved overrides, no
``-m``) and Hydra's run dir the job's output dir, so the children join exactly this job; after
the job it tears the process group down and forgets the rendezvous port, so that the next job
of the sweep starts its own.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence

import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import read_write

# Hydra flags that take a value as the next argument (the job needs the same config source).
_FLAGS_WITH_VALUE = {"-cp", "--config-path", "-cn", "--config-name", "-cd", "--config-dir"}
_MULTIRUN_FLAGS = {"-m", "--multirun"}
# Set by Lightning's launcher for the children; stale values would join the next job to this
# job's (finished) rendezvous.
_RENDEZVOUS = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "NODE_RANK", "LOCAL_RANK")


def job_command(argv: Sequence[str], job_overrides: Sequence[str]) -> list[str]:
    """``argv`` of a multirun as the command of one of its jobs: config flags kept, ``-m`` and
    the sweep's overrides replaced by the job's own overrides."""
    command = [argv[0]]
    arguments = iter(argv[1:])
    for argument in arguments:
        if argument in _MULTIRUN_FLAGS or not argument.startswith("-"):
            continue
        command.append(argument)
        if argument in _FLAGS_WITH_VALUE:
            command.append(next(arguments, ""))
    return [*command, *job_overrides]


@contextlib.contextmanager
def ddp_ready_job() -> Iterator[None]:
    """Around one training job: in a multirun, point DDP children at this job only."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        yield
        return
    hydra = HydraConfig.get()
    argv, run_dir = sys.argv, hydra.run.dir
    environment = {name: os.environ.get(name) for name in _RENDEZVOUS}
    sys.argv = job_command(argv, list(hydra.overrides.task))
    with read_write(hydra):
        hydra.run.dir = hydra.runtime.output_dir
    try:
        yield
    finally:
        sys.argv = argv
        with read_write(hydra):
            hydra.run.dir = run_dir
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        for name, value in environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
