"""End-to-end training through the real config tree: what `python train.py` does."""

from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from PIL import Image
from pytorch_lightning.utilities import data as lightning_data
from pytorch_lightning.utilities.rank_zero import WarningCache

from dcign.model.module import DCIGN
from dcign.run.training import build_data, build_model, train
from dcign.scoring.network_scores import NetworkScores
from tests.conftest import CONF, compose_train, tiny_volume


def _checkpoint(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def _assert_line_up_logged(cfg, rows: list[dict], columns: set[str]) -> None:
    """DC-IGN's line-up term is on the dashboard at train and validation, the baseline's not.

    Its value per image (the reduction is a mean) lies between two bounds that follow from its
    definition, not from the code: the S - 1 positives' shares of the N - 1 rivals sum to at
    most 1, so the mean of their ``-log`` is at least ``log(S - 1)``; a cosine within [-1, 1]
    over a temperature t puts each ``-log`` share below ``2 / t + log(N - 1)``.
    """
    assert {"train/contrast", "val/contrast"} <= columns
    assert not any(c.startswith("train/baseline/contrast") for c in columns)
    size, groups = cfg.dataset.group_size, cfg.dataset.groups_per_batch
    low = math.log(size - 1)
    high = 2 / cfg.model.objective.contrast_temperature + math.log(size * groups - 1)
    for key in ("train/contrast", "val/contrast"):
        values = [float(row[key]) for row in rows if row.get(key)]
        assert values, f"{key} was never logged"
        assert all(low - 1e-6 <= value <= high for value in values), (key, values)


def _assert_detail_logged(cfg, rows: list[dict], columns: set[str]) -> None:
    """DC-IGN's detail term is on the dashboard; the baseline, which trains without it by
    default, logs none.

    Each band of a difference of [0, 1] images lies within [-2, 2] per pixel (a value minus a
    weighted mean of values in [-1, 1]), so an image's term is at most twice the bands' pixels:
    16^2 + 8^2 at 16x16.
    """
    assert cfg.model.objective.detail_weight > 0 and cfg.model.baseline.detail_weight == 0
    assert not any(c.startswith("train/baseline/detail") for c in columns)
    side = cfg.dataset.image_size
    high = 2 * cfg.dataset.channels * (side**2 + (side // 2) ** 2)
    for key in ("train/detail", "val/detail"):
        assert key in columns
        values = [float(row[key]) for row in rows if row.get(key)]
        assert values, f"{key} was never logged"
        assert all(0 < value <= high for value in values), (key, values)


def test_fit_trains_both_networks_and_leaves_artefacts(compose_config, tmp_path):
    cfg = compose_config("logger=csv")
    pl.seed_everything(cfg.seed)
    before = build_model(cfg, build_data(cfg)).state_dict()
    metrics = train(cfg)
    run = tmp_path / "run"
    ckpt = _checkpoint(run)
    state = ckpt["state_dict"]
    # Both networks travel in one checkpoint, with the optimizer's state of each network.
    assert any(k.startswith("baseline.") for k in state)
    assert any(k.startswith("dcign.") for k in state)
    (optimizer,) = ckpt["optimizer_states"]
    assert len(optimizer["param_groups"]) == 2
    # The resolved run config travels too, so evaluation can rebuild the data from the file.
    assert ckpt["dcign_run_config"]["dataset"]["_target_"].endswith("FacesDataModule")
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
    assert {"train/loss", "train/baseline/loss", "val/loss"} <= columns
    assert any(c.startswith("train/loss_by_type/") for c in columns)
    _assert_line_up_logged(cfg, rows, columns)
    _assert_detail_logged(cfg, rows, columns)
    # Each network's rate at every logged step: DC-IGN's on the default cosine from 0.002 over
    # the run's T batches, 0.001 * (1 + cos(pi * step / T)); the baseline held at its 0.001.
    total = cfg.trainer.max_epochs * cfg.dataset.batches_per_epoch
    logged = [row for row in rows if row.get("train/lr")]
    assert logged
    for row in logged:
        expected = 0.001 * (1 + math.cos(math.pi * int(row["step"]) / total))
        assert float(row["train/lr"]) == pytest.approx(expected, abs=1e-9)
        assert float(row["train/baseline/lr"]) == pytest.approx(0.001)


def test_test_metrics_describe_the_final_weights(compose_config, tmp_path):
    # A checkpoint monitor that prefers the *highest* validation loss makes "the best
    # checkpoint" an earlier, worse model than the final one; the test numbers must still be
    # those of the final weights (last.ckpt), the model a user looks at.
    cfg = compose_config(
        "logger=csv", "trainer.max_epochs=3", "callbacks.model_checkpoint.mode=max"
    )
    metrics = train(cfg)
    model = DCIGN.load_from_checkpoint(
        tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True
    )
    datamodule = build_data(cfg)
    trainer = pl.Trainer(
        callbacks=[NetworkScores(datamodule.factor_dicts)],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    (final,) = trainer.test(model, datamodule=datamodule, verbose=False)
    assert metrics["test/recon_mse"] == pytest.approx(final["test/recon_mse"], rel=1e-5)


def test_validation_does_not_change_weights_and_checkpoint_round_trips(
    compose_config, tmp_path, monkeypatch
):
    cfg = compose_config("logger=csv", "trainer.max_epochs=1", "test=false")
    train(cfg)
    path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    model = DCIGN.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    datamodule = build_data(cfg)
    trainer = pl.Trainer(
        callbacks=[NetworkScores(datamodule.factor_dicts)],
        logger=False,
        enable_progress_bar=False,
        use_distributed_sampler=False,
    )
    # Lightning says each warning once per process: a fresh cache lets this one show.
    monkeypatch.setattr(lightning_data, "warning_cache", WarningCache())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.validate(model, datamodule=datamodule, verbose=False)
    # Each logged mean is weighted by the batch's images, given, not guessed from its groups.
    guesses = [w for w in caught if "infer the `batch_size`" in str(w.message)]
    assert not guesses, guesses[0].message
    for key, value in model.state_dict().items():
        assert torch.equal(before[key], value), f"validation changed {key}"
    # The reloaded module decodes exactly what the checkpoint's weights give.
    state = _checkpoint(tmp_path / "run")["state_dict"]
    for key, value in state.items():
        assert torch.equal(value, before[key])


def test_bf16_mixed_precision_on_cpu(compose_config, monkeypatch):
    import dcign.model.objectives.base

    seen = set()
    original = dcign.model.objectives.base.reconstruction_nll

    def recording(logits, *args, **kwargs):
        seen.add(logits.dtype)
        return original(logits, *args, **kwargs)

    monkeypatch.setattr(dcign.model.objectives.base, "reconstruction_nll", recording)
    cfg = compose_config(
        "logger=csv", "trainer.precision=bf16-mixed", "trainer.max_epochs=1", "test=false"
    )
    metrics = train(cfg)
    assert torch.bfloat16 in seen, "the networks did not run under bf16 autocast"
    assert torch.isfinite(torch.tensor(metrics["val/loss"]))


@pytest.mark.parametrize("experiment", ["paper_faces", "paper_chairs"])
def test_paper_experiments_build_the_paper_network(cache_dir, experiment):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[
                f"experiment={experiment}",
                "paths.output_dir=unused",
                f"paths.cache_dir={cache_dir}",
            ],
        )
    assert cfg.dataset.image_size == 150
    assert cfg.dataset.group_size == 20 and cfg.dataset.groups_per_batch == 1
    datamodule = build_data(cfg)  # validates layout and ratio against the data's factors
    model = build_model(cfg, datamodule)
    assert model.hparams.net["latent_dim"] == 200
    assert model.layout["azimuth"] == [0]
    convs = [m for m in model.dcign.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [m.out_channels for m in convs] == [96, 64, 32]
    assert datamodule.group_types == list(model.layout)


@pytest.mark.parametrize("model", ["dcign3d", "dcign3d_learnt"])
def test_the_3d_decoder_trains_scores_and_reloads_through_the_same_run(
    compose_config, cache_dir, tmp_path, model
):
    """One override switches the decoder; the run, its pictures, its scores, its checkpoint
    and its evaluation (`python -m dcign.evaluate`) are DC-IGN's, with the angle's slope scored
    and, told the pose, the encoder's angle error logged."""
    from dcign.evaluate import evaluate
    from dcign.model.volume import VolumeDecoder
    from dcign.run.restore import load_checkpoint
    from tests.test_evaluate import eval_config

    cfg = compose_config(*tiny_volume(model), "trainer.max_epochs=1", "logger=csv")
    metrics = train(cfg)
    for figure in ("comparison/epoch000_azimuth.png", "sweeps/epoch000_azimuth.png"):
        with Image.open(tmp_path / "run" / figure) as image:
            assert min(image.size) > 16, figure  # a grid of views, drawn for the volume run
    assert {"val/angle_slope/azimuth", "test/angle_slope/elevation"} <= metrics.keys()
    assert "val/pose_error" in metrics  # the told angle error, or the learnt range term
    assert "val/baseline/angle_slope/azimuth" not in metrics  # the baseline reads no angles
    assert "val/angle_slope/light" not in metrics  # light is no rotation
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    loaded, _ = load_checkpoint(str(checkpoint))
    assert isinstance(loaded.dcign.decoder, VolumeDecoder)
    assert loaded.layout["azimuth"] == [0] and loaded.layout["light"] == [2]
    evaluation = eval_config(
        f"ckpt_path={checkpoint}",
        "split=val",
        "pairs=8",
        "scores_preset=null",
        f"paths.cache_dir={cache_dir}",
    )
    scored = evaluate(evaluation, tmp_path / "evaluation")["dcign"]
    assert {"angle_slope/azimuth", "identity_kept/azimuth", "novel_view_ssim/azimuth"} <= set(
        scored
    )
    assert list((tmp_path / "evaluation" / "figures").glob("*.png"))


def test_the_learnt_3d_decoder_trains_on_the_chairs_full_turn(cache_dir, tmp_path):
    """`model=dcign3d_learnt dataset=chairs` with nothing else: the preset's range weights name
    an elevation the data hold (left out) and a full turn, whose angles are asked to spread
    round it; the reading is scored by how it turns with the chair, not by a slope (0 and 2 pi
    are the same view)."""
    cfg = compose_train(
        cache_dir,
        "debug=tiny",
        "dataset=chairs",
        *tiny_volume("dcign3d_learnt"),
        "trainer.max_epochs=1",
        "trainer.precision=32-true",
        "logger=csv",
        f"paths.output_dir={tmp_path}",
    )
    metrics = train(cfg)
    assert -1.0 <= metrics["val/angle_turn/azimuth"] <= 1.0
    assert "test/angle_turn/azimuth" in metrics
    assert "val/pose_error" in metrics and "val/angle_slope/azimuth" not in metrics
