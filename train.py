"""Train DC-IGN: ``python train.py [group=option ...] [key=value ...]`` (see README)."""

import logging
import sys

import hydra
from omegaconf import DictConfig

from dcign.training import train, user_error

log = logging.getLogger("dcign")


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        metrics = train(cfg)
    except Exception as error:
        problem = user_error(error)
        if problem is None:
            raise
        log.error("%s", problem)
        sys.exit(2)
    return metrics.get(str(cfg.get("optimized_metric", "val/loss")))


if __name__ == "__main__":
    main()
