"""What every objective shares: the options of the ELBO, its terms, and plain SGVB.

An objective maps a batch ``x [G, S, C, H, W]`` of G groups with active latent masks
``active [G, D]`` to :class:`LossParts`. Each one is a frozen dataclass whose fields are exactly
the options it reads, so its config node (``conf/model/objective/<name>.yaml``) can hold nothing
else: the config checker (:mod:`dcign.run.config_check`) names any other key. The options of
the ELBO itself (``beta``, ``likelihood``, ``gaussian_sigma``, ``reduction``, ``detail_weight``)
live here, on the base; an objective adds only its own. The defaults are the shipped ones
(``conf/``), so an objective built in Python trains what ``python train.py`` does.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal

import torch

from dcign.errors import ConfigError
from dcign.model.layout import LatentLayout
from dcign.model.losses import Likelihood, detail_error, kl_per_latent, reconstruction_nll

Encode = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
DecodeLogits = Callable[[torch.Tensor], torch.Tensor]
Reduction = Literal["mean", "sum"]


@dataclass
class LossParts:
    """Named parts of a loss (all scalars except ``per_group``), reduced as configured."""

    total: torch.Tensor
    reconstruction: torch.Tensor
    kl: torch.Tensor
    invariance: torch.Tensor | None  # None: the objective has no invariance term
    per_group: torch.Tensor  # [G] mean per-image negative ELBO of each group, for logging
    codes: torch.Tensor  # [G, S, D] each image's posterior mean (detached), for evaluation
    # a told volume decoder's angle error (dcign.model.pose_training)
    pose: torch.Tensor | None = None
    # DC-IGN's line-up term on the held latents, when it is on (dcign.model.contrast)
    contrast: torch.Tensor | None = None
    # the detail term, unweighted, when ``detail_weight`` turns it on (dcign.model.losses)
    detail: torch.Tensor | None = None


def check_choices(choices: dict[str, tuple[Any, tuple[Any, ...]]]) -> None:
    """A ConfigError naming the first ``model.objective.<option>`` outside its choices."""
    for name, (value, allowed) in choices.items():
        if value not in allowed:
            raise ConfigError(f"model.objective.{name} must be one of {allowed}, got {value!r}.")


def check_group_names(
    option: str, names: Iterable[str], layout: LatentLayout, example: str
) -> None:
    """A ConfigError when ``model.objective.<option>`` names a group that ``layout`` lacks."""
    unknown = sorted(set(names) - set(layout.names))
    if unknown:
        raise ConfigError(
            f"model.objective.{option} names {unknown}, which are not latent groups of this "
            f"model; its groups are {layout.names}. Example: {example}"
        )


@dataclass(frozen=True)
class Objective(ABC):
    """The ELBO's options, shared by every objective.

    ``beta`` weighs the KL term (1 = plain SGVB, the paper; 0.25 reconstructs more of each image
    and re-rendered the factors better over seeds, docs/results.md); ``group_beta`` gives named
    latent groups a KL weight of their own (e.g. less pressure on the identity's latents than
    on the pose's), which :meth:`for_layout` turns into one weight per latent; ``reduction``
    averages (``mean``) or sums (``sum``, the authors' code) every term over the images, so the
    terms keep the same relative weight either way. ``detail_weight`` adds the summed error of
    the images' Laplacian pyramid bands to the reconstruction term (0: off), for a decoder that
    the pixel likelihood lets leave out small, faint features.
    """

    beta: float = 0.25
    group_beta: Mapping[str, float] | None = None
    likelihood: Likelihood = "bernoulli"
    gaussian_sigma: float = 0.1
    reduction: Reduction = "mean"
    detail_weight: float = 0.0
    # The KL weight of each latent, set by for_layout when group_beta names groups.
    latent_beta: tuple[float, ...] | None = field(default=None, init=False, compare=False)

    # Whether the objective is never told which latents a group shares: its latents of a
    # factor are then found as the entangled baseline's are (largest variance over the groups
    # varying that factor), not read from the layout.
    entangled: ClassVar[bool] = False

    def __post_init__(self) -> None:
        check_choices(
            {
                "reduction": (self.reduction, ("mean", "sum")),
                "likelihood": (self.likelihood, ("bernoulli", "gaussian")),
            }
        )
        if self.beta < 0 or self.gaussian_sigma <= 0:
            raise ConfigError(
                "model.objective.beta must be >= 0 and .gaussian_sigma > 0, got "
                f"{self.beta}, {self.gaussian_sigma}."
            )
        weight = self.detail_weight
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not weight >= 0:
            raise ConfigError(
                f"model.objective.detail_weight must be a number >= 0, got {weight!r}. "
                "Example: model.objective.detail_weight=1 (0 turns the detail term off)."
            )
        for name, weight in (self.group_beta or {}).items():
            if isinstance(weight, bool) or not isinstance(weight, int | float) or weight < 0:
                raise ConfigError(
                    f"model.objective.group_beta.{name} must be a number >= 0, got {weight!r}. "
                    "Example: model.objective.group_beta='{intrinsic: 0.02}'"
                )

    def for_layout(self, layout: LatentLayout) -> Objective:
        """This objective with ``group_beta`` resolved to one KL weight per latent of ``layout``.

        Resolved once, when the model knows its layout, so that a step only multiplies.
        """
        if not self.group_beta:
            return self
        if self.entangled:
            raise ConfigError(
                "model.objective.group_beta needs named latent groups, but this objective infers "
                "which latents a pair shares and names none. Use model.objective.beta, or an "
                "objective with a layout (dcign, mlvae, gvae)."
            )
        check_group_names(
            "group_beta",
            self.group_beta,
            layout,
            "model.objective.group_beta='{intrinsic: 0.02}', or "
            "model.objective.group_beta=null for one beta on every latent.",
        )
        weights = [float(self.beta)] * layout.latent_dim
        for name, weight in self.group_beta.items():
            for index in layout.indices(name):
                weights[index] = float(weight)
        resolved = copy.copy(self)
        object.__setattr__(resolved, "latent_beta", tuple(weights))
        return resolved

    def kl_terms(self, mu: torch.Tensor, logvar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The KL per image, plain (for the logs) and as the ELBO weighs it (``beta * KL``, or
        each latent's KL times its group's weight), from one per-latent KL."""
        per_latent = kl_per_latent(mu, logvar)
        kl = per_latent.sum(dim=-1)
        if self.latent_beta is None:
            return kl, self.beta * kl
        weights = torch.tensor(self.latent_beta, device=mu.device, dtype=per_latent.dtype)
        return kl, (per_latent * weights).sum(dim=-1)

    @abstractmethod
    def loss(
        self,
        encode: Encode,
        decode_logits: DecodeLogits,
        x: torch.Tensor,
        active: torch.Tensor,
        noise: torch.Tensor | None = None,
    ) -> LossParts:
        """The loss of grouped ``x [G, S, C, H, W]`` whose groups train ``active [G, D]``.

        ``noise`` (shape ``[G, S, D]``) replaces the reparameterisation noise, for tests and for
        a deterministic evaluation (zeros = decode the posterior mean).
        """

    def reduce(self, per_image: torch.Tensor) -> torch.Tensor:
        return per_image.mean() if self.reduction == "mean" else per_image.sum()

    def reconstruction(
        self, decode_logits: DecodeLogits, z: torch.Tensor, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``-log P(x | z)`` per image, ``[G, S]``, of codes ``z [G, S, D]``, and the images'
        detail error (``None`` when ``detail_weight`` is 0)."""
        logits = decode_logits(z.flatten(0, 1)).view_as(x)
        nll = reconstruction_nll(logits, x, self.likelihood, self.gaussian_sigma)
        detail = detail_error(logits, x) if self.detail_weight else None
        return nll, detail

    def reconstruction_term(self, nll: torch.Tensor, detail: torch.Tensor | None) -> torch.Tensor:
        """What the loss takes for the reconstruction: the NLL plus the weighted detail."""
        return nll if detail is None else nll + self.detail_weight * detail

    def reduce_optional(self, per_image: torch.Tensor | None) -> torch.Tensor | None:
        """:meth:`reduce` of a term that may be off (None stays None, for LossParts)."""
        return None if per_image is None else self.reduce(per_image)

    def elbo(
        self,
        decode_logits: DecodeLogits,
        x: torch.Tensor,
        mu: torch.Tensor,
        logvar: torch.Tensor,
        noise: torch.Tensor | None,
    ) -> LossParts:
        """The negative ELBO of ``x`` under posteriors ``mu, logvar [G, S, D]``."""
        nll, detail = self.reconstruction(decode_logits, sample(mu, logvar, noise), x)
        kl, weighted_kl = self.kl_terms(mu, logvar)
        elbo_terms = self.reconstruction_term(nll, detail) + weighted_kl
        return LossParts(
            total=self.reduce(elbo_terms),
            reconstruction=self.reduce(nll),
            kl=self.reduce(kl),
            invariance=None,
            per_group=elbo_terms.detach().mean(dim=1),
            codes=mu.detach(),
            detail=self.reduce_optional(detail),
        )


@dataclass(frozen=True)
class SGVBObjective(Objective):
    """Plain SGVB, each image on its own (no groups): the entangled baseline of paper 4.1.1."""

    entangled: ClassVar[bool] = True

    @classmethod
    def beside(cls, objective: Objective, beta: float, detail_weight: float = 0.0) -> SGVBObjective:
        """The baseline trained beside ``objective``: its ELBO options, with its own KL weight
        and detail weight (what is best for a grouped objective need not be for an
        unsupervised VAE)."""
        options = [item.name for item in fields(Objective) if item.init]
        shared = {name: getattr(objective, name) for name in options}
        return cls(**{**shared, "beta": beta, "group_beta": None, "detail_weight": detail_weight})

    def loss(
        self,
        encode: Encode,
        decode_logits: DecodeLogits,
        x: torch.Tensor,
        active: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> LossParts:
        return self.elbo(decode_logits, x, *encode_groups(encode, x), noise)


def sample(mu: torch.Tensor, logvar: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
    """A reparameterised draw ``mu + sigma * eps`` (``eps``: ``noise``, or fresh)."""
    eps = torch.randn_like(mu) if noise is None else noise
    return mu + torch.exp(0.5 * logvar) * eps


def encode_groups(encode: Encode, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Posteriors ``mu, logvar [G, S, D]`` of the images ``x [G, S, C, H, W]``."""
    groups, size = x.shape[:2]
    mu, logvar = encode(x.flatten(0, 1))
    return mu.view(groups, size, -1), logvar.view(groups, size, -1)
