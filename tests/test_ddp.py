"""DDP on 2 CPU processes (gloo) trains exactly what one process trains on the same groups.

Rank r of W takes global batches r, r + W, ... of the grouped sampler, and the training noise of
a step is drawn for all ranks' groups together (each rank keeps its slice), so one DDP step on
2 ranks with G groups each sees what one process sees on the 2G groups of global batches 2k and
2k + 1, with the same noise. DDP averages the ranks' gradients of their per-image mean losses,
which equals the gradient of the mean over all 2G groups; the weights after N steps must agree
up to float summation order.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from datamodules.sampler import GroupedBatchSampler
from dcign.batch import GroupedBatch
from dcign.run.training import build_data, build_model
from tests.cli import QUIET, run_cli
from tests.conftest import ROOT, tiny_volume

STEPS = 3
RUN = [
    "dataset.groups_per_batch=2",
    f"dataset.batches_per_epoch={STEPS}",
    "dataset.val_batches=0",
    "trainer.max_epochs=1",
    "trainer.num_sanity_val_steps=0",
    *QUIET,
]

pytestmark = pytest.mark.slow


def single_process_batches(datamodule, world_size: int) -> list[GroupedBatch]:
    """The batches of one process that together hold what the W ranks see at each step."""
    info = datamodule.split_info("train")
    sampler = GroupedBatchSampler(
        info.index,
        datamodule.group_types,
        datamodule.ratio,
        datamodule.group_size,
        datamodule.groups_per_batch,
        STEPS * world_size,
        seed=datamodule.seed,
    )
    sampler.set_epoch(0)
    batches = []
    for step in range(STEPS):
        specs = [sampler.batch(step * world_size + rank) for rank in range(world_size)]
        rows = np.concatenate([indices for indices, _ in specs])
        types = torch.as_tensor(np.concatenate([types for _, types in specs]))
        batches.append(GroupedBatch.of(datamodule._dataset.read(rows), types))
    return batches


# The 3D decoder told the pose: its pose term is per image, so it splits over ranks as the rest.
# DC-IGN's line-up term ranks each image among the whole step's images, and the learnt angle's
# range term asks the step's angles for their mean and spread: both gather every rank's codes
# (dcign.model.contrast.across_ranks), or this equality would not hold.
@pytest.mark.parametrize(
    "model",
    [[], tiny_volume(), tiny_volume("dcign3d_learnt")],
    ids=["image", "volume_told", "volume_learnt"],
)
def test_two_rank_ddp_equals_one_process_on_twice_the_groups(
    compose_config, cache_dir, tmp_path, model
):
    result = run_cli(
        "trainer=ddp_cpu",
        *RUN,
        *model,
        f"hydra.run.dir={tmp_path / 'ddp'}",
        cache_dir=cache_dir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ddp = torch.load(
        tmp_path / "ddp" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True
    )

    cfg = compose_config(*RUN, *model)
    pl.seed_everything(cfg.seed)  # the same seed and build order as train()
    datamodule = build_data(cfg)
    model = build_model(cfg, datamodule)
    datamodule.prepare_data()
    datamodule.setup("fit")
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    initial = {name: value.clone() for name, value in model.state_dict().items()}
    batches = single_process_batches(datamodule, world_size=2)
    trainer.fit(model, train_dataloaders=DataLoader(batches, batch_size=None))

    assert trainer.global_step == ddp["global_step"] == STEPS  # one step per batch
    single = model.state_dict()
    worst = max(
        float((single[name] - value).abs().max()) for name, value in ddp["state_dict"].items()
    )
    # Adam moves each weight by about lr = 5e-4 per step; summation order changes the result
    # by float32 rounding only.
    assert worst < 1e-5, f"largest weight difference {worst:g}"
    moved = max(float((single[name] - value).abs().max()) for name, value in initial.items())
    assert moved > 1e-4  # and the weights did change, so the comparison means something


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def test_multirun_sweep_with_ddp_runs_each_job_once_in_its_own_dir(cache_dir, tmp_path):
    """Each job's DDP child joins that job; it does not start the sweep again."""
    stray = {name: listing(ROOT / name) for name in ("outputs", "multirun")}
    result = run_cli(
        "-m",
        "model.objective.invariance_weight=0.1,1.0",
        "trainer=ddp_cpu",
        "trainer.max_epochs=1",
        "test=false",  # W&B and every picture callback on: rank 0 only, no collectives
        f"hydra.sweep.dir={tmp_path}",
        cache_dir=cache_dir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # Only the parent launches the sweep; a child started with the sweep's command line would
    # launch it again (and only keep working while its sweep happens to match the parent's).
    output = result.stdout + result.stderr
    assert output.count("Launching 2 jobs") == 1
    # Validation metrics are reduced over the ranks (torchmetrics) and logged as such: no
    # "It is recommended to use `self.log(..., sync_dist=True)`" warnings bury the log.
    assert output.count("sync_dist=True") == 0
    # The jobs, and the sweep's summary (dcign/run/sweep_summary.py) with its W&B run.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "0",
        "1",
        "multirun.yaml",
        "summary.csv",
        "summary.md",
        "wandb",
    ]
    with open(tmp_path / "summary.csv", newline="") as handle:
        assert [row["status"] for row in csv.DictReader(handle)] == ["finished", "finished"]
    for job, weight in (("0", "0.1"), ("1", "1.0")):
        run = tmp_path / job
        overrides = (run / ".hydra" / "overrides.yaml").read_text()
        assert f"model.objective.invariance_weight={weight}" in overrides
        checkpoint = torch.load(
            run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True
        )
        assert checkpoint["global_step"] == 3  # one DDP job: 3 batches, one step each
        assert checkpoint["hyper_parameters"]["objective"]["invariance_weight"] == float(weight)
        assert (run / "train_ddp_process_1.log").is_file()  # rank 1 ran inside this job
        assert len(list((run / "wandb").glob("offline-run-*"))) == 1  # rank 0 only
        assert json.loads((run / "status.json").read_text())["status"] == "finished"
    assert {name: listing(ROOT / name) for name in stray} == stray  # nothing outside the sweep


def test_the_gqn_trains_under_ddp_with_the_ranks_in_step(cache_dir, tmp_path):
    """experiment=gqn over 2 gloo processes: the run ends with one step per batch of each rank."""
    run = tmp_path / "gqn"
    result = run_cli(
        "trainer=ddp_cpu", "experiment=gqn", *RUN, f"hydra.run.dir={run}", cache_dir=cache_dir
    )
    assert result.returncode == 0, result.stderr[-3000:]
    saved = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["global_step"] == STEPS
    assert (run / "train_ddp_process_1.log").is_file()
