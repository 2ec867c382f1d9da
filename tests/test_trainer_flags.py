"""The Trainer flags a Lightning user types work on the command line as they do elsewhere."""

from __future__ import annotations

import copy
import csv

import pytest
import torch

from dcign.errors import ConfigError
from dcign.run.training import train


@pytest.mark.parametrize(
    "flags",
    [
        ("trainer.fast_dev_run=true",),
        ("trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.max_epochs=1"),
        ("trainer.overfit_batches=1", "trainer.max_epochs=1"),
        ("trainer.val_check_interval=2", "trainer.max_epochs=1", "trainer.detect_anomaly=true"),
        ("trainer.profiler=simple", "trainer.max_epochs=1", "trainer.limit_train_batches=1"),
    ],
)
def test_common_trainer_flags_are_accepted_without_a_plus(compose_config, flags):
    metrics = train(compose_config("logger=none", "test=false", *flags))
    assert "train/loss" in metrics or "val/loss" in metrics


@pytest.mark.parametrize(
    ("flag", "names"),
    [
        ("trainer.gradient_clip_val=1.0", "runtime.gradient_clip_val"),
        ("trainer.accumulate_grad_batches=4", "dataset.groups_per_batch"),
    ],
)
def test_automatic_optimization_flags_name_the_option_that_works(compose_config, flag, names):
    with pytest.raises(ConfigError, match=names):
        train(compose_config("logger=none", flag))


@pytest.mark.parametrize("baseline", ["model.baseline.beta=1.0", "model.baseline=null"])
def test_steps_count_batches(compose_config, tmp_path, baseline):
    # debug=tiny has 3 batches per epoch; max_steps=5 stops after 5 batches, whether one network
    # or two are trained, and the checkpoint after epoch 0 is named for its 3 batches.
    cfg = compose_config(
        "logger=csv",
        "test=false",
        "trainer.max_epochs=10",
        "trainer.max_steps=5",
        baseline,
    )
    train(cfg)
    run = tmp_path / "run"
    with open(run / "csv" / "metrics.csv") as handle:
        losses = [row for row in csv.DictReader(handle) if row.get("train/loss")]
    assert len(losses) == 5
    assert [int(row["step"]) for row in losses] == [0, 1, 2, 3, 4]
    names = {p.name for p in (run / "checkpoints").glob("epoch*.ckpt")}
    assert names & {"epoch000-step3.ckpt", "epoch001-step5.ckpt"}
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 5


def test_two_networks_step_as_with_an_optimizer_each():
    """One Adam with a parameter group per network == one Adam per network (per-tensor math)."""
    torch.manual_seed(0)
    nets = [torch.nn.Linear(3, 2), torch.nn.Linear(4, 1)]
    copies = [copy.deepcopy(net) for net in nets]
    joint = torch.optim.Adam([{"params": n.parameters()} for n in nets], lr=0.1, betas=(0.9, 0.99))
    separate = [torch.optim.Adam(c.parameters(), lr=0.1, betas=(0.9, 0.99)) for c in copies]
    for step in range(3):
        inputs = [torch.randn(5, 3), torch.randn(5, 4)]
        for models, optimizers in ((nets, [joint]), (copies, separate)):
            for opt in optimizers:
                opt.zero_grad()
            sum(
                m(x).square().sum() * (step + 1) for m, x in zip(models, inputs, strict=True)
            ).backward()
            for opt in optimizers:
                opt.step()
    for net, reference in zip(nets, copies, strict=True):
        for a, b in zip(net.parameters(), reference.parameters(), strict=True):
            torch.testing.assert_close(a, b)
