"""Train DC-IGN: ``python train.py [group=option ...] [key=value ...]`` (see README)."""

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from dcign.run.sweep_job import sweep_job
from dcign.run.training import optimized_value, run_or_explain, train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Train; returns the metric a Hydra sweeper (e.g. Optuna) optimizes. A multirun job also
    records how it ended, for the sweep's summary (dcign/run/sweep_job.py)."""
    return sweep_job(train_and_score, cfg)


def train_and_score(cfg: DictConfig) -> float | None:
    metrics = run_or_explain(train, cfg)
    sweeping = HydraConfig.get().mode == RunMode.MULTIRUN
    return run_or_explain(optimized_value, metrics, str(cfg.optimized_metric), sweeping)


if __name__ == "__main__":
    main()
