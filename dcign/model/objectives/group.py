"""The weakly supervised VAEs that followed DC-IGN, on the same groups: ML-VAE, GVAE, Ada-GVAE.

Each decodes every image from a posterior inferred from its group (or a pair,
:mod:`dcign.model.group_posteriors`), through which the reconstruction gradient reaches every
image of the group; none has an invariance term, so none has DC-IGN's clamping options.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch

from dcign.model.group_posteriors import (
    adaptive_pair_average,
    average_of_gaussians,
    product_of_gaussians,
)
from dcign.model.objectives.base import DecodeLogits, Encode, LossParts, Objective, encode_groups


@dataclass(frozen=True)
class GroupPosteriorObjective(Objective):
    """The ELBO of each image under the posterior its group gives it."""

    @abstractmethod
    def shared_posteriors(
        self, mu: torch.Tensor, logvar: torch.Tensor, active: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The posteriors ``[G, S, D]`` the decoder samples from, given the images' own."""

    def loss(
        self,
        encode: Encode,
        decode_logits: DecodeLogits,
        x: torch.Tensor,
        active: torch.Tensor,
        noise: torch.Tensor | None = None,
    ) -> LossParts:
        mu, logvar = encode_groups(encode, x)
        parts = self.elbo(decode_logits, x, *self.shared_posteriors(mu, logvar, active), noise)
        parts.codes = mu.detach()
        return parts


@dataclass(frozen=True)
class MLVAEObjective(GroupPosteriorObjective):
    """ML-VAE (Bouchacourt et al. 2018): the shared latents take the product of the group's
    posteriors."""

    def shared_posteriors(
        self, mu: torch.Tensor, logvar: torch.Tensor, active: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return product_of_gaussians(mu, logvar, ~active[:, None, :])


@dataclass(frozen=True)
class GVAEObjective(GroupPosteriorObjective):
    """GVAE (Hosoya 2019): the shared latents take the average of the group's posteriors."""

    def shared_posteriors(
        self, mu: torch.Tensor, logvar: torch.Tensor, active: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return average_of_gaussians(mu, logvar, ~active[:, None, :])


@dataclass(frozen=True)
class AdaGVAEObjective(GroupPosteriorObjective):
    """Ada-GVAE (Locatello et al. 2020): pairs of the group, their shared latents inferred."""

    entangled: ClassVar[bool] = True

    def shared_posteriors(
        self, mu: torch.Tensor, logvar: torch.Tensor, active: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return adaptive_pair_average(mu, logvar)
