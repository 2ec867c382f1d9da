"""Picture callbacks: what reaches the disk and the loggers, and that pictures never end a run."""

from __future__ import annotations

import json
import logging
import struct
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from callbacks.base import DISPLAY_SIZE
from callbacks.comparison import PAD, BaselineComparison, novel_views
from callbacks.equivariance_plot import EquivariancePlot, correlations
from callbacks.latent_sweep import LatentSweep
from callbacks.query_sweep import QuerySweep
from callbacks.uncertainty import PosteriorUncertainty
from dcign.model.interface import CodeModel, Renderer
from dcign.run.training import build, train
from dcign.scoring.figures import figure_sources

EXTRINSIC = ("azimuth", "elevation", "light")  # the faces data set's factors
# Picture names by callback folder (= key prefix); which latent of the intrinsic group varies
# most depends on training, so that sweep's name is a pattern.
PICTURES = {
    "comparison": EXTRINSIC,
    "equivariance": EXTRINSIC,
    "uncertainty": ("posterior",),
    "sweeps": (*EXTRINSIC, "intrinsic_top1_z*"),
}
# The default faces layout gives azimuth two latents (plotted as dcign_1, dcign_2), the other
# extrinsic factors one each.
PLOTTED = {
    "azimuth": ("dcign_1", "dcign_2", "baseline"),
    "elevation": ("dcign", "baseline"),
    "light": ("dcign", "baseline"),
}
SCALARS = [
    *(
        f"comparison/{name}/novel_view_mse_{net}"
        for name in EXTRINSIC
        for net in ("dcign", "baseline")
    ),
    *(f"equivariance/{name}/{net}_abs_corr" for name in EXTRINSIC for net in ("dcign", "baseline")),
    "uncertainty/pixel_std",
]
ONE_EPOCH = ("trainer.max_epochs=1", "test=false")


@pytest.fixture
def wandb_offline(monkeypatch, tmp_path):
    """W&B offline, its caches inside the test's directory, and no run left open around it.

    Lightning's WandbLogger reuses a run that is still open, so one left behind would receive
    another test's logs.
    """
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    for variable in ("WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR"):
        monkeypatch.setenv(variable, str(tmp_path / "wandb-home"))
    wandb.finish()
    yield wandb
    wandb.finish()


def _pictures(run: Path) -> dict[str, Path]:
    """Logger key -> PNG file of every expected picture of epoch 0, each checked readable."""
    found = {}
    for folder, patterns in PICTURES.items():
        for pattern in patterns:
            (path,) = (run / folder).glob(f"epoch000_{pattern}.png")
            with Image.open(path) as image:
                assert min(image.size) >= DISPLAY_SIZE, f"{path} is too small to read"
            found[f"{folder}/{path.stem.removeprefix('epoch000_')}"] = path
    return found


def _wandb_records(path: Path):
    """The protobuf records of an offline run's ``.wandb`` file (a LevelDB-style log).

    The log is cut into 32 KiB blocks; each piece has a 7-byte header (CRC, length, type) and a
    record too long for its block is split into FIRST, MIDDLE and LAST pieces.
    """
    from wandb.proto.wandb_internal_pb2 import Record

    raw, block, position, pieces = path.read_bytes(), 32768, 7, b""
    while position + 7 <= len(raw):
        if block - position % block < 7:  # a block's tail too short for a header is padding
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", raw[position : position + 7])
        piece = raw[position + 7 : position + 7 + length]
        position += 7 + length
        pieces = piece if kind in (1, 2) else pieces + piece  # FULL or FIRST start a record
        if kind in (1, 4):  # FULL or LAST end it
            record = Record()
            record.ParseFromString(pieces)
            yield record


def _complete_records(path: Path, timeout: float = 60.0) -> list:
    """The records of an offline run once its last (``exit``) record is on disk.

    ``wandb.finish()`` can return while W&B's service process is still writing the file, which a
    busy machine makes visible.
    """
    deadline = time.monotonic() + timeout
    while True:
        records = list(_wandb_records(path))
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            return records
        assert time.monotonic() < deadline, f"{path} got no exit record in {timeout} s"
        time.sleep(0.5)


def test_wandb_offline_run_holds_every_picture_table_and_metric(
    compose_config, tmp_path, wandb_offline
):
    train(compose_config(*ONE_EPOCH))  # the default loggers: W&B (offline) and CSV
    wandb_offline.finish()  # Lightning leaves the run open; finishing flushes it to disk
    run = tmp_path / "run"
    (offline,) = (run / "wandb").glob("offline-run-*")
    media = offline / "files" / "media"
    for key in _pictures(run):
        assert list((media / "images").glob(f"{key}_*.png")), f"W&B did not store {key}"
    (table_file,) = (media / "table" / "equivariance").glob("azimuth_table_*.table.json")
    table = json.loads(table_file.read_text())
    assert table["columns"] == ["truth_rad", *PLOTTED["azimuth"]]
    assert table["data"] and all(len(row) == 4 for row in table["data"])
    (data_file,) = offline.glob("*.wandb")
    summary = {}
    for record in _complete_records(data_file):
        if record.WhichOneof("record_type") == "summary":
            for item in record.summary.update:
                summary[item.key or "/".join(item.nested_key)] = item.value_json
    for key in SCALARS:
        assert np.isfinite(json.loads(summary[key])), key
    for name in EXTRINSIC:  # the interactive scatter charts, one per plotted latent
        for column in PLOTTED[name]:
            assert f"equivariance/{name}_{column}_table/_type" in summary
    header = (run / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert set(SCALARS) <= set(header)


def test_tensorboard_gets_the_pictures_and_scalars(compose_config, tmp_path):
    train(compose_config("logger=tensorboard", *ONE_EPOCH))
    run = tmp_path / "run"
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    for key, path in _pictures(run).items():
        assert key in tags["images"], key
        (logged,) = events.Images(key)
        with Image.open(path) as png:
            assert (logged.width, logged.height) == png.size
    assert set(SCALARS) <= set(tags["scalars"])


def test_a_failing_picture_is_a_warning_and_training_goes_on(
    compose_config, tmp_path, monkeypatch, caplog
):
    def broken(self, datamodule, pl_module):
        raise RuntimeError("figure code broke")

    monkeypatch.setattr(EquivariancePlot, "figures", broken)
    with caplog.at_level(logging.WARNING, logger="callbacks.base"):
        train(compose_config("logger=csv", *ONE_EPOCH))
    run = tmp_path / "run"
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert any(
        "EquivariancePlot failed" in r.getMessage() and "figure code broke" in r.getMessage()
        for r in caplog.records
    )
    assert not (run / "equivariance").exists()
    assert (run / "comparison" / "epoch000_azimuth.png").is_file()  # the others still draw


@pytest.mark.parametrize(
    "state",
    [
        {"is_global_zero": False},
        {"sanity_checking": True},
        {"current_epoch": 0, "every_n_epochs": 2},
    ],
    ids=["other-rank", "sanity-check", "not-this-epoch"],
)
@pytest.mark.parametrize(
    "callback", [LatentSweep, BaselineComparison, EquivariancePlot, PosteriorUncertainty]
)
def test_nothing_is_drawn_or_written_off_duty(callback, state, tmp_path, monkeypatch):
    state = dict(state)
    every = state.pop("every_n_epochs", 1)
    trainer = SimpleNamespace(
        **{"is_global_zero": True, "sanity_checking": False, "current_epoch": 3, **state},
        global_step=10,
        loggers=[],
        datamodule=None,
    )
    monkeypatch.setattr(callback, "figures", lambda *args: pytest.fail("figures were drawn"))
    instance = callback(output_dir=str(tmp_path / "out"), every_n_epochs=every)
    instance.on_validation_epoch_end(trainer, pl_module=None)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ a model with a known behaviour
class IdentityNet:
    """The code is the image's pixels: re-rendering by transfer is then exactly predictable."""

    def __init__(self, shape: tuple[int, ...], std: float = 0.0) -> None:
        self.shape = shape
        self.logvar = 2 * np.log(std) if std else -80.0

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        codes = x.flatten(1).clone()
        return codes, torch.full_like(codes, self.logvar)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z.unflatten(1, self.shape)


class IdentityModule:
    """A :class:`~dcign.model.interface.CodeModel` over :class:`IdentityNet` renderers."""

    device = torch.device("cpu")
    angle_factors: dict = {}

    def __init__(self, layout: dict, shape: tuple, baseline: bool = True, std: float = 0.0):
        self.layout = layout
        self.dcign = IdentityNet(shape, std)
        self.comparisons = {"baseline": IdentityNet(shape)} if baseline else {}

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.dcign.encode(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.dcign.decode(z)


def test_the_hand_made_model_is_a_code_model():
    """The callbacks below are tested on a model they could meet: one with the interface."""
    model = IdentityModule({"azimuth": [0]}, (1, 4, 4))
    assert isinstance(model, CodeModel) and isinstance(model.comparisons["baseline"], Renderer)


@pytest.fixture
def datamodule(compose_config):
    dm = build(compose_config().dataset)
    dm.prepare_data()
    dm.setup()
    return dm


def _pixel_layout(datamodule, group: int) -> dict[str, list[int]]:
    """Each extrinsic factor owns ``group`` pixels spread over the image; the rest is intrinsic."""
    pixels = int(np.prod(datamodule.image_shape))
    spread = np.random.default_rng(0).permutation(pixels).tolist()
    layout = {name: spread[k * group : (k + 1) * group] for k, name in enumerate(EXTRINSIC)}
    return {**layout, "intrinsic": spread[len(EXTRINSIC) * group :]}


def test_scene_views_hold_one_identity_with_one_factor_moving(datamodule):
    views = datamodule.scene_views("test", "elevation", n_scenes=2, seed=1)
    images, factors, identity = views.images, views.factors, views.identity
    assert images.shape == (2, 3, *datamodule.image_shape)  # 3 elevations in the tiny grid
    assert (identity == identity[:, :1]).all()
    column = datamodule.factor_names.index("elevation")
    others = [c for c in range(factors.shape[-1]) if c != column]
    assert (factors[..., others] == factors[:, :1, others]).all()
    assert (factors[..., column].diff(dim=1) > 0).all()
    again = datamodule.scene_views("test", "elevation", n_scenes=2, seed=1)
    assert torch.equal(again.images, images)


def test_comparison_grid_shows_the_true_views_and_exact_transfers(datamodule, tmp_path):
    layout = _pixel_layout(datamodule, group=40)
    model = IdentityModule(layout, datamodule.image_shape)
    callback = BaselineComparison(str(tmp_path), num_scenes=2, views=3, seed=0)
    figures = callback.figures(datamodule, model)
    assert [p.name for p in figures.pictures] == list(EXTRINSIC)

    # 3 of the tiny grid's 4 azimuths: the first, one in the middle (the original), the last;
    # scenes of validation identities, the pictures' default.
    truth = datamodule.scene_views("val", "azimuth", 2, seed=0).images[:, [0, 2, 3]]
    result = novel_views(model, truth, layout["azimuth"], source=1)
    rows, labels = result.rows()
    assert labels == ["original", "DC-IGN", "baseline", "truth"] * 2
    assert torch.equal(rows[3], truth[0]) and torch.equal(rows[7], truth[1])
    # DC-IGN: the original's pixels, except the azimuth group's, which come from the target.
    expected = truth[:, 1:2].flatten(2).repeat(1, 3, 1)
    expected[..., layout["azimuth"]] = truth.flatten(2)[..., layout["azimuth"]]
    assert torch.equal(result.dcign.flatten(2), expected)

    # The picture itself: the truth row's tiles are the ground-truth pixels, at display scale.
    picture = figures.pictures[0].array
    size = truth.shape[-1]
    scale = DISPLAY_SIZE // size
    grid = picture[:, -(3 * (size + PAD) + PAD) * scale :]
    for c in range(3):
        top, left = (PAD + 3 * (size + PAD)) * scale, (PAD + c * (size + PAD)) * scale
        tile = grid[top : top + size * scale : scale, left : left + size * scale : scale]
        assert np.array_equal(tile, (truth[0, c, 0] * 255).round().numpy().astype(np.uint8))
    assert "rows per scene: original / DC-IGN / baseline / truth" in figures.pictures[0].caption


class _AskedError(Exception):
    """Stops a picture as soon as it has asked the data for its images."""


PICTURE_CALLBACKS = {
    "comparison": lambda directory, **kw: BaselineComparison(directory, views=3, **kw),
    "equivariance": lambda directory, **kw: EquivariancePlot(directory, num_images=8, **kw),
    "sweep": lambda directory, **kw: LatentSweep(directory, num_images=2, **kw),
    "uncertainty": lambda directory, **kw: PosteriorUncertainty(directory, num_images=2, **kw),
    "query": lambda directory, **kw: QuerySweep(directory, dcign_ckpt=None, **kw),
}


@pytest.mark.parametrize("picture", PICTURE_CALLBACKS)
def test_every_picture_draws_validation_identities_unless_told_otherwise(
    picture, datamodule, tmp_path, monkeypatch
):
    """Pictures looked at while training (and while choosing settings) never show test images."""
    asked = []

    def ask(split, *args, **kwargs):
        asked.append(split)
        raise _AskedError

    monkeypatch.setattr(datamodule, "scene_views", ask)
    monkeypatch.setattr(datamodule, "sample_up_to", ask)
    model = IdentityModule(_pixel_layout(datamodule, group=40), datamodule.image_shape)
    for options, split in (({}, "val"), ({"split": "test"}, "test"), ({"split": "train"}, "train")):
        with pytest.raises(_AskedError):
            PICTURE_CALLBACKS[picture](str(tmp_path), **options).figures(datamodule, model)
        assert asked.pop() == split


def test_a_picture_refuses_a_split_that_does_not_exist(tmp_path):
    with pytest.raises(ValueError, match=r"split='validation'; choose one of val, test, train"):
        BaselineComparison(str(tmp_path), split="validation")


def test_the_report_draws_the_split_it_scores(tmp_path):
    """A run's stored callbacks (no split option, as in older runs) draw the scored split."""
    stored = {
        "baseline_comparison": {
            "_target_": "callbacks.comparison.BaselineComparison",
            "output_dir": "/the/run/comparison",
            "views": 3,
        },
        "preemption": {"_target_": "callbacks.preemption.PreemptionCheckpoint", "dirpath": "x"},
    }
    for split in ("val", "test"):
        (source,) = figure_sources(stored, tmp_path, split)
        assert source.split == split
        assert source.output_dir == tmp_path


class SplitlessFigures:
    """A user's figure callback without a ``split`` option."""

    key = "mine"

    def __init__(self, output_dir: str) -> None:
        self.output_dir = output_dir

    def figures(self, datamodule, pl_module):
        return SimpleNamespace(pictures=[])


def test_the_report_keeps_a_figure_callback_that_takes_no_split(tmp_path):
    stored = {"mine": {"_target_": f"{__name__}.SplitlessFigures", "output_dir": "/elsewhere"}}
    (source,) = figure_sources(stored, tmp_path, "test")
    assert isinstance(source, SplitlessFigures) and source.output_dir == str(tmp_path)
    assert not hasattr(source, "split")


def test_a_code_that_is_all_factor_re_renders_perfectly_and_without_baseline_row(
    datamodule, tmp_path
):
    pixels = int(np.prod(datamodule.image_shape))
    model = IdentityModule({"light": list(range(pixels))}, datamodule.image_shape, baseline=False)
    figures = BaselineComparison(str(tmp_path), views=3).figures(datamodule, model)
    assert figures.scalars == {"light/novel_view_mse_dcign": 0.0}
    assert "DC-IGN / truth;" in figures.pictures[0].caption


def test_equivariance_plots_each_factor_latent_and_the_best_baseline_latent(datamodule, tmp_path):
    codes = torch.tensor([[1.0, 5.0, 3.0], [2.0, 5.0, 1.0], [3.0, 5.0, 2.0]])
    r = correlations(codes, torch.tensor([0.0, 3.0, 6.0]))
    assert torch.allclose(r, torch.tensor([1.0, 0.0, -0.5]))  # linear, constant, partly opposed
    layout = _pixel_layout(datamodule, group=1)
    figures = EquivariancePlot(str(tmp_path), num_images=40).figures(
        datamodule, IdentityModule(layout, datamodule.image_shape)
    )
    assert [p.name for p in figures.pictures] == list(EXTRINSIC)
    for picture in figures.pictures:  # one DC-IGN and one baseline panel, side by side
        assert picture.array.ndim == 3 and picture.array.shape[1] > picture.array.shape[0]
    # The identity baseline holds every pixel, so its best latent correlates at least as well.
    for name in EXTRINSIC:
        assert (
            figures.scalars[f"{name}/baseline_abs_corr"]
            >= figures.scalars[f"{name}/dcign_abs_corr"]
        )
    scatter = figures.scatters[0]
    assert scatter.columns == ("truth_rad", "dcign", "baseline")
    assert len(scatter.rows) == 40 and set(scatter.charts) == {"dcign", "baseline"}


def test_uncertainty_shows_the_posterior_spread(datamodule, tmp_path):
    layout = _pixel_layout(datamodule, group=1)
    model = IdentityModule(layout, datamodule.image_shape, std=0.1)
    figures = PosteriorUncertainty(str(tmp_path), num_images=2, samples=64).figures(
        datamodule, model
    )
    assert figures.scalars["pixel_std"] == pytest.approx(0.1, rel=0.1)
    (picture,) = figures.pictures  # rows: images; columns: original, mean, spread
    pitch = (datamodule.image_size + PAD) * (DISPLAY_SIZE // datamodule.image_size)
    assert picture.array.shape[:2] == (2 * pitch + PAD * 4, 3 * pitch + PAD * 4)
