"""Latent layout, networks and the LightningModule's public interface."""

import math
from types import SimpleNamespace

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from dcign.batch import GroupedBatch
from dcign.errors import ConfigError
from dcign.model.interface import CodeModel, Renderer
from dcign.model.layout import LatentLayout
from dcign.model.module import DCIGN
from dcign.model.networks import Architecture
from dcign.model.step_options import StepOptions
from dcign.run.runtime import Runtime
from dcign.run.training import build_data, build_model
from tests.conftest import CONF

FACES = {"azimuth": 1, "elevation": 1, "light": 1, "intrinsic": None}


TINY_NET = {
    "_target_": "dcign.model.networks.Architecture",
    "latent_dim": 8,
    "image_size": 16,
    "encoder_filters": [4, 4],
    "decoder_filters": [4, 4],
    "encoder_kernel": 3,
    "decoder_kernel": 3,
}
DCIGN_OBJECTIVE = "dcign.model.objectives.dcign.DCIGNObjective"
ADAM = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 5e-4, "betas": [0.9, 0.99]}


def tiny_module(objective: dict | None = None, **kwargs) -> DCIGN:
    """A 16x16 DC-IGN with 8 latents (faces layout) and its baseline, built from plain nodes."""
    options = {
        "net": TINY_NET,
        "objective": {"_target_": DCIGN_OBJECTIVE, **(objective or {})},
        "optimizer": ADAM,
        "layout": FACES,
        "baseline": {"beta": 1.0},
        **kwargs,
    }
    return DCIGN(**options)


def test_paper_faces_layout():
    layout = LatentLayout.from_sizes(FACES, 200)
    assert layout.as_dict()["azimuth"] == [0]
    assert layout.as_dict()["light"] == [2]
    assert layout.indices("intrinsic") == list(range(3, 200))
    masks = layout.active_masks()
    assert masks.shape == (4, 200)
    assert masks.sum(dim=1).tolist() == [1, 1, 1, 197]
    assert masks.sum(dim=0).eq(1).all()  # every latent belongs to exactly one group


def test_group_beta_is_resolved_on_the_module_s_layout_and_survives_a_checkpoint():
    module = tiny_module({"beta": 0.1, "group_beta": {"intrinsic": 0.02, "light": 1.0}})
    # Faces layout on 8 latents: azimuth 0, elevation 1, light 2, intrinsic 3..7.
    assert module.objective.latent_beta == (0.1, 0.1, 1.0) + (0.02,) * 5
    assert module.baseline_objective.latent_beta is None
    restored = DCIGN(**module.hparams)
    assert restored.objective.latent_beta == module.objective.latent_beta


def test_two_dim_azimuth_group():
    layout = LatentLayout.from_sizes({"azimuth": 2, "intrinsic": None}, 10)
    assert layout.indices("azimuth") == [0, 1]
    assert layout.indices("intrinsic") == list(range(2, 10))


@pytest.mark.parametrize(
    ("sizes", "dim", "message"),
    [
        ({"azimuth": 1, "intrinsic": 300}, 200, "needs 301"),
        ({"azimuth": 3, "intrinsic": None}, 3, "at least 1"),
        ({"azimuth": 1, "intrinsic": 5}, 200, "add up"),
        ({"azimuth": None, "intrinsic": None}, 200, "only one group"),
        ({"azimuth": 0, "intrinsic": None}, 200, "positive integer"),
        ({}, 200, "empty"),
        ({"azimuth": 1}, 0, "latent_dim"),
    ],
)
def test_bad_layout_is_a_clear_user_error(sizes, dim, message):
    with pytest.raises(ConfigError, match=message):
        LatentLayout.from_sizes(sizes, dim)


def test_paper_architecture_round_trips_150_pixels():
    """model=paper at 150 pixels is the published network: 96/64/32 5x5 in, 7x7 out, D=200."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", ["model=paper", "dataset.image_size=150", "model.baseline=null"])
    net = build_model(cfg, build_data(cfg)).dcign
    conv_filters = [m.out_channels for m in net.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    kernels = {m.kernel_size for m in net.decoder.modules() if isinstance(m, torch.nn.Conv2d)}
    assert conv_filters == [96, 64, 32]
    assert kernels == {(7, 7)}
    x = torch.rand(2, 1, 150, 150)
    with torch.no_grad():
        mu, logvar = net.encode(x)
        assert mu.shape == logvar.shape == (2, 200)
        images = net.decode(mu)
    assert images.shape == (2, 1, 150, 150)
    assert images.min() >= 0 and images.max() <= 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"encoder_kernel": 4}, "odd"),
        ({"encoder_filters": (8, 8, 8), "decoder_filters": (8, 8)}, "same length"),
        (
            {"image_size": 4, "encoder_filters": (2, 2, 2, 2), "decoder_filters": (2, 2, 2, 2)},
            "too small",
        ),
    ],
)
def test_bad_architecture(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Architecture(**kwargs)


def test_bad_optimizer_and_scheduler_settings_name_their_node():
    with pytest.raises(ConfigError, match="model.optimizer could not be built"):
        tiny_module(optimizer={"_target_": "torch.optim.NoSuchOptimizer", "_partial_": True})
    unknown = tiny_module(optimizer={**ADAM, "momentum": 0.9})
    with pytest.raises(ConfigError, match="model.optimizer: .*momentum"):
        unknown.configure_optimizers()
    negative = tiny_module(optimizer={**ADAM, "lr": -1.0})
    with pytest.raises(ConfigError, match="model.optimizer: Invalid learning rate"):
        negative.configure_optimizers()


def test_fused_adam_takes_the_closed_form_first_step(compose_config):
    """Adam's first bias-corrected step is ``-lr * g / (|g| + eps)`` per element, whatever the
    implementation; the default optimizer node (fused) must take exactly that step."""
    cfg = compose_config("model.optimizer.lr=0.01")
    factory = instantiate(cfg.model.optimizer)
    grad = torch.tensor([3.0, -0.5, 1e-3, 0.0])
    param = torch.nn.Parameter(torch.ones(4))
    opt = factory([param])
    assert isinstance(opt, torch.optim.Adam) and opt.defaults["fused"] is True
    param.grad = grad.clone()
    opt.step()
    expected = 1.0 - 0.01 * grad / (grad.abs() + 1e-8)
    torch.testing.assert_close(param.detach(), expected, rtol=0, atol=1e-6)


def test_paper_experiment_uses_the_authors_adam(compose_config):
    """The authors' rmsprop.lua is Adam(lr 5e-4, betas 0.9 / 0.99) without weight decay."""
    cfg = compose_config("experiment=paper_faces")
    opt = instantiate(cfg.model.optimizer)([torch.nn.Parameter(torch.zeros(1))])
    assert isinstance(opt, torch.optim.Adam)
    assert opt.defaults["lr"] == 5e-4
    assert opt.defaults["betas"] == (0.9, 0.99)
    assert opt.defaults["weight_decay"] == 0


def test_cosine_schedule_spans_the_run_when_its_length_is_left_null():
    module = tiny_module(
        scheduler={
            "_target_": "torch.optim.lr_scheduler.CosineAnnealingLR",
            "_partial_": True,
            "T_max": None,
        }
    )
    module._trainer = SimpleNamespace(estimated_stepping_batches=123)  # the run's length
    scheduler = module.configure_optimizers()["lr_scheduler"]["scheduler"]
    assert scheduler.T_max == 123


def test_default_schedule_falls_from_0002_to_zero_along_a_cosine(compose_config):
    """The composed defaults: lr_t = 0.001 * (1 + cos(pi * t / T)) over a run of T batches,
    and the paper's experiments keep a constant rate."""
    cfg = compose_config()
    module = tiny_module(
        optimizer=OmegaConf.to_container(cfg.model.optimizer),
        scheduler=OmegaConf.to_container(cfg.model.scheduler),
    )
    module._trainer = SimpleNamespace(estimated_stepping_batches=100)
    config = module.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    seen = {}
    for step in range(101):
        seen[step] = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
    assert seen[0] == pytest.approx(0.002)
    assert seen[25] == pytest.approx(0.001 * (1 + 2**-0.5))
    assert seen[50] == pytest.approx(0.001)
    assert seen[100] == pytest.approx(0.0, abs=1e-12)
    assert compose_config("experiment=paper_faces").model.scheduler is None


def test_a_held_baseline_keeps_its_own_rate_while_the_schedule_decays_dcign_s():
    """Cosine from 0.002 over 100 batches for DC-IGN: 0.001 * (1 + cos(pi t / 100)); the
    baseline, held at its own 0.001, never moves."""
    module = tiny_module(
        optimizer={**ADAM, "lr": 0.002},
        scheduler={
            "_target_": "torch.optim.lr_scheduler.CosineAnnealingLR",
            "_partial_": True,
            "T_max": None,
        },
        baseline={"beta": 1.0, "lr": 0.001, "scheduled": False},
    )
    module._trainer = SimpleNamespace(estimated_stepping_batches=100)
    config = module.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    module.lr_schedulers = lambda: scheduler
    dcign_group, baseline_group = optimizer.param_groups
    assert baseline_group["params"] == list(module.baseline.parameters())
    for step in range(1, 51):
        optimizer.step()
        module._step_schedulers()
        if step in (25, 50):
            expected = 0.001 * (1 + math.cos(math.pi * step / 100))
            assert dcign_group["lr"] == pytest.approx(expected)
            assert baseline_group["lr"] == 0.001


def test_a_scheduled_baseline_without_its_own_rate_follows_dcign_s():
    module = tiny_module(optimizer={**ADAM, "lr": 0.002}, baseline={"lr": None, "scheduled": True})
    dcign_group, baseline_group = module.configure_optimizers()["optimizer"].param_groups
    assert dcign_group["lr"] == baseline_group["lr"] == 0.002


@pytest.mark.parametrize(
    ("baseline", "message"),
    [
        ({"beta": 1.0, "rate": 0.1}, r"model\.baseline has no option\(s\) \['rate'\]"),
        ({"lr": -0.001}, r"model\.baseline\.lr must be a positive number"),
        ({"lr": True}, r"model\.baseline\.lr must be a positive number"),
        ({"scheduled": "no"}, r"model\.baseline\.scheduled must be true or false"),
        ({"beta": -1.0}, r"model\.baseline\.beta must be a number >= 0"),
        ({"detail_weight": -1.0}, r"model\.baseline\.detail_weight must be a number >= 0"),
        ({"detail_weight": float("nan")}, r"model\.baseline\.detail_weight must be a number"),
    ],
)
def test_bad_baseline_options_are_user_errors(baseline, message):
    with pytest.raises(ConfigError, match=message):
        tiny_module(baseline=baseline)


def linear_decay_module(**options):
    """A tiny module whose schedule is ``model/scheduler=linear`` with ``options``."""
    node = {"_target_": "dcign.model.optimization.linear_decay", "_partial_": True}
    return tiny_module(scheduler={**node, **options})


def test_linear_schedule_falls_over_its_span_of_the_run_then_holds():
    # lr 1e-3 to a tenth over the first 0.8 of a 100-batch run: 1e-3 * (1 - 0.9 * t / 80).
    module = linear_decay_module(end_factor=0.1, span=0.8, total_iters=None)
    module._trainer = SimpleNamespace(estimated_stepping_batches=100)
    config = module.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    start = optimizer.param_groups[0]["lr"]
    seen = {}
    for step in range(100):
        seen[step] = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
    assert seen[40] == pytest.approx(start * (1 - 0.9 * 40 / 80))
    assert seen[80] == pytest.approx(0.1 * start) and seen[99] == pytest.approx(0.1 * start)


def test_a_schedule_span_outside_the_run_is_a_config_error():
    module = linear_decay_module(span=0.0, total_iters=10)
    with pytest.raises(ConfigError, match=r"model\.scheduler\.span must be in \(0, 1\]"):
        module.configure_optimizers()


def test_public_interface():
    module = tiny_module()
    x = torch.rand(5, 1, 16, 16)
    mu, logvar = module.encode(x)
    assert mu.shape == logvar.shape == (5, 8)
    images = module.decode(mu)
    assert images.shape == x.shape
    assert ((images >= 0) & (images <= 1)).all()
    assert module.layout == {
        "azimuth": [0],
        "elevation": [1],
        "light": [2],
        "intrinsic": [3, 4, 5, 6, 7],
    }


def random_batch(generator: torch.Generator | None = None) -> GroupedBatch:
    """An azimuth group and an intrinsic group of 3 random 16x16 images (labels unused)."""
    return GroupedBatch(
        images=torch.rand(2, 3, 1, 16, 16, generator=generator),
        factors=torch.zeros(2, 3, 3),
        identity=torch.zeros(2, 3, dtype=torch.int64),
        group_type=torch.tensor([0, 3]),
    )


def _grads(net: torch.nn.Module) -> list[torch.Tensor | None]:
    return [p.grad for p in net.parameters()]


def test_each_loss_reaches_only_its_own_network():
    module = tiny_module()
    batch = random_batch()
    module.dcign_loss(batch).total.backward()
    assert all(g is not None and g.abs().sum() > 0 for g in _grads(module.dcign))
    assert all(g is None for g in _grads(module.baseline))
    module.zero_grad(set_to_none=True)
    module.baseline_loss(batch).total.backward()
    assert all(g is None for g in _grads(module.dcign))
    assert all(g is not None for g in _grads(module.baseline))


def test_the_module_offers_what_callbacks_and_evaluation_rely_on():
    with_baseline, alone = tiny_module(), tiny_module(baseline=None)
    assert isinstance(with_baseline, CodeModel) and isinstance(alone, CodeModel)
    assert isinstance(with_baseline.comparisons["baseline"], Renderer)
    assert list(with_baseline.networks) == ["dcign", "baseline"]


def test_baseline_can_be_switched_off():
    module = tiny_module(baseline=None)
    assert module.comparisons == {} and list(module.networks) == ["dcign"]
    assert not hasattr(module, "baseline")
    assert len(module.configure_optimizers()["optimizer"].param_groups) == 1


def test_channels_last_runs_nhwc_convolutions_with_the_same_results():
    torch.manual_seed(0)
    default = tiny_module()
    nhwc = tiny_module()
    nhwc.load_state_dict(default.state_dict())
    Runtime(channels_last=True).apply(nhwc)
    convs = [m for m in nhwc.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    plain = [m for m in default.modules() if isinstance(m, torch.nn.Conv2d)]
    assert plain and all(c.weight.is_contiguous() for c in plain)
    batch = random_batch()
    ours = nhwc.dcign_loss(batch, deterministic=True).total
    theirs = default.dcign_loss(batch, deterministic=True).total
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    ours.backward()
    theirs.backward()
    # NHWC sums a weight's gradient over pixels in another order: equal to float32 rounding,
    # judged against each gradient's own scale.
    for mine, reference in zip(nhwc.dcign.parameters(), default.dcign.parameters(), strict=True):
        scale = reference.grad.abs().max().item()
        torch.testing.assert_close(mine.grad, reference.grad, rtol=1e-4, atol=1e-5 * scale)


def test_channels_last_holds_every_hidden_grid_nhwc():
    """A one-channel image (and a first weight of one input channel) has the same strides in
    both layouts, and a linear layer's output viewed as a grid is NCHW; neither may leave the
    stages after them (ReLU, max-pooling, unpooling) in NCHW, where a CPU runs them several
    times slower."""
    model = tiny_module(baseline=None)
    Runtime(channels_last=True).apply(model)
    first = model.dcign.encoder.features[0].weight
    assert first.shape[1] == 1 and first.stride(1) == 1  # channels innermost: NHWC strides
    grids: list[tuple[str, torch.Tensor]] = []
    for name, layer in model.dcign.named_modules():
        if isinstance(layer, torch.nn.ReLU | torch.nn.MaxPool2d | torch.nn.Upsample):
            layer.register_forward_hook(lambda _, args, out, n=name: grids.append((n, args[0])))
    model.dcign_loss(random_batch(), deterministic=True)
    kinds = {type(layer) for layer in model.dcign.modules()}
    assert {torch.nn.MaxPool2d, torch.nn.Upsample} <= kinds and len(grids) >= 6
    for name, grid in grids:
        if grid.dim() == 4:
            assert grid.stride(1) == 1 and grid.shape[1] > 1, f"{name} ran on an NCHW grid"


def test_runtime_options_reach_the_step_and_are_not_hyperparameters():
    model = tiny_module()
    Runtime(gradient_clip_val=0.5, nonfinite="skip", channels_last=False).apply(model)
    assert model.step_options == StepOptions(gradient_clip_val=0.5, nonfinite="skip")
    assert not {"gradient_clip_val", "nonfinite", "compile", "channels_last"} & set(model.hparams)
    # Clipping: each network's gradient norm is cut to 0.5 on its own.
    for p in model.parameters():
        p.grad = torch.full_like(p, 3.0)
    model._clip_gradients()
    for net in model.networks.values():
        norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in net.parameters()]))
        torch.testing.assert_close(norm, torch.tensor(0.5))


@pytest.mark.parametrize(
    ("poison", "finite"),
    [
        (None, True),
        ([float("inf")], False),
        ([float("nan")], False),
        ([float("inf"), -float("inf")], False),  # sums to NaN, still caught
        ([-1e30, 1e30], True),  # large but finite entries are not a false alarm
    ],
)
def test_gradient_check_flags_exactly_the_non_finite_steps(poison, finite, monkeypatch):
    model = tiny_module()
    model.step_options = StepOptions(nonfinite="skip")
    monkeypatch.setattr(DCIGN, "log", lambda *args, **kwargs: None)  # no trainer to log to
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    if poison is not None:
        grad = next(model.parameters()).grad.view(-1)
        grad[: len(poison)] = torch.tensor(poison)
    assert model._gradients_finite(batch_idx=0) is finite
    assert model.skipped_steps == (0 if finite else 1)


def test_gradient_check_does_not_overflow_half_precision_gradients():
    """100k half-precision ones sum past float16's maximum (65504) but are all finite."""
    model = tiny_module()
    model._stepped = (torch.nn.Parameter(torch.zeros(100_000, dtype=torch.float16)),)
    model._stepped[0].grad = torch.ones(100_000, dtype=torch.float16)
    assert model._gradients_finite(batch_idx=0)


@pytest.mark.slow
def test_compiled_networks_train_like_eager_ones():
    """``runtime.compile=true`` (torch.compile of encoder and decoder) changes speed, not maths:
    same loss and same gradients as the eager networks with the same weights."""
    eager, compiled = tiny_module(), tiny_module()
    compiled.load_state_dict(eager.state_dict())
    Runtime(compile=True, channels_last=False).apply(compiled)
    batch = random_batch(torch.Generator().manual_seed(0))
    losses = []
    for model in (eager, compiled):
        loss = model.dcign_loss(batch, deterministic=True).total
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-4)
    for (name, p_eager), p_compiled in zip(
        eager.dcign.named_parameters(), compiled.dcign.parameters(), strict=True
    ):
        assert torch.allclose(p_compiled.grad, p_eager.grad, rtol=1e-4, atol=1e-5), name
    assert compiled.dcign.encoder._compiled_call_impl is not None


def test_the_baseline_has_its_own_kl_and_detail_weights():
    # DC-IGN with beta 0.25 and detail weight 3, the baseline with its own 2.0 and 0.5: each
    # loss is its reconstruction plus its own beta times its KL and its own detail weight times
    # its detail term.
    module = tiny_module(
        objective={"beta": 0.25, "detail_weight": 3.0}, baseline={"beta": 2.0, "detail_weight": 0.5}
    )
    batch = random_batch()
    dcign = module.dcign_loss(batch, deterministic=True)
    base = module.baseline_loss(batch, deterministic=True)
    expected = (
        dcign.reconstruction
        + 0.25 * dcign.kl
        + 3.0 * dcign.detail
        + module.objective.invariance_weight * (dcign.invariance)
        + module.objective.contrast_weight * dcign.contrast
    )
    assert float(dcign.detail) > 0 and float(base.detail) > 0
    torch.testing.assert_close(dcign.total, expected)
    torch.testing.assert_close(base.total, base.reconstruction + 2.0 * base.kl + 0.5 * base.detail)


def test_the_baseline_trains_without_dcign_s_detail_term_unless_told():
    module = tiny_module(objective={"detail_weight": 3.0}, baseline={"beta": 1.0})
    assert module.objective.detail_weight == 3.0
    assert module.baseline_objective.detail_weight == 0.0
    assert module.baseline_loss(random_batch(), deterministic=True).detail is None
