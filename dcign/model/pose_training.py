"""Where a volume decoder's angles come from in training: learnt from the groups, or told.

Learnt (DC-IGN's weak supervision), nothing fixes the angles' scale: a volume turned by a fifth
of the true angle can still be drawn into each view by the 2D network, and it is (the learnt
angle's slope against the true one stays near 0.1-0.2, docs/volume.md). Two remedies:

- **the angles' range** (``range_weight``): no image's angle is given, only the set of values
  the factor takes in training (which the grouping of images already relies on); the batch's
  encoded angles are pulled to the mean and spread of those values, which fixes the scale up
  to its sign. The spread asked of a batch is the one that makes that scale the true one on
  average over batches, given which of the batch's groups vary the angle (see
  :class:`AngleRange`): a batch of a few groups, most of them holding the angle, spreads less
  than the values do, and asked for the values' spread it trained angles 0.8 times too short.
  A full turn has no scale to fix; its batch's angles are asked to spread round the turn as a
  batch of true angles would (their circular spread), or they stay nearly still;
- **told** (``source=told``, as the GQN is told its viewpoints): the volume turns by the data's
  own factor values (radians), so the rotation is metric by construction and the encoder has
  only the identity and light left to give. The encoder's pose latents are trained to read the
  angle (a squared error against the truth), so that an image can still be encoded, edited and
  re-rendered without labels.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dcign.batch import GroupedBatch
from dcign.errors import ConfigError
from dcign.model.contrast import across_ranks
from dcign.model.networks import InverseGraphicsNet
from dcign.model.objectives.base import DecodeLogits, LossParts, Objective
from dcign.model.volume import POSE_GROUPS, LatentRoles

log = logging.getLogger(__name__)

POSE_SOURCES = ("learnt", "told")
RANGE_SPREADS = ("batch", "values")


@dataclass(frozen=True)
class PoseTraining:
    """Where a volume decoder's angles come from in training (``model.pose``).

    ``source``: ``learnt`` (the encoder's pose latents, no labels) or ``told`` (the data's
    factor values). ``weight`` scales the told encoder's squared angle error, summed over the
    pose latents and reduced over images as the objective's terms are. ``range_weight`` (learnt
    only; 0: off) scales the squared mismatch of the batch's angles' mean and spread with the
    factor's training values': one weight, or one per pose factor (``{azimuth: 10, elevation:
    30}``; a factor left out gets none), because the mismatch is in radians and a factor of
    small range (elevation: 0.8 rad) is pulled far less, for the same share of its range, than
    a wide one. ``range_spread``: the spread asked of a batch, ``batch`` (the one that makes
    the angles' scale true on average over batches shaped as it is, :class:`AngleRange`) or
    ``values`` (the values' own standard deviation, which trains angles shortened by a small
    batch's expected spread over the values').
    """

    source: str = "learnt"
    weight: float = 10.0
    range_weight: float | Mapping[str, float] = 0.0
    range_spread: str = "batch"

    def __post_init__(self) -> None:
        if self.source not in POSE_SOURCES:
            raise ConfigError(
                f"model.pose.source must be one of {list(POSE_SOURCES)}, got {self.source!r}."
            )
        ranges = self.range_weights.values()
        if self.weight < 0 or any(not isinstance(w, int | float) or w < 0 for w in ranges):
            raise ConfigError(
                f"model.pose.weight and .range_weight must be >= 0 (range_weight: one number, "
                f"or one per pose factor, e.g. '{{azimuth: 10, elevation: 30}}'), got "
                f"{self.weight} and {self.range_weight!r}."
            )
        if self.range_spread not in RANGE_SPREADS:
            raise ConfigError(
                f"model.pose.range_spread must be one of {list(RANGE_SPREADS)}, got "
                f"{self.range_spread!r}."
            )
        if self.source == "told" and self.ranged:
            raise ConfigError(
                "model.pose.range_weight pulls learnt angles to the data's range; told angles "
                "are the data's. Set model.pose.range_weight=0 with model.pose.source=told."
            )

    @property
    def range_weights(self) -> dict[str | None, float]:
        """The range weight by pose factor name; None stands for every factor."""
        weights = self.range_weight
        return dict(weights) if isinstance(weights, Mapping) else {None: weights}

    @property
    def ranged(self) -> bool:
        """Whether any factor's angles are pulled to their range."""
        return any(self.range_weights.values())

    def range_weight_of(self, factors: Sequence[str]) -> list[float]:
        """The range weight of each of ``factors`` (the layout's pose groups, in order).

        A pose factor the layout has no group for (the chairs' elevation, held by the data)
        takes none, with a warning rather than an error, so that one preset
        (``dcign3d_learnt``) serves the faces and the chairs; any other name is a mistake."""
        weights = self.range_weights
        named = {name: w for name, w in weights.items() if name is not None and w}
        unknown = sorted(str(name) for name in named if name not in (*factors, *POSE_GROUPS))
        if unknown:
            raise ConfigError(
                f"model.pose.range_weight names {unknown}, which are not pose factors of the "
                f"latent layout; its pose factors are {list(factors)}. Set their weight to 0 "
                f"(model.pose.range_weight.{unknown[0]}=0) or give one weight for every factor "
                "(model.pose.range_weight=10)."
            )
        absent = sorted(str(name) for name in named if name not in factors)
        if absent:
            log.warning(
                "model.pose.range_weight: the latent layout has no group for %s (held by the "
                "data), so no angle of it is pulled.",
                absent,
            )
        return [float(weights.get(None, weights.get(name, 0.0))) for name in factors]


def pose_columns(
    roles: LatentRoles, factors: Sequence[Mapping[str, Any]] | None, option: str
) -> tuple[list[int], list[Mapping[str, Any]]]:
    """Each pose group's factor column and factor, by name; ``option`` names the setting that
    needs them, for the error."""
    names = [str(factor["name"]) for factor in factors or ()]
    missing = [name for name in roles.pose if name not in names]
    if missing:
        raise ConfigError(
            f"{option} reads the data's {missing} values, and the data set's factors are "
            f"{names}; use model.pose.source=learnt with model.pose.range_weight=0."
        )
    columns = [names.index(name) for name in roles.pose]
    return columns, [(factors or [])[column] for column in columns]


class EncodedPose(ABC):
    """A loss of the encoder's pose latents beside the objective's (told, or the range)."""

    def __init__(self, roles: LatentRoles, weight: float) -> None:
        self.latents = torch.tensor(list(roles.pose.values()))
        self.weight = weight

    def loss(
        self,
        objective: Objective,
        net: InverseGraphicsNet,
        batch: GroupedBatch,
        active: torch.Tensor,
        noise: torch.Tensor | None,
    ) -> LossParts:
        """The objective's loss plus ``weight`` times this pose term (``LossParts.pose``)."""
        encoded: list[torch.Tensor] = []

        def encode(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            mu, logvar = net.encode(x)
            encoded.append(mu)
            return mu, logvar

        parts = objective.loss(encode, self.decoder(net, batch), batch.images, active, noise)
        latents = self.latents.to(encoded[0].device)
        parts.pose = self.term(objective, encoded[0][:, latents], batch, active[:, latents])
        parts.total = parts.total + self.weight * parts.pose
        return parts

    def decoder(self, net: InverseGraphicsNet, batch: GroupedBatch) -> DecodeLogits:
        """What the objective decodes with: the network's own decoder."""
        return net.decode_logits

    @abstractmethod
    def term(
        self,
        objective: Objective,
        angles: torch.Tensor,
        batch: GroupedBatch,
        varying: torch.Tensor,
    ) -> torch.Tensor:
        """The pose term of the encoded ``angles [N, P]`` of ``batch``, whose groups vary the
        pose factors as ``varying [G, P]`` says (a group's active pose latents)."""


class ToldPose(EncodedPose):
    """The decoder turns by the batch's true angles; the encoder learns to read them."""

    def __init__(
        self, roles: LatentRoles, factors: Sequence[Mapping[str, Any]] | None, weight: float
    ) -> None:
        super().__init__(roles, weight)
        columns, chosen = pose_columns(roles, factors, "model.pose.source=told")
        self.columns = torch.tensor(columns)
        # A full turn's angle is read modulo the turn: 359 degrees read as -1 is right.
        self.periodic = torch.tensor([bool(factor.get("periodic")) for factor in chosen])

    def truth(self, batch: GroupedBatch) -> torch.Tensor:
        return batch.factors.flatten(0, 1)[:, self.columns.to(batch.factors.device)]

    def decoder(self, net: InverseGraphicsNet, batch: GroupedBatch) -> DecodeLogits:
        """The network's decoder with the pose latents replaced by the true angles."""
        latents, truth = self.latents.to(batch.factors.device), self.truth(batch)

        def decode_logits(z: torch.Tensor) -> torch.Tensor:
            return net.decode_logits(z.index_copy(1, latents, truth.to(z.dtype)))

        return decode_logits

    def term(
        self,
        objective: Objective,
        angles: torch.Tensor,
        batch: GroupedBatch,
        varying: torch.Tensor,
    ) -> torch.Tensor:
        """The encoder's squared angle error (modulo a turn for a full-turn factor), summed over
        pose latents, reduced over images."""
        difference = angles - self.truth(batch).to(angles)
        wrapped = torch.remainder(difference + math.pi, 2 * math.pi) - math.pi
        periodic = self.periodic.to(angles.device)
        error = torch.where(periodic, wrapped, difference).square().sum(dim=1)
        return objective.reduce(error.view(batch.identity.shape))


class AngleRange(EncodedPose):
    """The batch's learnt angles pulled to the mean and spread of the training values.

    ``weights`` are per pose factor (the layout's order); the loss scales the term by the
    largest and the term weighs each factor by its share of it, so that one weight for every
    factor logs the plain mismatch.

    The spread asked of a batch is not the values' standard deviation ``sd`` but ``sd^2 /
    E[batch sd]``, the expectation taken over batches of the same shape whose groups vary the
    factor as this one's do (:func:`expected_batch_spread`). Why: for angles ``k`` times the
    true ones, the expected squared mismatch of mean and spread is ``k^2 E[batch mean square
    about the values' mean] - 2 k T E[batch sd] + T^2``, least at ``k = T E[batch sd] / sd^2``
    (the batch mean square about the mean is ``sd^2`` on average whatever the batch). With ``T
    = sd`` that is ``E[batch sd] / sd``: 0.79 on the faces' three groups of four, where most
    groups hold the angle, and 0.79-0.80 is what the angles learnt. With ``T = sd^2 / E[batch
    sd]`` it is 1. The expectation assumes each group's values drawn uniformly from the values,
    as the sampler draws them from a full grid.

    A full turn (the chairs' azimuth) has no scale to fix, 0 and 2 pi being the same view, and
    no mean, where the volume starts being its own choice; but left alone its learnt angle
    stays nearly still and the volume's content changes with the view instead. Its batch's
    angles are asked to spread round the turn as true angles would: their circular spread
    (:func:`circular_spread`) is pulled to the one expected of batches of the same shape.
    """

    def __init__(
        self,
        roles: LatentRoles,
        factors: Sequence[Mapping[str, Any]] | None,
        weights: Sequence[float],
        batch_spread: bool = True,
    ) -> None:
        super().__init__(roles, max(weights))
        _, chosen = pose_columns(roles, factors, "model.pose.range_weight")
        values = [torch.tensor(factor["values"], dtype=torch.float64) for factor in chosen]
        self.periodic = torch.tensor([bool(factor.get("periodic")) for factor in chosen])
        self.values = [v.numpy() for v in values]
        self.mean = torch.tensor([float(v.mean()) for v in values])
        self.share = torch.tensor(weights) / max(weights)
        self.batch_spread = batch_spread
        self._tables: dict[tuple[int, int], torch.Tensor] = {}

    def spread(self, factor: int, groups: int, size: int, varying: int) -> float:
        """The spread asked of a batch of ``groups`` groups of ``size`` whose ``varying``
        groups vary pose factor ``factor`` (0 where no such batch can spread: one group holding
        the angle), or the values' own with ``batch_spread`` off. On a full turn, the circular
        spread asked of the batch's angles (the values' own without
        ``batch_spread``): the turn fixes the scale, and what is asked is only that the angles
        spread round it as a batch of true angles would (:func:`circular_spread`)."""
        values = self.values[factor]
        if self.periodic[factor]:
            if not self.batch_spread:
                return circular_spread(values[None])
            return circular_spread(sampled_batches(values, groups, size, varying))
        if not self.batch_spread:
            return float(values.std())
        expected = expected_batch_spread(values, groups, size, varying)
        return float(values.var()) / expected if expected > 1e-12 else 0.0

    def spread_table(self, groups: int, size: int) -> torch.Tensor:
        """``[P, groups + 1]``: the spread asked of a batch of this shape by pose factor and by
        how many of its groups vary it. Built once per shape (a run meets few), so that the
        step looks its targets up on the device instead of reading the counts back."""
        key = (groups, size)
        if key not in self._tables:
            self._tables[key] = torch.tensor(
                [
                    [self.spread(p, groups, size, n) for n in range(groups + 1)]
                    for p in range(len(self.values))
                ]
            )
        return self._tables[key]

    def term(
        self,
        objective: Objective,
        angles: torch.Tensor,
        batch: GroupedBatch,
        varying: torch.Tensor,
    ) -> torch.Tensor:
        """Squared mismatch of mean and standard deviation, summed over pose latents by their
        share of the weight. Under DDP the batch is the whole step's: every rank's angles are
        gathered (with their gradient, :func:`~dcign.model.contrast.across_ranks`), so two ranks
        of G groups ask of their 2G groups' angles what one process asks of the same 2G groups
        (tests/test_ddp.py); a rank's own G groups would spread less than 2G do."""
        local_groups, size = batch.identity.shape
        gathered, varying, _ = across_ranks(angles.unflatten(0, (local_groups, size)), varying)
        angles, groups = gathered.flatten(0, 1), gathered.shape[0]
        table = self.spread_table(groups, size).to(angles)
        factors = torch.arange(table.shape[0], device=angles.device)
        spread = table[factors, varying.sum(dim=0)]
        mean, share = self.mean.to(angles), self.share.to(angles)
        periodic = self.periodic.to(angles.device)
        std = (angles.var(dim=0, unbiased=False) + 1e-8).sqrt()
        resultant = (angles.cos().mean(dim=0).square() + angles.sin().mean(dim=0).square()).sqrt()
        circular = ((1 - resultant).clamp_min(0) + 1e-8).sqrt()
        spread_now = torch.where(periodic, circular, std)
        # A bounded angle's spread of 0: no batch of this shape can spread it; a full turn's
        # is a batch of angles that all agree, a target like any other.
        matched = (spread > 0) | periodic
        spread_mismatch = torch.where(matched, (spread_now - spread).square(), 0.0)
        # A full turn has no mean to match: where it starts is the volume's own choice.
        centre_mismatch = torch.where(periodic, 0.0, (angles.mean(dim=0) - mean).square())
        return (share * (centre_mismatch + spread_mismatch)).sum()


def sampled_batches(
    values: np.ndarray, groups: int, size: int, varying: int, draws: int = 16384
) -> np.ndarray:
    """``[draws, groups * size]``: a factor's values in ``draws`` batches of ``groups`` groups of
    ``size`` drawn as the grouped sampler draws them: ``varying`` groups take ``size`` different
    values (every value, cycled, when there are fewer), the others one value for all their
    images, each uniformly from ``values``. Seeded: the same every call."""
    rng = np.random.default_rng(0)
    count = len(values)
    held = rng.integers(count, size=(draws, groups - varying))
    columns = [np.repeat(held, size, axis=1)]
    for _ in range(varying):
        order = rng.permuted(np.tile(np.arange(count), (draws, 1)), axis=1)
        columns.append(order[:, np.arange(size) % count])
    return np.asarray(values)[np.concatenate(columns, axis=1)]


def expected_batch_spread(values: np.ndarray, groups: int, size: int, varying: int) -> float:
    """The mean standard deviation of a batch's values of one factor (:func:`sampled_batches`)."""
    return float(sampled_batches(values, groups, size, varying).std(axis=1).mean())


def circular_spread(angles: np.ndarray) -> float:
    """The mean over rows of ``sqrt(1 - R)``, ``R`` the mean resultant length of a row's angles
    (radians): 0 when they agree, 1 when they spread evenly round the turn. Why not ``R``
    itself: angles that nearly agree are where a still reading starts, and there ``R``'s
    gradient vanishes with their spread, where ``sqrt(1 - R)``, about their standard deviation
    over the square root of 2, keeps a gradient of constant size as a standard deviation does."""
    return float(np.sqrt(1 - np.abs(np.exp(1j * angles).mean(axis=1))).mean())


def pose_loss(
    pose: PoseTraining,
    roles: LatentRoles | None,
    factors: Sequence[Mapping[str, Any]] | None,
) -> EncodedPose | None:
    """The pose term a configuration asks for, or None (plain DC-IGN training)."""
    if pose.source == "learnt" and not pose.ranged:
        return None
    if roles is None:
        raise ConfigError(
            f"model.pose ({pose.source}, range_weight {pose.range_weight}) sets how a volume "
            "decoder's angles are trained; set model.net.decoder=volume too (model=dcign3d_learnt)."
        )
    if pose.source == "told":
        return ToldPose(roles, factors, pose.weight)
    weights = pose.range_weight_of(list(roles.pose))
    if not any(weights):
        return None
    return AngleRange(roles, factors, weights, batch_spread=pose.range_spread == "batch")
