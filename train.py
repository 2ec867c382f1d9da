"""Train DC-IGN: ``python train.py [group=option ...] [key=value ...]`` (see README)."""

import logging
import sys

import hydra
from omegaconf import DictConfig

from dcign.errors import ConfigError
from dcign.training import train

log = logging.getLogger("dcign")


def _user_error(error: BaseException) -> ConfigError | None:
    """The ConfigError behind an exception, also when Hydra's instantiate wrapped it."""
    while error is not None:
        if isinstance(error, ConfigError):
            return error
        error = error.__cause__ or error.__context__
    return None


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        metrics = train(cfg)
    except Exception as error:
        user_error = _user_error(error)
        if user_error is None:
            raise
        log.error("%s", user_error)
        sys.exit(2)
    return metrics.get(str(cfg.get("optimized_metric", "val/loss")))


if __name__ == "__main__":
    main()
