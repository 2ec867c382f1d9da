"""Group-level posteriors of the weakly supervised VAEs that followed DC-IGN.

They use the same supervision as DC-IGN - a group of images that share everything but one
factor - but instead of clamping the shared latents to a detached value and pulling them
together with an extra gradient, they replace each image's posterior over the shared latents
by one posterior inferred from the whole group (or a pair), through which the reconstruction
gradient flows to every image of the group:

* ML-VAE (Bouchacourt et al. 2018): the product of the images' Gaussians (precisions add), the
  evidence of all images accumulated;
* GVAE (Hosoya 2019): the average of the images' means and of their variances;
* Ada-GVAE (Locatello et al. 2020): pairs (s, s + 1) of a group, averaged as GVAE over the
  latents the pair appears to share, found without being told which factor varies: the
  latents whose per-latent KL between the two posteriors is below the midpoint of its largest
  and smallest value.

Every function maps posteriors ``mu, logvar [G, S, D]`` (and a ``shared [G, 1, D]`` mask where
the method is told which latents the group shares) to the posteriors the decoder samples from.
"""

from __future__ import annotations

import torch


def product_of_gaussians(
    mu: torch.Tensor, logvar: torch.Tensor, shared: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """ML-VAE: on ``shared`` latents, every image gets the product of its group's Gaussians."""
    precision = torch.exp(-logvar)
    group_precision = precision.sum(dim=1, keepdim=True)
    group_mu = (precision * mu).sum(dim=1, keepdim=True) / group_precision
    group_logvar = -torch.log(group_precision)
    return _on_shared(mu, logvar, group_mu, group_logvar, shared)


def average_of_gaussians(
    mu: torch.Tensor, logvar: torch.Tensor, shared: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """GVAE: on ``shared`` latents, every image gets the group's mean mean and mean variance."""
    group_mu = mu.mean(dim=1, keepdim=True)
    group_logvar = torch.logsumexp(logvar, dim=1, keepdim=True) - torch.log(
        torch.tensor(float(mu.shape[1]), dtype=mu.dtype, device=mu.device)
    )
    return _on_shared(mu, logvar, group_mu, group_logvar, shared)


def adaptive_pair_average(
    mu: torch.Tensor, logvar: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ada-GVAE on the pairs (s, (s + 1) mod S) of each group; returns ``[G, S, D]`` posteriors.

    For image s and its partner p the latent-wise divergence is ``KL(q_s,j || q_p,j)``; latents
    below ``(max + min) / 2`` of it count as shared and take the pair's averaged posterior.
    """
    partner_mu, partner_logvar = mu.roll(-1, dims=1), logvar.roll(-1, dims=1)
    divergence = 0.5 * (
        (logvar - partner_logvar).exp()
        + (mu - partner_mu).square() * torch.exp(-partner_logvar)
        - 1.0
        + partner_logvar
        - logvar
    )
    largest = divergence.amax(dim=-1, keepdim=True)
    threshold = 0.5 * (largest + divergence.amin(dim=-1, keepdim=True))
    shared = (divergence < threshold).detach()
    pair_mu = 0.5 * (mu + partner_mu)
    pair_logvar = torch.logaddexp(logvar, partner_logvar) - torch.log(
        torch.tensor(2.0, dtype=mu.dtype, device=mu.device)
    )
    return _on_shared(mu, logvar, pair_mu, pair_logvar, shared)


def _on_shared(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    group_mu: torch.Tensor,
    group_logvar: torch.Tensor,
    shared: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    return (
        torch.where(shared, group_mu.expand_as(mu), mu),
        torch.where(shared, group_logvar.expand_as(logvar), logvar),
    )
