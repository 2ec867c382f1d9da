"""The DC-IGN training objective and the plain SGVB objective of the entangled baseline.

DC-IGN (paper sections 3.1-3.2, docs/training.md), for a batch ``[G, S, C, H, W]`` of G
groups with active latent masks ``[G, D]``:

1. ``mu, logvar = encode(x)``; ``z = mu + exp(logvar / 2) * eps``.
2. The decoder sees ``where(active, z, target_g(z))`` (forward clamping); the target is the
   group mean (the paper's text), the group's first image (the authors' code) or each image's
   partner in the group (``clamp_target``).
3. Loss = ``-log P(x | z_clamped) + beta * KL(q(z|x) || N(0, I))``
   ``+ invariance_weight * 0.5 * sum_inactive ||z - target_g(z).detach()||^2``.

The last term's gradient on an inactive latent is exactly ``invariance_weight * (z - target)``.
With ``clamp_gradient="invariance"`` the target is detached in step 2 as well, so the
decoder's gradient never reaches inactive latents: the paper's gradient replacement written as
a loss (autograd, DDP and mixed precision need no custom backward). The shipped default,
``clamp_gradient="decoder"``, lets the decoder's gradient flow into the latents the target
was taken from (with the partner target, the novel-view edit itself), which learned every
factor over seeds where the paper's reading left elevation unlearned (docs/training.md).
Every term uses the same reduction, so their relative weight is the paper's.

The authors' released code differs in further ways offered as switches: clamping ``(mu,
logvar)`` before sampling, and computing the KL term on the clamped posterior.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from dcign.errors import ConfigError
from dcign.model.clamping import CLAMP_TARGETS, ClampTarget, clamp, invariance_penalty
from dcign.model.group_posteriors import (
    adaptive_pair_average,
    average_of_gaussians,
    product_of_gaussians,
)
from dcign.model.losses import Likelihood, kl_to_standard_normal, reconstruction_nll

Encode = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
DecodeLogits = Callable[[torch.Tensor], torch.Tensor]
Reduction = Literal["mean", "sum"]
ClampStage = Literal["sample", "posterior", "posterior_mean"]
ClampGradient = Literal["invariance", "decoder"]
Method = Literal["dcign", "mlvae", "gvae", "adagvae"]
METHODS: tuple[str, ...] = ("dcign", "mlvae", "gvae", "adagvae")


@dataclass(frozen=True)
class ObjectiveConfig:
    """Every knob of the objective; defaults are the paper's text.

    ``method`` picks how a group's shared latents are treated: ``dcign`` (clamping and
    invariance targeting, with the ``clamp_*`` and ``kl_on_clamped`` readings) or the group
    posteriors of :mod:`dcign.model.group_posteriors` (``mlvae``, ``gvae``, ``adagvae``), which have
    no invariance term and ignore the DC-IGN-only knobs.
    """

    method: Method = "dcign"
    invariance_weight: float = 0.01
    beta: float = 1.0
    likelihood: Likelihood = "bernoulli"
    gaussian_sigma: float = 0.1
    reduction: Reduction = "mean"
    clamp_target: ClampTarget = "mean"
    clamp_stage: ClampStage = "sample"
    clamp_gradient: ClampGradient = "invariance"
    kl_on_clamped: bool = False

    def __post_init__(self) -> None:
        checks = {
            "method": (self.method, METHODS),
            "reduction": (self.reduction, ("mean", "sum")),
            "clamp_target": (self.clamp_target, CLAMP_TARGETS),
            "clamp_stage": (self.clamp_stage, ("sample", "posterior", "posterior_mean")),
            "clamp_gradient": (self.clamp_gradient, ("invariance", "decoder")),
            "likelihood": (self.likelihood, ("bernoulli", "gaussian")),
        }
        for name, (value, allowed) in checks.items():
            if value not in allowed:
                raise ConfigError(
                    f"model.objective.{name} must be one of {allowed}, got {value!r}."
                )
        if self.invariance_weight < 0 or self.beta < 0 or self.gaussian_sigma <= 0:
            raise ConfigError(
                "model.objective.invariance_weight and .beta must be >= 0 and .gaussian_sigma "
                f"> 0, got {self.invariance_weight}, {self.beta}, {self.gaussian_sigma}."
            )


@dataclass
class LossParts:
    """Named parts of a loss (all scalars except ``per_group``), reduced as configured."""

    total: torch.Tensor
    reconstruction: torch.Tensor
    kl: torch.Tensor
    invariance: torch.Tensor | None  # None: the objective has no invariance term
    per_group: torch.Tensor  # [G] mean per-image negative ELBO of each group, for logging
    codes: torch.Tensor  # [G, S, D] each image's posterior mean (detached), for evaluation


def _reduce(per_image: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    return per_image.mean() if reduction == "mean" else per_image.sum()


def _sample(mu: torch.Tensor, logvar: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
    eps = torch.randn_like(mu) if noise is None else noise
    return mu + torch.exp(0.5 * logvar) * eps


def _encode_groups(encode: Encode, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    groups, size = x.shape[:2]
    mu, logvar = encode(x.flatten(0, 1))
    return mu.view(groups, size, -1), logvar.view(groups, size, -1)


def _decode_nll(
    decode_logits: DecodeLogits, z: torch.Tensor, x: torch.Tensor, config: ObjectiveConfig
) -> torch.Tensor:
    logits = decode_logits(z.flatten(0, 1)).view_as(x)
    return reconstruction_nll(logits, x, config.likelihood, config.gaussian_sigma)


def dcign_objective(
    encode: Encode,
    decode_logits: DecodeLogits,
    x: torch.Tensor,
    active: torch.Tensor,
    config: ObjectiveConfig,
    noise: torch.Tensor | None = None,
) -> LossParts:
    """DC-IGN loss for ``x [G, S, C, H, W]`` with active masks ``active [G, D]``.

    ``noise`` (shape ``[G, S, D]``) replaces the reparameterisation noise, for tests and for a
    deterministic evaluation (zeros = decode the posterior mean).
    """
    mu, logvar = _encode_groups(encode, x)
    weight = config.invariance_weight
    target, detach = config.clamp_target, config.clamp_gradient == "invariance"
    kl_mu, kl_logvar = mu, logvar
    if config.clamp_stage == "posterior":
        mu_c = clamp(mu, active, target, detach)
        logvar_c = clamp(logvar, active, target, detach)
        z_decoder = _sample(mu_c, logvar_c, noise)
        invariance = invariance_penalty(mu, active, target) + invariance_penalty(
            logvar, active, target
        )
        if config.kl_on_clamped:
            kl_mu, kl_logvar = mu_c, logvar_c
    else:
        z = _sample(mu, logvar, noise)
        # posterior_mean: the inactive latents are the target of the posterior means, without
        # the sampling noise that a mean of samples keeps (variance sigma^2 / S).
        held = mu if config.clamp_stage == "posterior_mean" else z
        z_decoder = torch.where(active[:, None, :], z, clamp(held, active, target, detach))
        invariance = invariance_penalty(held, active, target)
        if config.kl_on_clamped:
            kl_mu = clamp(mu, active, target, detach)
            kl_logvar = clamp(logvar, active, target, detach)
    nll = _decode_nll(decode_logits, z_decoder, x, config)
    kl = kl_to_standard_normal(kl_mu, kl_logvar)
    elbo_terms = nll + config.beta * kl
    total = _reduce(elbo_terms + weight * invariance, config.reduction)
    return LossParts(
        total=total,
        reconstruction=_reduce(nll, config.reduction),
        kl=_reduce(kl, config.reduction),
        invariance=_reduce(invariance, config.reduction),
        per_group=elbo_terms.detach().mean(dim=1),
        codes=mu.detach(),
    )


def grouped_objective(
    encode: Encode,
    decode_logits: DecodeLogits,
    x: torch.Tensor,
    active: torch.Tensor,
    config: ObjectiveConfig,
    noise: torch.Tensor | None = None,
) -> LossParts:
    """The configured method's loss for grouped ``x [G, S, C, H, W]``, ``active [G, D]``."""
    if config.method == "dcign":
        return dcign_objective(encode, decode_logits, x, active, config, noise)
    mu, logvar = _encode_groups(encode, x)
    if config.method == "adagvae":
        shared_mu, shared_logvar = adaptive_pair_average(mu, logvar)
    else:
        aggregate = product_of_gaussians if config.method == "mlvae" else average_of_gaussians
        shared_mu, shared_logvar = aggregate(mu, logvar, ~active[:, None, :])
    parts = _sgvb_parts(decode_logits, x, shared_mu, shared_logvar, config, noise)
    parts.codes = mu.detach()
    return parts


def sgvb_objective(
    encode: Encode,
    decode_logits: DecodeLogits,
    x: torch.Tensor,
    config: ObjectiveConfig,
    noise: torch.Tensor | None = None,
) -> LossParts:
    """Plain SGVB (no clamping, no invariance term): the entangled baseline of paper 4.1.1."""
    mu, logvar = _encode_groups(encode, x)
    return _sgvb_parts(decode_logits, x, mu, logvar, config, noise)


def _sgvb_parts(
    decode_logits: DecodeLogits,
    x: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    config: ObjectiveConfig,
    noise: torch.Tensor | None,
) -> LossParts:
    """The ELBO of ``x`` under posteriors ``mu, logvar [G, S, D]`` (no invariance term)."""
    z = _sample(mu, logvar, noise)
    nll = _decode_nll(decode_logits, z, x, config)
    kl = kl_to_standard_normal(mu, logvar)
    elbo_terms = nll + config.beta * kl
    return LossParts(
        total=_reduce(elbo_terms, config.reduction),
        reconstruction=_reduce(nll, config.reduction),
        kl=_reduce(kl, config.reduction),
        invariance=None,
        per_group=elbo_terms.detach().mean(dim=1),
        codes=mu.detach(),
    )
