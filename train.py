"""Train DC-IGN: ``python train.py [group=option ...] [key=value ...]`` (see README)."""

import hydra
from omegaconf import DictConfig

from dcign.training import run_or_explain, train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Train; returns the metric a Hydra sweeper (e.g. Optuna) optimizes."""
    metrics = run_or_explain(train, cfg)
    return metrics.get(str(cfg.get("optimized_metric", "val/loss")))


if __name__ == "__main__":
    main()
