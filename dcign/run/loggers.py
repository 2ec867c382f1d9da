"""Experiment loggers from config, built so that logging can never take a run down.

W&B is the dashboard users read, but training machines are often offline or have no API key;
a run must then log offline (and be synced later with ``wandb sync``) instead of failing at
start-up or, worse, hours in.
"""

from __future__ import annotations

import logging
import netrc
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from hydra.utils import instantiate
from pytorch_lightning.loggers import Logger, WandbLogger

log = logging.getLogger(__name__)


def wandb_key_available() -> bool:
    """True when W&B could authenticate: an env key or a ``wandb login`` entry in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def run_identity() -> dict[str, str]:
    """A W&B run's name and group when the config leaves them null, from Hydra's job.

    In a sweep the name is the job's values of the swept keys (e.g.
    ``dataset.ratio.intrinsic=5,model.objective.invariance_weight=0.1``), so the jobs can be
    told apart in the dashboard's run table; a single run is named by all its overrides (Hydra's
    ``override_dirname``), or by the task without any. The group is the sweep's directory
    (every job of one ``-m`` run) or the run's own, so a multirun is one group to compare in a
    parallel-coordinates chart.
    """
    if not HydraConfig.initialized():
        return {}
    hydra = HydraConfig.get()
    multirun = hydra.mode == RunMode.MULTIRUN
    swept = _swept_keys(hydra) if multirun else set()
    values = [o for o in hydra.overrides.task if o.split("=", 1)[0].lstrip("+~") in swept]
    directory = Path(hydra.sweep.dir if multirun else hydra.run.dir)
    return {
        "name": ",".join(values) or hydra.job.override_dirname or hydra.job.name,
        "group": run_group(directory),
    }


def run_group(directory: Path) -> str:
    """The W&B group of the runs made in ``directory`` (a sweep's, or a single run's): its last
    two path parts, e.g. ``train/2024-05-01_12-00-00``; the sweep summary's run joins it."""
    return f"{directory.parent.name}/{directory.name}"


def _swept_keys(hydra: Any) -> set[str]:
    """Keys a multirun varies: sweeps on its command line and a sweeper's search space."""
    arguments = [argument for argument in sys.argv[1:] if not argument.startswith("-")]
    try:
        overrides = OverridesParser.create().parse_overrides(arguments)
    except Exception:  # noqa: BLE001 - a name is cosmetic; never fail a run over it
        overrides = []
    swept = {o.key_or_group for o in overrides if o.is_sweep_override()}
    return swept | set((hydra.sweeper.get("params") or {}).keys())


def _prepare_wandb(options: dict[str, Any]) -> dict[str, Any]:
    """Name and group the run, choose online or offline, and start a fresh W&B session.

    W&B reads its mode from the environment once per process session; a sweep runs many jobs
    in one process, so a finished job's session would impose its mode on the next one.
    """
    import wandb

    for key, value in run_identity().items():
        if options.get(key) is None:
            options[key] = value
    if wandb.run is None:
        wandb.teardown()
    if not options.get("offline", True) and not wandb_key_available():
        log.warning(
            "W&B online logging was requested but no API key is set (WANDB_API_KEY or "
            "`wandb login`); logging offline instead. Sync later with `wandb sync`."
        )
        options["offline"] = True
    if options.get("offline", True):
        os.environ.setdefault("WANDB_MODE", "offline")
    return options


def build_loggers(config: Mapping[str, Any] | None) -> list[Logger]:
    """Instantiate every configured logger; one that cannot start is dropped with a warning.

    An online W&B logger that cannot reach its server (network down, wrong host, expired key)
    is started again offline, with one warning, so the run keeps its dashboard data for a
    later ``wandb sync``.
    """
    loggers: list[Logger] = []
    for name, options in (config or {}).items():
        if not options or "_target_" not in options:
            continue
        options = dict(options)
        is_wandb = options["_target_"].endswith("WandbLogger")
        if is_wandb:
            options = _prepare_wandb(options)
        try:
            logger = _start(options)
        except Exception as error:  # noqa: BLE001 - any logger failure must not stop training
            if is_wandb and not options.get("offline", True):
                log.warning(
                    "W&B could not start online (%s); logging offline instead. Sync later with "
                    "`wandb sync`.",
                    error,
                )
                logger = _start_offline(name, options)
            else:
                log.warning(
                    "Logger %r could not start (%s); training continues without it.", name, error
                )
                logger = None
        if logger is not None:
            loggers.append(logger)
    return loggers


def _start(options: Mapping[str, Any]) -> Logger:
    logger = instantiate(dict(options), _convert_="all")
    if isinstance(logger, WandbLogger):
        _drop_unset_anonymous(logger)
        _ = logger.experiment  # start the run now, not in the middle of training
    return logger


def _drop_unset_anonymous(logger: WandbLogger) -> None:
    """Leave W&B's retired ``anonymous`` setting out of the run's options when it is unset.

    Lightning passes ``anonymous=None`` to ``wandb.init`` whatever the config says, and W&B
    answers any value with a deprecation warning in every run's log; a user's log should only
    warn about something the user can act on.
    """
    if logger._wandb_init.get("anonymous", False) is None:
        del logger._wandb_init["anonymous"]


def _start_offline(name: str, options: Mapping[str, Any]) -> Logger | None:
    import wandb

    wandb.finish()  # the failed online attempt may have left a half-started run behind
    wandb.teardown()  # and a session whose settings (online mode) a new run would inherit
    os.environ["WANDB_MODE"] = "offline"
    try:
        return _start({**options, "offline": True})
    except Exception as error:  # noqa: BLE001 - any logger failure must not stop training
        log.warning("Logger %r could not start (%s); training continues without it.", name, error)
        return None
