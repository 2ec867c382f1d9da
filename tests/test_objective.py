"""The DC-IGN training semantics (paper 3.1-3.2) checked against hand-computed values.

A tiny linear decoder ``logits = z @ W.T + b`` makes the decoder's gradient computable by hand:
for the Bernoulli likelihood, d(-log p)/dz = (sigmoid(logits) - x) @ W.
"""

import math

import pytest
import torch

from dcign.errors import ConfigError
from dcign.model.contrast import held_contrast
from dcign.model.layout import LatentLayout
from dcign.model.losses import kl_to_standard_normal, reconstruction_nll
from dcign.model.objectives.base import SGVBObjective
from dcign.model.objectives.dcign import DCIGNObjective
from dcign.model.objectives.group import AdaGVAEObjective, GVAEObjective

G, S, D, C, H, W = 2, 3, 4, 1, 2, 2
PIXELS = C * H * W


def paper(**options) -> DCIGNObjective:
    """DC-IGN as the paper's text reads: held latents at the group mean, their decoder gradient
    replaced by the invariance gradient, no line-up term (the shipped default takes them from a
    partner and adds the line-up term)."""
    return DCIGNObjective(
        **{
            "clamp_target": "mean",
            "clamp_gradient": "invariance",
            "contrast_weight": 0.0,
            **options,
        }
    )


class LinearDecoder:
    """Records what it was given, so tests can look at the decoder's input."""

    def __init__(self) -> None:
        gen = torch.Generator().manual_seed(0)
        self.weight = torch.randn(PIXELS, D, generator=gen, dtype=torch.float64)
        self.bias = torch.randn(PIXELS, generator=gen, dtype=torch.float64)
        self.inputs: list[torch.Tensor] = []

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        self.inputs.append(z.detach().clone())
        return (z @ self.weight.T + self.bias).view(-1, C, H, W)


def hand_batch():
    # Two groups of three images; group 0 trains latent 0 ("azimuth"), group 1 latents 1..3.
    mu = torch.tensor(
        [
            [[0.5, 1.0, -1.0, 2.0], [1.5, 0.0, 0.0, 1.0], [-0.5, 2.0, 1.0, 0.0]],
            [[1.0, 1.0, 1.0, 1.0], [0.0, -1.0, 2.0, 3.0], [2.0, 0.0, 0.0, -1.0]],
        ],
        dtype=torch.float64,
        requires_grad=True,
    )
    logvar = torch.zeros(G, S, D, dtype=torch.float64, requires_grad=True)
    active = torch.tensor([[True, False, False, False], [False, True, True, True]])
    x = torch.rand(G, S, C, H, W, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return mu, logvar, active, x


def encoder_of(mu, logvar):
    return lambda x: (mu.flatten(0, 1), logvar.flatten(0, 1))


def test_decoder_sees_group_mean_on_inactive_latents():
    mu, logvar, active, x = hand_batch()
    decoder = LinearDecoder()
    config = paper(invariance_weight=0.01)
    noise = torch.zeros(G, S, D, dtype=torch.float64)
    config.loss(encoder_of(mu, logvar), decoder, x, active, noise)
    seen = decoder.inputs[0].view(G, S, D)
    # Group 0: latent 0 untouched; latents 1..3 replaced by their group means.
    expected0 = torch.tensor(
        [[0.5, 1.0, 0.0, 1.0], [1.5, 1.0, 0.0, 1.0], [-0.5, 1.0, 0.0, 1.0]], dtype=torch.float64
    )
    # Group 1: latent 0 replaced by mean(1, 0, 2) = 1; the others untouched.
    expected1 = torch.tensor(
        [[1.0, 1.0, 1.0, 1.0], [1.0, -1.0, 2.0, 3.0], [1.0, 0.0, 0.0, -1.0]], dtype=torch.float64
    )
    torch.testing.assert_close(seen[0], expected0)
    torch.testing.assert_close(seen[1], expected1)


def test_clamp_to_first_sample_option():
    mu, logvar, active, x = hand_batch()
    decoder = LinearDecoder()
    config = paper(clamp_target="first")
    config.loss(encoder_of(mu, logvar), decoder, x, active, torch.zeros(G, S, D, dtype=mu.dtype))
    seen = decoder.inputs[0].view(G, S, D)
    torch.testing.assert_close(seen[0, :, 1:], mu[0, :1, 1:].detach().expand(S, 3))
    torch.testing.assert_close(seen[0, :, 0], mu[0, :, 0].detach())


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_gradients_follow_the_paper(reduction):
    """Inactive: exactly lambda * (z - mean), no decoder term. Active: the decoder gradient."""
    lam = 0.01
    mu, logvar, active, x = hand_batch()
    decoder = LinearDecoder()
    config = paper(invariance_weight=lam, beta=0.0, reduction=reduction)
    noise = torch.zeros(G, S, D, dtype=torch.float64)  # z == mu
    parts = config.loss(encoder_of(mu, logvar), decoder, x, active, noise)
    parts.total.backward()

    scale = 1.0 if reduction == "sum" else 1.0 / (G * S)
    z = mu.detach()
    group_mean = z.mean(dim=1, keepdim=True)
    z_dec = torch.where(active[:, None, :], z, group_mean)
    probs = torch.sigmoid(z_dec.view(-1, D) @ decoder.weight.T + decoder.bias)
    decoder_grad = ((probs - x.view(-1, PIXELS)) @ decoder.weight).view(G, S, D)
    expected = torch.where(active[:, None, :], decoder_grad, lam * (z - group_mean)) * scale
    torch.testing.assert_close(mu.grad, expected)


def test_kl_gradient_adds_beta_mu_everywhere():
    mu, logvar, active, x = hand_batch()
    decoder = LinearDecoder()
    beta = 2.0
    with_kl = paper(invariance_weight=0.01, beta=beta, reduction="sum")
    noise = torch.zeros(G, S, D, dtype=torch.float64)
    with_kl.loss(encoder_of(mu, logvar), decoder, x, active, noise).total.backward()
    grad_with_kl = mu.grad.clone()
    mu.grad = None
    no_kl = paper(invariance_weight=0.01, beta=0.0, reduction="sum")
    no_kl.loss(encoder_of(mu, logvar), decoder, x, active, noise).total.backward()
    torch.testing.assert_close(grad_with_kl - mu.grad, beta * mu.detach())
    # d KL / d logvar = 0.5 * (exp(logvar) - 1) = 0 at logvar = 0.
    torch.testing.assert_close(logvar.grad, torch.zeros_like(logvar))


# The hand batch's layout: latent 0 is "azimuth", latents 1..3 "intrinsic".
HAND_LAYOUT = LatentLayout.from_sizes({"azimuth": 1, "intrinsic": None}, D)


def test_group_beta_weighs_each_group_s_kl_gradient():
    # d(w * KL)/d mu = w * mu per latent: beta 2 on azimuth (latent 0), 0.5 on intrinsic.
    mu, logvar, active, x = hand_batch()
    decoder = LinearDecoder()
    noise = torch.zeros(G, S, D, dtype=torch.float64)
    grouped = paper(invariance_weight=0.01, beta=2.0, group_beta={"intrinsic": 0.5})
    grouped = grouped.for_layout(HAND_LAYOUT)
    assert grouped.latent_beta == (2.0, 0.5, 0.5, 0.5)
    with_kl = grouped.loss(encoder_of(mu, logvar), decoder, x, active, noise)
    with_kl.total.backward()
    grad_with_kl = mu.grad.clone()
    mu.grad = None
    no_kl = paper(invariance_weight=0.01, beta=0.0, reduction="sum")
    no_kl.loss(encoder_of(mu, logvar), decoder, x, active, noise).total.backward()
    weights = torch.tensor([2.0, 0.5, 0.5, 0.5], dtype=torch.float64)
    torch.testing.assert_close(grad_with_kl - mu.grad / (G * S), weights * mu.detach() / (G * S))
    # The logged KL stays the unweighted KL: 0.5 * sum(mu^2) at logvar 0, averaged per image.
    torch.testing.assert_close(with_kl.kl, 0.5 * mu.detach().square().sum() / (G * S))


def test_weighted_kl_by_hand():
    # Per-latent KL at logvar 0 is mu^2 / 2: (0.5, 2.0), weighed by (0.1, 3): 0.05 + 6.
    mu, logvar = torch.tensor([[1.0, 2.0]]), torch.zeros(1, 2)
    two_groups = LatentLayout.from_sizes({"azimuth": 1, "intrinsic": None}, 2)
    grouped = GVAEObjective(beta=0.1, group_beta={"intrinsic": 3.0}).for_layout(two_groups)
    kl, weighted = grouped.kl_terms(mu, logvar)
    torch.testing.assert_close(weighted, torch.tensor([6.05]))
    torch.testing.assert_close(kl, torch.tensor([2.5]))  # the logged KL is never weighed
    # Without group_beta an objective weighs every latent by beta, and nothing is resolved.
    plain = GVAEObjective(beta=0.5)
    assert plain.for_layout(HAND_LAYOUT) is plain
    torch.testing.assert_close(plain.kl_terms(mu, logvar)[1], torch.tensor([1.25]))


def test_the_baseline_beside_a_grouped_beta_keeps_one_beta():
    grouped = paper(group_beta={"intrinsic": 0.02}).for_layout(HAND_LAYOUT)
    baseline = SGVBObjective.beside(grouped, beta=1.0)
    assert baseline.group_beta is None and baseline.latent_beta is None and baseline.beta == 1.0


@pytest.mark.parametrize(
    ("objective", "message"),
    [
        (paper(group_beta={"pose": 0.1}), r"\['pose'\].*groups are \['azimuth', 'intrinsic'\]"),
        (AdaGVAEObjective(group_beta={"intrinsic": 0.1}), "infers which latents"),
    ],
)
def test_group_beta_must_name_groups_of_the_layout(objective, message):
    with pytest.raises(ConfigError, match=message):
        objective.for_layout(HAND_LAYOUT)


@pytest.mark.parametrize("weight", [-0.1, "high", True])
def test_group_beta_weights_must_be_non_negative_numbers(weight):
    with pytest.raises(ConfigError, match="group_beta.intrinsic must be a number >= 0"):
        paper(group_beta={"intrinsic": weight})


def test_invariance_weight_zero_gives_inactive_latents_no_gradient_but_kl():
    mu, logvar, active, x = hand_batch()
    config = paper(invariance_weight=0.0, beta=0.0, reduction="sum")
    noise = torch.zeros(G, S, D, dtype=torch.float64)
    config.loss(encoder_of(mu, logvar), LinearDecoder(), x, active, noise).total.backward()
    inactive_grad = mu.grad[~active[:, None, :].expand(G, S, D)]
    assert torch.count_nonzero(inactive_grad) == 0


def test_posterior_clamping_and_kl_on_clamped_options():
    mu, logvar, active, x = hand_batch()
    decoder = LinearDecoder()
    config = paper(clamp_stage="posterior", kl_on_clamped=True, beta=1.0)
    noise = torch.zeros(G, S, D, dtype=torch.float64)
    parts = config.loss(encoder_of(mu, logvar), decoder, x, active, noise)
    seen = decoder.inputs[0].view(G, S, D)
    mean = mu.detach().mean(dim=1, keepdim=True)
    torch.testing.assert_close(seen, torch.where(active[:, None, :], mu.detach(), mean))
    clamped_mu = torch.where(active[:, None, :], mu.detach(), mean)
    expected_kl = (0.5 * clamped_mu.square()).sum(-1).mean()
    torch.testing.assert_close(parts.kl, expected_kl)


def test_baseline_objective_is_plain_sgvb():
    mu, logvar, _, x = hand_batch()
    decoder = LinearDecoder()
    config = SGVBObjective(reduction="sum")
    noise = torch.zeros(G, S, D, dtype=torch.float64)
    parts = config.loss(encoder_of(mu, logvar), decoder, x, noise=noise)
    torch.testing.assert_close(decoder.inputs[0], mu.detach().flatten(0, 1))  # nothing clamped
    assert parts.invariance is None
    torch.testing.assert_close(parts.kl, 0.5 * mu.detach().square().sum())


def test_closed_form_terms():
    # Bernoulli NLL at logit 0 is log 2 per pixel, whatever the target.
    logits = torch.zeros(3, 1, 4, 5)
    target = torch.rand(3, 1, 4, 5)
    torch.testing.assert_close(
        reconstruction_nll(logits, target), torch.full((3,), 20 * math.log(2.0))
    )
    # Gaussian NLL with the mean exactly on target: -log N(0; 0, sigma) per pixel.
    sigma = 0.2
    exact = reconstruction_nll(
        torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 0.5), "gaussian", sigma
    )
    torch.testing.assert_close(exact, torch.tensor([4 * math.log(sigma * math.sqrt(2 * math.pi))]))
    # KL(N(1, e^0) || N(0, 1)) = 0.5 per latent; KL(N(0, e^{log 2}) || N(0,1)) = 0.5(2-1-log 2).
    torch.testing.assert_close(
        kl_to_standard_normal(torch.ones(2, 3), torch.zeros(2, 3)), torch.full((2,), 1.5)
    )
    log2 = torch.full((1, 1), math.log(2.0))
    torch.testing.assert_close(
        kl_to_standard_normal(torch.zeros(1, 1), log2), torch.tensor([0.5 * (1 - math.log(2.0))])
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"reduction": "median"},
        {"clamp_target": "last"},
        {"clamp_stage": "decoder"},
        {"invariance_weight": -1.0},
        {"contrast_weight": -1.0},
        {"contrast_temperature": 0.0},
        {"likelihood": "poisson"},
    ],
)
def test_bad_objective_config_is_a_user_error(kwargs):
    with pytest.raises(ConfigError, match="model."):
        DCIGNObjective(**kwargs)


def line_up_by_hand(values, active, temperature):
    """The contrastive term written out image by image, with plain floats."""
    groups, size, dim = values.shape
    images = [(g, s) for g in range(groups) for s in range(size)]
    out = []
    for g, s in images:
        held = [d for d in range(dim) if not active[g, d]]
        if not held:  # nothing to rank this image on
            out.append(0.0)
            continue

        def cosine(a, b, held=held):
            dot = sum(float(values[a][d] * values[b][d]) for d in held)
            norm_a = math.sqrt(sum(float(values[a][d]) ** 2 for d in held))
            norm_b = math.sqrt(sum(float(values[b][d]) ** 2 for d in held))
            return dot / (norm_a * norm_b)

        others = [image for image in images if image != (g, s)]
        denominator = sum(math.exp(cosine((g, s), o) / temperature) for o in others)
        positives = [o for o in others if o[0] == g]
        shares = [math.exp(cosine((g, s), p) / temperature) / denominator for p in positives]
        terms = [-math.log(share) for share in shares]
        out.append(sum(terms) / len(positives))
    return torch.tensor(out, dtype=torch.float64).view(groups, size)


def line_up_batch():
    """The hand batch's groups and masks, with codes that no held latent leaves all zero."""
    _, _, active, _ = hand_batch()
    values = torch.randn(G, S, D, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    return values, active


def test_line_up_term_in_closed_form():
    """Two groups of two, each group's codes equal and orthogonal to the other's: every image
    has one positive at cosine 1 and two negatives at cosine 0, so its term is
    log(exp(1 / t) + 2) - 1 / t."""
    values = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]])
    held_everywhere = torch.zeros(2, 2, dtype=torch.bool)
    for temperature in (1.0, 0.5):
        expected = math.log(math.exp(1 / temperature) + 2) - 1 / temperature
        torch.testing.assert_close(
            held_contrast(values, held_everywhere, temperature), torch.full((2, 2), expected)
        )


def test_line_up_term_reads_each_group_s_held_latents_only():
    values, active = line_up_batch()
    torch.testing.assert_close(
        held_contrast(values, active, 0.2), line_up_by_hand(values, active, 0.2)
    )
    # What a group's own factor does (its active latents) cannot change its images' terms.
    moved = values.clone()
    moved[0, :, 0] = torch.tensor([40.0, -7.0, 3.0], dtype=moved.dtype)
    torch.testing.assert_close(
        held_contrast(moved, active, 0.2)[0], held_contrast(values, active, 0.2)[0]
    )


def test_line_up_term_is_float32_under_bf16_autocast():
    values, active = line_up_batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        term = held_contrast(values.float(), active, 0.1)
    torch.testing.assert_close(
        term, line_up_by_hand(values, active, 0.1).float(), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_contrast_weight_adds_the_weighted_line_up_term(reduction):
    _, logvar, active, x = hand_batch()
    mu = line_up_batch()[0]
    noise = torch.zeros(G, S, D, dtype=torch.float64)
    off = DCIGNObjective(reduction=reduction, contrast_weight=0.0).loss(
        encoder_of(mu, logvar), LinearDecoder(), x, active, noise
    )
    on = DCIGNObjective(reduction=reduction, contrast_weight=3.0, contrast_temperature=0.2).loss(
        encoder_of(mu, logvar), LinearDecoder(), x, active, noise
    )
    by_hand = line_up_by_hand(mu.detach(), active, 0.2)
    by_hand = by_hand.sum() if reduction == "sum" else by_hand.mean()
    assert off.contrast is None
    torch.testing.assert_close(on.contrast.detach(), by_hand)
    torch.testing.assert_close((on.total - off.total).detach(), 3.0 * by_hand)


def test_line_up_gradient_pulls_a_group_together_and_groups_apart():
    """One small step down the term's gradient raises each image's cosine with its own group
    and lowers it with the other group's images."""
    gen = torch.Generator().manual_seed(3)
    values = torch.randn(3, 2, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    held_everywhere = torch.zeros(3, 5, dtype=torch.bool)
    held_contrast(values, held_everywhere, 0.5).sum().backward()
    stepped = (values - 0.01 * values.grad).detach()

    def within_and_across(v):
        unit = torch.nn.functional.normalize(v.flatten(0, 1), dim=-1)
        cos = unit @ unit.T
        group = torch.arange(3).repeat_interleave(2)
        same = (group[:, None] == group[None, :]) & ~torch.eye(6, dtype=torch.bool)
        return cos[same].mean(), cos[group[:, None] != group[None, :]].mean()

    within_before, across_before = within_and_across(values.detach())
    within_after, across_after = within_and_across(stepped)
    assert within_after > within_before
    assert across_after < across_before


def test_the_line_up_compares_only_the_named_groups_latents():
    """contrast_latents=intrinsic: the group that holds the identity (group 0, which varies
    azimuth) is ranked on latents 1-3 only; the group that varies the identity holds none of
    them, so its images score 0."""
    values, active = line_up_batch()
    objective = DCIGNObjective(contrast_latents="intrinsic").for_layout(HAND_LAYOUT)
    assert objective.contrast_mask == (False, True, True, True)
    term = held_contrast(values, active, 0.2, torch.tensor(objective.contrast_mask))
    not_compared = torch.tensor([True, False, False, False])
    by_hand = line_up_by_hand(values, active | not_compared, 0.2)
    torch.testing.assert_close(term[0], by_hand[0])
    torch.testing.assert_close(term[1], torch.zeros(S, dtype=term.dtype))


def test_the_objective_uses_the_resolved_line_up_latents():
    _, logvar, active, x = hand_batch()
    mu = line_up_batch()[0]
    noise = torch.zeros(G, S, D, dtype=torch.float64)
    options = {"contrast_weight": 2.0, "contrast_temperature": 0.2, "reduction": "sum"}
    named = DCIGNObjective(**options, contrast_latents="intrinsic").for_layout(HAND_LAYOUT)
    every = DCIGNObjective(**options).for_layout(HAND_LAYOUT)
    assert every.contrast_mask is None
    parts = named.loss(encoder_of(mu, logvar), LinearDecoder(), x, active, noise)
    by_hand = line_up_by_hand(mu, active | torch.tensor([True, False, False, False]), 0.2)
    torch.testing.assert_close(parts.contrast.detach(), by_hand[0].sum())
    parts = every.loss(encoder_of(mu, logvar), LinearDecoder(), x, active, noise)
    torch.testing.assert_close(parts.contrast.detach(), line_up_by_hand(mu, active, 0.2).sum())


@pytest.mark.parametrize("names", ["identity", ["azimuth", "pose"]])
def test_line_up_latents_must_be_groups_of_the_layout(names):
    with pytest.raises(ConfigError, match="contrast_latents names"):
        DCIGNObjective(contrast_latents=names).for_layout(HAND_LAYOUT)
