"""The GQN networks (Eslami et al. 2018) checked against shapes and hand-computed values."""

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from dcign.errors import ConfigError
from dcign.gqn.networks import (
    ConvLSTMCell,
    Generator,
    GQNArchitecture,
    Representation,
    gaussian_kl,
    gaussian_nll,
    scene_representation,
    sigma_schedule,
)

N, M, V = 3, 4, 5


def tiny(**overrides) -> GQNArchitecture:
    sizes = dict(image_size=8, channels=1, viewpoint_dim=V, r_dim=6, h_dim=5, z_dim=2, steps=3)
    return GQNArchitecture(**{**sizes, "kernel": 3, **overrides})


def seeded(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def scene(arch: GQNArchitecture) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(r, query viewpoints, target)`` with the shapes the generator expects."""
    grid = arch.image_size // 4
    r = seeded(N, arch.r_dim, grid, grid, seed=1)
    viewpoints = seeded(N, arch.viewpoint_dim, seed=2)
    target = seeded(N, arch.channels, arch.image_size, arch.image_size, seed=3)
    return r, viewpoints, target


def cell_parameters(in_channels: int, hidden: int, kernel: int) -> int:
    """One convolution from ``in + hidden`` channels to four gates of ``hidden`` channels."""
    return 4 * hidden * (in_channels + hidden) * kernel**2 + 4 * hidden


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- representation -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["tower", "pool"])
def test_representation_shape(kind):
    arch = tiny(image_size=16, channels=3, representation=kind)
    r = Representation(arch)(seeded(N, 3, 16, 16), seeded(N, V))
    assert r.shape == (N, arch.r_dim, 4, 4)


def test_pool_representation_is_constant_over_the_grid():
    arch = tiny(image_size=16, representation="pool")
    r = Representation(arch)(seeded(N, 1, 16, 16), seeded(N, V))
    assert torch.equal(r, r[:, :, :1, :1].expand_as(r))


def test_representation_depends_on_the_viewpoint():
    rep = Representation(tiny())
    images = seeded(N, 1, 8, 8)
    assert not torch.allclose(rep(images, seeded(N, V, seed=1)), rep(images, seeded(N, V, seed=2)))


@pytest.mark.parametrize("kind", ["tower", "pool"])
def test_scene_representation_is_the_sum_over_views(kind):
    arch = tiny(representation=kind)
    rep = Representation(arch)
    images, viewpoints = seeded(N, M, 1, 8, 8), seeded(N, M, V)
    r = scene_representation(rep, images, viewpoints)
    assert r.shape == (N, arch.r_dim, 2, 2)
    expected = sum(rep(images[:, k], viewpoints[:, k]) for k in range(M))
    torch.testing.assert_close(r, expected)


def test_scene_representation_ignores_the_order_of_views():
    rep = Representation(tiny())
    images, viewpoints = seeded(N, M, 1, 8, 8), seeded(N, M, V)
    order = torch.tensor([2, 0, 3, 1])
    torch.testing.assert_close(
        scene_representation(rep, images[:, order], viewpoints[:, order]),
        scene_representation(rep, images, viewpoints),
    )


# --- ConvLSTM -------------------------------------------------------------------------------


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_conv_lstm_with_constant_gates_follows_the_recurrence():
    cell = ConvLSTMCell(in_channels=2, hidden_channels=1, kernel=1)
    bias = [0.5, -1.0, 2.0, 0.3]  # i, f, o, g
    with torch.no_grad():
        cell.gates.weight.zero_()
        cell.gates.bias.copy_(torch.tensor(bias))
    i, f, o, g = sigmoid(bias[0]), sigmoid(bias[1]), sigmoid(bias[2]), math.tanh(bias[3])
    c1 = i * g  # zero initial state
    h1 = o * math.tanh(c1)
    c2 = f * c1 + i * g
    h2 = o * math.tanh(c2)

    x = seeded(2, 2, 3, 3)
    state = cell(x, None)
    torch.testing.assert_close(state[1], torch.full((2, 1, 3, 3), c1))
    torch.testing.assert_close(state[0], torch.full((2, 1, 3, 3), h1))
    h, c = cell(x, state)
    torch.testing.assert_close(c, torch.full((2, 1, 3, 3), c2))
    torch.testing.assert_close(h, torch.full((2, 1, 3, 3), h2))


def test_conv_lstm_reads_the_input_then_the_hidden_state():
    cell = ConvLSTMCell(in_channels=1, hidden_channels=1, kernel=1)
    # Weight [gate, (x, h)] and bias per gate i, f, o, g.
    w = [[0.7, -0.4], [0.2, 0.9], [-0.5, 0.3], [1.1, -0.8]]
    b = [0.1, 0.2, -0.3, 0.05]
    with torch.no_grad():
        cell.gates.weight.copy_(torch.tensor(w).view(4, 2, 1, 1))
        cell.gates.bias.copy_(torch.tensor(b))
    h, c = 0.0, 0.0
    state = None
    for x in (1.5, -0.5):
        pre = [wx * x + wh * h + bias for (wx, wh), bias in zip(w, b, strict=True)]
        c = sigmoid(pre[1]) * c + sigmoid(pre[0]) * math.tanh(pre[3])
        h = sigmoid(pre[2]) * math.tanh(c)
        state = cell(torch.full((1, 1, 2, 2), x), state)
        torch.testing.assert_close(state[0], torch.full((1, 1, 2, 2), h))
        torch.testing.assert_close(state[1], torch.full((1, 1, 2, 2), c))


# --- distributions --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mu_q", "var_q", "mu_p", "var_p", "expected"),
    [
        (1.0, 1.0, 0.0, 1.0, 0.5),
        (0.3, 2.0, 0.3, 2.0, 0.0),
        # log(sigma_p / sigma_q) + (var_q + (mu_q - mu_p)^2) / (2 var_p) - 1/2
        (0.0, 1.0, 0.0, math.e**2, 1.0 + 1.0 / (2 * math.e**2) - 0.5),
        (2.0, 4.0, -1.0, 1.0, math.log(1 / 2) + (4.0 + 9.0) / 2 - 0.5),
    ],
)
def test_gaussian_kl_by_hand(mu_q, var_q, mu_p, var_p, expected):
    def t(value: float) -> torch.Tensor:
        return torch.tensor(value, dtype=torch.float64)

    kl = gaussian_kl(t(mu_q), t(math.log(var_q)), t(mu_p), t(math.log(var_p)))
    assert kl.item() == pytest.approx(expected, abs=1e-12)


def test_gaussian_kl_matches_torch_distributions():
    gen = torch.Generator().manual_seed(0)
    mu_q, logvar_q, mu_p, logvar_p = torch.randn(4, 2, 3, 5, 5, generator=gen, dtype=torch.float64)
    kl = gaussian_kl(mu_q, logvar_q, mu_p, logvar_p)
    expected = kl_divergence(
        Normal(mu_q, torch.exp(0.5 * logvar_q)), Normal(mu_p, torch.exp(0.5 * logvar_p))
    )
    assert kl.shape == mu_q.shape
    torch.testing.assert_close(kl, expected)


def test_gaussian_nll_matches_normal_log_prob():
    mean, target = seeded(N, 1, 4, 4, seed=1), seeded(N, 1, 4, 4, seed=2)
    nll = gaussian_nll(mean, target, 0.7)
    expected = -Normal(mean, 0.7).log_prob(target).sum(dim=(1, 2, 3))
    assert nll.shape == (N,)
    torch.testing.assert_close(nll, expected)


@pytest.mark.parametrize(
    ("step", "expected"),
    [(0, 2.0), (100_000, 1.35), (200_000, 0.7), (1_000_000, 0.7)],
)
def test_sigma_schedule(step, expected):
    assert sigma_schedule(step) == pytest.approx(expected)


def test_sigma_schedule_with_custom_ends():
    assert sigma_schedule(25, start=1.0, end=0.5, steps=100) == pytest.approx(0.875)
    assert sigma_schedule(150, start=1.0, end=0.5, steps=100) == pytest.approx(0.5)


# --- generator ------------------------------------------------------------------------------


@pytest.mark.parametrize("stochastic", [True, False])
@pytest.mark.parametrize("shared_core", [True, False])
def test_generator_shapes(stochastic, shared_core):
    arch = tiny(image_size=16, channels=3, stochastic=stochastic, shared_core=shared_core)
    r, viewpoints, target = scene(arch)
    generator = Generator(arch)
    mean, kl = generator(r, viewpoints, target)
    assert mean.shape == (N, 3, 16, 16)
    assert kl.shape == (N,)
    assert ((mean > 0) & (mean < 1)).all()
    assert generator.sample(r, viewpoints).shape == (N, 3, 16, 16)


@pytest.mark.parametrize("stochastic", [True, False])
def test_separate_cores_add_one_core_per_extra_step(stochastic):
    arch = tiny(stochastic=stochastic, shared_core=False)
    shared = count(Generator(tiny(stochastic=stochastic, shared_core=True)))
    separate = count(Generator(arch))
    condition = arch.viewpoint_dim + arch.r_dim
    per_step = cell_parameters(
        condition + (arch.z_dim if stochastic else 0), arch.h_dim, arch.kernel
    )
    if stochastic:
        target = arch.channels * 16  # the target image, space-to-depth by 4
        per_step += cell_parameters(target + condition + arch.h_dim, arch.h_dim, arch.kernel)
    assert separate - shared == (arch.steps - 1) * per_step


def fixed_noise(arch: GQNArchitecture, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    grid = arch.image_size // 4
    return [torch.randn(N, arch.z_dim, grid, grid, generator=gen) for _ in range(arch.steps)]


def test_generator_forward_is_deterministic_given_the_noise():
    arch = tiny()
    generator = Generator(arch)
    r, viewpoints, target = scene(arch)
    first = generator(r, viewpoints, target, noise=fixed_noise(arch, 0))
    again = generator(r, viewpoints, target, noise=fixed_noise(arch, 0))
    other = generator(r, viewpoints, target, noise=fixed_noise(arch, 1))
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.allclose(first[0], other[0])
    assert (first[1] >= 0).all()


def test_last_step_noise_changes_the_image_but_not_the_kl():
    # The KL of step l compares distributions computed before z_l is drawn.
    arch = tiny()
    generator = Generator(arch)
    r, viewpoints, target = scene(arch)
    noise = fixed_noise(arch, 0)
    mean, kl = generator(r, viewpoints, target, noise=noise)
    other_mean, other_kl = generator(r, viewpoints, target, noise=[*noise[:-1], -noise[-1]])
    torch.testing.assert_close(other_kl, kl)
    assert not torch.allclose(other_mean, mean)


def test_generator_forward_without_noise_is_random():
    arch = tiny()
    generator = Generator(arch)
    r, viewpoints, target = scene(arch)
    torch.manual_seed(0)
    first, _ = generator(r, viewpoints, target)
    second, _ = generator(r, viewpoints, target)
    assert not torch.allclose(first, second)


def test_generator_sample_is_reproducible_with_a_torch_generator():
    arch = tiny()
    generator = Generator(arch)
    r, viewpoints, _ = scene(arch)
    first = generator.sample(r, viewpoints, torch.Generator().manual_seed(5))
    again = generator.sample(r, viewpoints, torch.Generator().manual_seed(5))
    other = generator.sample(r, viewpoints, torch.Generator().manual_seed(6))
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.allclose(first, other)


def test_generator_rejects_noise_for_the_wrong_number_of_steps():
    arch = tiny()
    r, viewpoints, target = scene(arch)
    with pytest.raises(ValueError, match="one tensor per step"):
        Generator(arch)(r, viewpoints, target, noise=fixed_noise(arch, 0)[:-1])


def test_deterministic_generator_has_zero_kl_and_samples_its_mean():
    arch = tiny(stochastic=False)
    generator = Generator(arch)
    r, viewpoints, target = scene(arch)
    mean, kl = generator(r, viewpoints, target)
    assert torch.equal(kl, torch.zeros(N))
    torch.testing.assert_close(generator.sample(r, viewpoints), mean, rtol=0, atol=0)
    # The target is only read by the (absent) inference core.
    torch.testing.assert_close(generator(r, viewpoints, 1 - target)[0], mean, rtol=0, atol=0)


def test_gradients_reach_both_networks():
    arch = tiny()
    rep, generator = Representation(arch), Generator(arch)
    images, viewpoints = seeded(N, M, 1, 8, 8), seeded(N, M, V)
    r = scene_representation(rep, images, viewpoints)
    _, query, target = scene(arch)
    mean, kl = generator(r, query, target)
    (gaussian_nll(mean, target, 1.0) + kl).mean().backward()
    for module in (rep, generator):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


# --- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("image_size", 10),
        ("image_size", 4),
        ("channels", 0),
        ("viewpoint_dim", 0),
        ("r_dim", -1),
        ("h_dim", 0),
        ("z_dim", 0),
        ("steps", 0),
        ("kernel", 4),
        ("kernel", 0),
        ("representation", "mean"),
    ],
)
def test_bad_architecture_names_the_option(option, value):
    with pytest.raises(ConfigError, match=f"model.net.{option}"):
        GQNArchitecture(**{option: value})


def test_default_architecture_is_valid():
    arch = GQNArchitecture()  # conf/model/gqn.yaml's sizes
    assert (arch.image_size // 4, arch.representation, arch.steps) == (8, "tower", 6)
    assert (arch.h_dim, arch.z_dim, arch.shared_core, arch.kernel) == (48, 4, True, 3)
