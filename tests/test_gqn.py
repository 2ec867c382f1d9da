"""The GQN LightningModule on grouped batches: scenes, context sizes, its objective and a run."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from PIL import Image
from pytorch_lightning.utilities import data as lightning_data
from pytorch_lightning.utilities.rank_zero import WarningCache

from dcign.batch import GroupedBatch
from dcign.errors import ConfigError
from dcign.gqn.module import GQN
from dcign.gqn.networks import gaussian_nll
from dcign.gqn.scenes import repeated_views, split_scenes, viewpoint_factors, viewpoints
from dcign.run.training import build_data, build_model, train

FACTORS = [
    {"name": "azimuth", "values": [-1.0, 0.0, 1.0], "periodic": False, "unit": "rad"},
    {"name": "elevation", "values": [0.0], "periodic": False, "unit": "rad"},
    {"name": "light", "values": [1.0, 2.0], "periodic": False, "unit": "none"},
]
LAYOUT = {"azimuth": 1, "light": 1, "intrinsic": None}
NET = {
    "_target_": "dcign.gqn.networks.GQNArchitecture",
    "image_size": 8,
    "channels": 1,
    "r_dim": 4,
    "h_dim": 4,
    "z_dim": 2,
    "steps": 2,
    "kernel": 3,
    "shared_core": True,
}
ADAM = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3}


def tiny_gqn(**overrides) -> GQN:
    options = {"net": NET, "optimizer": ADAM, "layout": LAYOUT, "factors": FACTORS}
    return GQN(**{**options, "max_context": 3, **overrides})


def batch(types: list[int], size: int = 4) -> GroupedBatch:
    generator = torch.Generator().manual_seed(0)
    groups = len(types)
    factors = torch.zeros(groups, size, 3)
    factors[..., 0] = torch.linspace(-1, 1, size)
    factors[..., 2] = 1.0
    return GroupedBatch(
        images=torch.rand(groups, size, 1, 8, 8, generator=generator),
        factors=factors,
        identity=torch.zeros(groups, size, dtype=torch.int64),
        group_type=torch.tensor(types),
    )


def test_viewpoints_are_cos_sin_of_angles_and_values_of_the_rest():
    chosen = viewpoint_factors(FACTORS)  # elevation takes one value: not part of the view
    values = torch.tensor([[0.5, 0.0, 2.0]])
    expected = torch.tensor([[math.cos(0.5), math.sin(0.5), 2.0]])
    torch.testing.assert_close(viewpoints(values, chosen), expected)


def test_a_step_is_a_pure_function_of_its_key():
    model = tiny_gqn()
    data = batch([0, 1])
    first = model.scene_loss(data, (0, 7), sigma=1.0)
    again = model.scene_loss(data, (0, 7), sigma=1.0)
    other = model.scene_loss(data, (0, 8), sigma=1.0)
    assert torch.equal(first["loss"], again["loss"])
    assert not torch.equal(first["loss"], other["loss"])


def test_context_sizes_cover_one_to_k():
    model = tiny_gqn()
    data = batch([0, 1], size=4)  # at most 3 context views leave a query
    seen = {int(model.scene_loss(data, (0, k), 1.0)["context"]) for k in range(60)}
    assert seen == {1, 2, 3}


def test_groups_that_vary_identity_are_not_scenes():
    model = tiny_gqn()
    with pytest.raises(ConfigError, match="held no scene"):
        model.scene_loss(batch([2, 2]), (0, 0), 1.0)
    # Scenes with and without an intrinsic group beside them give the same loss.
    scenes = batch([0, 1])
    mixed = GroupedBatch(*(torch.cat([field, field[:1]]) for field in scenes[:4]))
    mixed = mixed._replace(group_type=torch.tensor([0, 1, 2]))
    torch.testing.assert_close(
        model.scene_loss(mixed, (0, 3), 1.0)["loss"], model.scene_loss(scenes, (0, 3), 1.0)["loss"]
    )


def test_the_deterministic_variant_trains_on_the_pixel_likelihood_alone():
    model = tiny_gqn(net={**NET, "stochastic": False})
    parts = model.scene_loss(batch([0, 1]), (0, 1), sigma=0.5)
    assert float(parts["kl"]) == 0.0
    torch.testing.assert_close(parts["loss"], parts["nll"])
    # The pixel NLL at sigma 0.5 is the summed squared error / (2 * 0.25) plus the constant.
    pixels = 64
    constant = 0.5 * math.log(2 * math.pi * 0.25) * pixels
    torch.testing.assert_close(parts["nll"], parts["mse"] * pixels / 0.5 + constant)


def test_rendering_a_query_gives_one_image_per_query():
    model = tiny_gqn().eval()
    data = batch([0])
    views = model.render_views(data.images[:, :2], data.factors[:, :2], data.factors[:, 1:4])
    assert views.shape == (1, 3, 1, 8, 8)
    assert float(views.min()) >= 0 and float(views.max()) <= 1
    # The scene representation sums the context: their order does not matter.
    swapped = torch.tensor([1, 0])
    again = model.render_views(
        data.images[:, swapped], data.factors[:, swapped], data.factors[:, 1:4]
    )
    torch.testing.assert_close(views, again)


def test_bad_settings_are_named():
    with pytest.raises(ConfigError, match="model.max_context"):
        tiny_gqn(max_context=0)
    with pytest.raises(ConfigError, match="model.net"):
        tiny_gqn(net={**NET, "image_size": 6})


def test_gaussian_nll_is_the_normal_density():
    mean, target = torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2)
    expected = -torch.distributions.Normal(0.0, 2.0).log_prob(torch.tensor(1.0)) * 4
    torch.testing.assert_close(gaussian_nll(mean, target, 2.0), expected.reshape(1))


def test_model_gqn_trains_on_the_tiny_preset_and_its_checkpoint_loads(
    compose_config, tmp_path, monkeypatch
):
    cfg = compose_config("experiment=gqn", "logger=csv")
    # Lightning says each warning once per process: a fresh cache lets this one show.
    monkeypatch.setattr(lightning_data, "warning_cache", WarningCache())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = train(cfg)
    # Validation and test means are weighted by the batch's images, not guessed from its groups.
    guesses = [w for w in caught if "infer the `batch_size`" in str(w.message)]
    assert not guesses, guesses[0].message
    assert math.isfinite(metrics["val/loss"]) and math.isfinite(metrics["test/mse"])
    path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    model = GQN.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    fresh = build_model(cfg, build_data(cfg))
    assert type(fresh) is GQN and set(model.state_dict()) == set(fresh.state_dict())
    # The query sweep: per scene the context, the truth, the mean and 3 draws; no DC-IGN row,
    # since the shipped 32x32 weights do not fit these 16x16 test faces. 2 scenes x 6 rows of
    # 16-pixel tiles with 1-pixel gaps, shown 4 times as large.
    (sweep,) = sorted((tmp_path / "run" / "query_sweep").glob("epoch001_*.png"))
    assert Image.open(sweep).height == (2 * 6 * 17 + 1) * 4


def test_the_kl_and_the_likelihood_stay_float32_under_bf16_autocast():
    model = tiny_gqn()
    data = batch([0, 1])
    exact = model.scene_loss(data, (0, 2), sigma=0.7)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = model.scene_loss(data, (0, 2), sigma=0.7)
    assert mixed["kl"].dtype == mixed["nll"].dtype == torch.float32
    assert float(mixed["kl"]) >= 0.0
    torch.testing.assert_close(mixed["nll"], exact["nll"], rtol=0.02, atol=0.0)


@pytest.fixture
def gqn_checkpoint(compose_config, tmp_path):
    train(compose_config("experiment=gqn", "logger=csv", "test=false", "trainer.max_epochs=1"))
    return tmp_path / "run" / "checkpoints" / "last.ckpt"


def test_dcign_evaluation_refuses_a_gqn_checkpoint_with_a_pointer(gqn_checkpoint):
    from dcign.evaluate import load_checkpoint

    with pytest.raises(ConfigError, match="holds a GQN, not a DC-IGN.*novel_view.py"):
        load_checkpoint(str(gqn_checkpoint))


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("model.net.h_dim=8", "model.net.h_dim: checkpoint"),
        ("model.net.shared_core=false", "model.net.shared_core: checkpoint True, this run False"),
        ("model.net.stochastic=false", "model.net.stochastic"),
    ],
)
def test_resuming_a_gqn_under_another_network_names_the_setting(
    compose_config, gqn_checkpoint, override, named
):
    cfg = compose_config("experiment=gqn", "logger=csv", override, f"ckpt_path={gqn_checkpoint}")
    with pytest.raises(ConfigError, match="trained with another model") as error:
        train(cfg)
    assert named in str(error.value)


def test_repeated_views_by_hand():
    views = torch.tensor([[[0.0], [1.0], [0.0], [2.0], [1.0]]])
    assert repeated_views(views).tolist() == [[False, False, True, False, True]]


def test_no_trained_query_is_a_copy_of_a_context_view():
    """The faces' 5 elevations in groups of 10 show each view twice: the context holds distinct
    views, and the queries that repeat one of them are not trained on."""
    values = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2, 3, 4], dtype=torch.float)
    views = values.view(1, 10, 1).expand(6, 10, 1)
    images = values.view(1, 10, 1, 1, 1).expand(6, 10, 1, 2, 2) + torch.arange(6.0).view(
        6, 1, 1, 1, 1
    )
    generator = torch.Generator().manual_seed(0)
    for context in (1, 2, 3, 4):
        for _ in range(10):
            scenes = split_scenes(images, views, context, generator)
            given = scenes.context_views[..., 0]
            assert all(len(set(row.tolist())) == context for row in given)  # distinct
            copies = (scenes.query_images[:, :, None] == scenes.context_images[:, None]).flatten(3)
            is_copy = copies.all(dim=-1).any(dim=-1)
            assert torch.equal(scenes.query_new, ~is_copy)
            # Every scene keeps its 5 - context other views (each twice) to learn from.
            assert scenes.query_new.sum(dim=1).tolist() == [2 * (5 - context)] * 6
    with pytest.raises(ConfigError, match="distinct views"):
        split_scenes(images, views, 5, generator)


def test_the_loss_counts_new_queries_only():
    """Two views, each shown twice: the context is one of them, and the loss does not change when
    the copy of the context view is changed (it is never a trained query), while it does when
    the copy of the other view (a new view, trained on) is changed."""
    model = tiny_gqn(max_context=1)
    data = batch([0], size=2)
    doubled = GroupedBatch(*(torch.cat([field, field], dim=1) for field in data[:3]), data[3])

    def loss_with_copy_changed(position: int) -> torch.Tensor:
        images = doubled.images.clone()
        images[:, position] = 1.0 - images[:, position]
        return model.scene_loss(doubled._replace(images=images), (0, 5), 1.0)["loss"]

    base = model.scene_loss(doubled, (0, 5), 1.0)["loss"]
    changed = [not torch.equal(loss_with_copy_changed(p), base) for p in (2, 3)]
    assert sorted(changed) == [False, True]


def test_sigma_anneals_over_the_first_tenth_of_the_run_then_holds(monkeypatch):
    # A 1,000-batch run: 2.0 -> 0.7 over batches 0..100, then 0.7 (the paper's first 200 k of 2 M).
    monkeypatch.setattr("dcign.gqn.module.run_steps", lambda module: 1000)
    for step, expected in ((0, 2.0), (50, 1.35), (100, 0.7), (900, 0.7)):
        model = tiny_gqn()
        monkeypatch.setattr(GQN, "global_step", property(lambda self, s=step: s))
        assert model.current_sigma() == pytest.approx(expected)
    # A step count replaces the span.
    model = tiny_gqn(sigma={"steps": 500})
    monkeypatch.setattr(GQN, "global_step", property(lambda self: 250))
    assert model.current_sigma() == pytest.approx(1.35)


def test_a_sigma_span_outside_the_run_is_refused():
    with pytest.raises(ConfigError, match=r"model\.sigma\.span must be in \(0, 1\]"):
        tiny_gqn(sigma={"span": 1.5})


def test_experiment_gqn_trains_as_the_paper(compose_config):
    cfg = compose_config("experiment=gqn")
    assert cfg.model._target_ == "dcign.gqn.module.GQN"
    # The paper's schedules; the rate chosen on validation (1e-3, the paper's 5e-4).
    assert cfg.model.optimizer.lr == 1e-3 and list(cfg.model.optimizer.betas) == [0.9, 0.999]
    assert cfg.model.scheduler.span == 0.8 and cfg.model.scheduler.end_factor == 0.1
    assert cfg.model.sigma.span == 0.1 and cfg.model.sigma.steps is None
    assert cfg.dataset.ratio.intrinsic == 0 and "query_sweep" in cfg.callbacks


def test_a_gqn_without_the_experiment_says_its_identity_batches_are_skipped(caplog):
    model = tiny_gqn()

    class Trainer:
        datamodule = type("Data", (), {"ratio": {"intrinsic": 3.0, "azimuth": 1.0}})()

    model._trainer = Trainer()
    with caplog.at_level("WARNING"):
        model.on_fit_start()
    assert "experiment=gqn" in caplog.text and "dataset.ratio.intrinsic is 3.0" in caplog.text
