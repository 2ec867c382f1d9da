"""Training a volume decoder told the pose, as the GQN is told its viewpoints.

Weakly supervised, DC-IGN learns its angles from grouped images alone, and nothing fixes their
scale: a volume turned by a fifth of the true angle can still be drawn into each view by the 2D
network. Told the pose, the volume is turned by the data's own factor values (radians) during
training, so the rotation is metric by construction and the encoder has only the identity and
light left to give. The encoder's pose latents are trained to read the angle (a squared error
against the truth), so that an image can still be encoded, edited and re-rendered without
labels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from dcign.batch import GroupedBatch
from dcign.errors import ConfigError
from dcign.model.networks import InverseGraphicsNet
from dcign.model.objectives.base import LossParts, Objective
from dcign.model.volume import LatentRoles

POSE_SOURCES = ("learnt", "told")


@dataclass(frozen=True)
class PoseTraining:
    """Where a volume decoder's angles come from in training (``model.pose``).

    ``source``: ``learnt`` (the encoder's pose latents, no labels: DC-IGN's weak supervision)
    or ``told`` (the data's factor values). ``weight`` scales the told encoder's squared angle
    error, summed over the pose latents and reduced over images as the objective's terms are.
    """

    source: str = "learnt"
    weight: float = 10.0

    def __post_init__(self) -> None:
        if self.source not in POSE_SOURCES:
            raise ConfigError(
                f"model.pose.source must be one of {list(POSE_SOURCES)}, got {self.source!r}."
            )
        if self.weight < 0:
            raise ConfigError(f"model.pose.weight must be >= 0, got {self.weight}.")


class ToldPose:
    """A volume DC-IGN's loss with the decoder's angles replaced by the batch's true ones."""

    def __init__(
        self, roles: LatentRoles, factors: Sequence[Mapping[str, Any]] | None, weight: float
    ) -> None:
        names = [str(factor["name"]) for factor in factors or ()]
        missing = [name for name in roles.pose if name not in names]
        if missing:
            raise ConfigError(
                f"model.pose.source=told turns the volume by the data's {missing} values, and "
                f"the data set's factors are {names}; use model.pose.source=learnt."
            )
        self.latents = torch.tensor(list(roles.pose.values()))
        self.columns = torch.tensor([names.index(name) for name in roles.pose])
        self.weight = weight

    def loss(
        self,
        objective: Objective,
        net: InverseGraphicsNet,
        batch: GroupedBatch,
        active: torch.Tensor,
        noise: torch.Tensor | None,
    ) -> LossParts:
        """The objective's loss with the true angles decoded, plus the encoder's angle error."""
        latents = self.latents.to(batch.factors.device)
        truth = batch.factors.flatten(0, 1)[:, self.columns.to(latents.device)]
        encoded: list[torch.Tensor] = []

        def encode(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            mu, logvar = net.encode(x)
            encoded.append(mu)
            return mu, logvar

        def decode_logits(z: torch.Tensor) -> torch.Tensor:
            return net.decode_logits(z.index_copy(1, latents, truth.to(z.dtype)))

        parts = objective.loss(encode, decode_logits, batch.images, active, noise)
        error = (encoded[0][:, latents] - truth).square().sum(dim=1).view(batch.identity.shape)
        parts.pose = objective.reduce(error)
        parts.total = parts.total + self.weight * parts.pose
        return parts
