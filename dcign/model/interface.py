"""What callbacks, evaluation and the explorer may rely on of a trained model.

They draw and score DC-IGN's code and compare it with entangled networks; declaring that here
lets the baseline - and any later model - plug in by having these members, and lets tests
stand in a hand-made model for the real one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import torch

from dcign.model.layout import LatentLayout


@runtime_checkable
class Renderer(Protocol):
    """An encoder-decoder pair: images ``[N, C, H, W]`` in [0, 1] <-> codes ``[N, D]``."""

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The posterior ``(mu, logvar)``, each ``[N, D]``."""
        ...

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images ``[N, C, H, W]`` of pixel probabilities in [0, 1]."""
        ...


@runtime_checkable
class CodeModel(Renderer, Protocol):
    """DC-IGN's renderer with its named latent groups, and the networks compared with it.

    ``layout`` maps each latent group (``azimuth``, ..., ``intrinsic``) to its latent indices;
    ``comparisons`` maps a name (``baseline``) to an entangled renderer, whose latents of a
    factor are found from data (paper 4.1.1); it is empty when the run trained DC-IGN alone.
    ``angle_factors`` maps a network's name to the factors whose latent it reads as an angle in
    radians (a volume decoder's pose; none for an image decoder), which is averaged and
    interpolated on the circle wherever a full turn is mapped to latents.
    """

    @property
    def device(self) -> torch.device: ...

    @property
    def layout(self) -> dict[str, list[int]]: ...

    @property
    def comparisons(self) -> Mapping[str, Renderer]: ...

    @property
    def angle_factors(self) -> Mapping[str, Sequence[str]]: ...


@runtime_checkable
class ScoredModel(CodeModel, Protocol):
    """A :class:`CodeModel` whose every network is scored on validation and test groups.

    What the scoring callback needs and nothing else: the networks by name (``dcign`` first),
    the latent groups, and which networks need their factors' latents found from data. Its
    ``training_step`` returns each network's posterior means of the step's groups under
    ``codes`` (``[G, S, D]`` by network name), which those choices are made from.
    """

    @property
    def latent_layout(self) -> LatentLayout: ...

    @property
    def networks(self) -> Mapping[str, Renderer]: ...

    @property
    def entangled_networks(self) -> list[str]: ...


@runtime_checkable
class ViewRenderer(Protocol):
    """A model that renders a scene's views at queried factor values from context views: a
    GQN natively, DC-IGN through :class:`~dcign.scoring.multi_view.CodeRenderer`."""

    def render_views(
        self,
        context_images: torch.Tensor,
        context_factors: torch.Tensor,
        query_factors: torch.Tensor,
    ) -> torch.Tensor:
        """Views ``[B, Q, C, H, W]`` at ``query_factors [B, Q, F]`` of the scenes seen in
        ``context_images [B, M, C, H, W]`` with factor values ``context_factors [B, M, F]``."""
        ...
