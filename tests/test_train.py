"""End-to-end training through the real config tree: what `python train.py` does."""

from __future__ import annotations

import csv
from pathlib import Path

import pytorch_lightning as pl
import torch

from dcign.module import DCIGN
from dcign.training import train


def _checkpoint(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def test_fit_trains_both_networks_and_leaves_artefacts(compose_config, tmp_path):
    cfg = compose_config("logger=csv")
    pl.seed_everything(cfg.seed)
    before = DCIGN(**_model_kwargs(cfg)).state_dict()
    metrics = train(cfg)
    run = tmp_path / "run"
    ckpt = _checkpoint(run)
    state = ckpt["state_dict"]
    # Both networks travel in one checkpoint, with both optimizers' states.
    assert any(k.startswith("baseline.") for k in state)
    assert any(k.startswith("dcign.") for k in state)
    assert len(ckpt["optimizer_states"]) == 2
    # Same seed -> same initial weights; training moved every parameter of both networks.
    for key, value in before.items():
        assert not torch.equal(value, state[key]), f"{key} did not change"
    assert {"val/loss", "val/recon_mse", "val/baseline/recon_mse"} <= metrics.keys()
    assert "test/recon_mse" in metrics
    # A latent sweep per group, as PNG files under the run directory.
    sweeps = sorted(p.name for p in (run / "sweeps").glob("*.png"))
    assert any("azimuth" in name for name in sweeps)
    assert any("intrinsic_top1" in name for name in sweeps)
    # The CSV log has the losses and per-group-type losses.
    with open(run / "csv" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    columns = set(rows[0])
    assert {"train/loss_step", "train/baseline/loss_step", "val/loss"} <= columns
    assert any(c.startswith("train/loss_by_type/") for c in columns)


def _model_kwargs(cfg) -> dict:
    from omegaconf import OmegaConf

    kwargs = OmegaConf.to_container(cfg.model, resolve=True)
    kwargs.pop("_target_")
    return kwargs
