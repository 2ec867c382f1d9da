"""The partner and posterior-mean readings of clamping, and the group posteriors of ML-VAE, GVAE
and Ada-GVAE, checked against values computed by hand on the batch of ``test_objective``."""

import math

import pytest
import torch
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from dcign.errors import ConfigError
from dcign.model.group_posteriors import (
    adaptive_pair_average,
    average_of_gaussians,
    product_of_gaussians,
)
from dcign.model.objectives.dcign import DCIGNObjective
from dcign.model.objectives.group import GVAEObjective, MLVAEObjective
from dcign.run.config_check import check_sections
from tests.test_model import tiny_module
from tests.test_objective import PIXELS, D, G, LinearDecoder, S, encoder_of, hand_batch

ZEROS = torch.zeros(G, S, D, dtype=torch.float64)


def linear_decoder_gradient(decoder: LinearDecoder, z_dec: torch.Tensor, x: torch.Tensor):
    """d(sum of Bernoulli NLL)/d(decoder input), ``[G, S, D]``."""
    probs = torch.sigmoid(z_dec.reshape(-1, D) @ decoder.weight.T + decoder.bias)
    return ((probs - x.reshape(-1, PIXELS)) @ decoder.weight).view(G, S, D)


def test_partner_clamping_decodes_each_image_with_the_next_images_held_latents():
    mu, logvar, active, x = hand_batch()
    decoder = LinearDecoder()
    config = DCIGNObjective(clamp_target="partner")
    config.loss(encoder_of(mu, logvar), decoder, x, active, ZEROS)
    seen = decoder.inputs[0].view(G, S, D)
    z = mu.detach()
    # Group 0 trains latent 0: image s keeps its own latent 0 and takes latents 1..3 of s + 1.
    expected0 = torch.cat([z[0, :, :1], z[0, [1, 2, 0], 1:]], dim=1)
    # Group 1 trains latents 1..3: image s takes latent 0 of s + 1.
    expected1 = torch.cat([z[1, [1, 2, 0], :1], z[1, :, 1:]], dim=1)
    torch.testing.assert_close(seen[0], expected0)
    torch.testing.assert_close(seen[1], expected1)


def test_decoder_gradient_reaches_the_partner_when_asked():
    """clamp_gradient=decoder: image s's reconstruction trains the held latents of s + 1."""
    mu, logvar, active, x = hand_batch()
    decoder = LinearDecoder()
    config = DCIGNObjective(
        clamp_target="partner",
        clamp_gradient="decoder",
        invariance_weight=0.0,
        contrast_weight=0.0,
        beta=0.0,
        reduction="sum",
    )
    config.loss(encoder_of(mu, logvar), decoder, x, active, ZEROS).total.backward()
    z = mu.detach()
    partner = z.roll(-1, dims=1)
    z_dec = torch.where(active[:, None, :], z, partner)
    grad = linear_decoder_gradient(decoder, z_dec, x)
    # Active latents: their own image's gradient. Held latents of image s: the gradient of the
    # image that borrowed them, s - 1.
    expected = torch.where(active[:, None, :], grad, grad.roll(1, dims=1))
    torch.testing.assert_close(mu.grad, expected)


def test_posterior_mean_clamping_holds_the_mean_of_mu_without_noise():
    mu, logvar, active, x = hand_batch()
    decoder = LinearDecoder()
    noise = torch.ones(G, S, D, dtype=torch.float64)  # sigma = 1: a sample is mu + 1
    config = DCIGNObjective(clamp_target="mean", clamp_stage="posterior_mean")
    config.loss(encoder_of(mu, logvar), decoder, x, active, noise)
    seen = decoder.inputs[0].view(G, S, D)
    z = mu.detach()
    expected = torch.where(active[:, None, :], z + 1.0, z.mean(dim=1, keepdim=True))
    torch.testing.assert_close(seen, expected)


def test_product_of_gaussians_by_hand():
    # Two images, one latent shared: precisions 1 and 3 -> 4; mean (1*2 + 3*6) / 4 = 5.
    mu = torch.tensor([[[2.0, 7.0], [6.0, -1.0]]])
    logvar = torch.log(torch.tensor([[[1.0, 2.0], [1.0 / 3.0, 5.0]]]))
    shared = torch.tensor([[[True, False]]])
    out_mu, out_logvar = product_of_gaussians(mu, logvar, shared)
    torch.testing.assert_close(out_mu[0, :, 0], torch.tensor([5.0, 5.0]))
    torch.testing.assert_close(out_logvar[0, :, 0].exp(), torch.tensor([0.25, 0.25]))
    torch.testing.assert_close(out_mu[..., 1], mu[..., 1])
    torch.testing.assert_close(out_logvar[..., 1], logvar[..., 1])


def test_average_of_gaussians_by_hand():
    mu = torch.tensor([[[2.0, 7.0], [6.0, -1.0]]])
    logvar = torch.log(torch.tensor([[[1.0, 2.0], [3.0, 5.0]]]))
    out_mu, out_logvar = average_of_gaussians(mu, logvar, torch.tensor([[[True, False]]]))
    torch.testing.assert_close(out_mu[0, :, 0], torch.tensor([4.0, 4.0]))
    torch.testing.assert_close(out_logvar[0, :, 0].exp(), torch.tensor([2.0, 2.0]))
    torch.testing.assert_close(out_mu[..., 1], mu[..., 1])


def test_adaptive_pair_average_shares_the_latents_a_pair_agrees_on():
    # Latent 1 differs by 4 between the two images (KL 8 either way); latents 0 and 2 agree.
    # Threshold (8 + 0) / 2 = 4: latents 0 and 2 are averaged, latent 1 keeps each posterior.
    mu = torch.tensor([[[1.0, -2.0, 0.5], [1.0, 2.0, 0.5]]])
    logvar = torch.zeros(1, 2, 3)
    out_mu, out_logvar = adaptive_pair_average(mu, logvar)
    torch.testing.assert_close(out_mu[0, :, 1], torch.tensor([-2.0, 2.0]))
    torch.testing.assert_close(out_mu[0, :, [0, 2]], mu[0, :, [0, 2]])
    torch.testing.assert_close(out_logvar, logvar)
    # With different means on a shared latent, both images get the pair's average.
    mu = torch.tensor([[[1.0, -2.0, 0.0], [1.2, 2.0, 0.2]]])
    out_mu, _ = adaptive_pair_average(mu, logvar)
    torch.testing.assert_close(out_mu[0, :, 0], torch.tensor([1.1, 1.1]))
    torch.testing.assert_close(out_mu[0, :, 2], torch.tensor([0.1, 0.1]))


def test_group_methods_decode_the_group_posterior_and_have_no_invariance_term():
    mu, logvar, active, x = hand_batch()
    for method, objective in (("mlvae", MLVAEObjective), ("gvae", GVAEObjective)):
        decoder = LinearDecoder()
        parts = objective().loss(encoder_of(mu, logvar), decoder, x, active, ZEROS)
        seen = decoder.inputs[0].view(G, S, D)
        # Unit variances: product and average both give the plain mean on shared latents.
        expected = torch.where(active[:, None, :], mu.detach(), mu.detach().mean(1, keepdim=True))
        torch.testing.assert_close(seen, expected)
        assert parts.invariance is None
        # KL per image of the shared latents uses the group posterior: ML-VAE's variance is 1/S.
        variance = 1.0 / S if method == "mlvae" else 1.0
        kl = 0.5 * (expected.square() + variance - 1 - math.log(variance) * ~active[:, None, :])
        kl = torch.where(active[:, None, :], 0.5 * expected.square(), kl).sum(-1)
        torch.testing.assert_close(parts.kl, kl.mean())


def test_an_option_the_chosen_objective_does_not_read_is_refused(compose_config):
    with pytest.raises(ConfigCompositionException, match="clamp_target"):
        compose_config("model/objective=mlvae", "model.objective.clamp_target=partner")
    cfg = compose_config("model/objective=mlvae", "+model.objective.clamp_target=partner")
    with pytest.raises(ConfigError, match="model.objective.clamp_target is not an option of "):
        check_sections({"model": OmegaConf.to_container(cfg.model, resolve=True)}, ["model"])


def test_adagvae_latents_are_found_as_the_baselines_are():
    module = tiny_module(objective={"_target_": "dcign.model.objectives.group.AdaGVAEObjective"})
    assert module.entangled_networks == ["dcign", "baseline"]
    assert tiny_module().entangled_networks == ["baseline"]
