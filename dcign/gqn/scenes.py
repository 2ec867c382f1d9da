"""GQN scenes from factor-grouped batches: viewpoints from factor values, context and queries.

A group in which only the view (azimuth, elevation) or the light varies shows one identity in
one scene from several known viewpoints: exactly what a Generative Query Network is trained on.
No 3D camera position is needed, because the factor values say where the camera and the lamp
are: an angle becomes ``(cos, sin)`` (so that a full turn closes), any other factor its value.
Every factor that varies in the data enters the viewpoint, also those a scene holds fixed,
since the absolute view is what the generator must render.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from dcign.errors import ConfigError


@dataclass(frozen=True)
class ViewpointFactor:
    """One factor of the viewpoint vector: its column among the data's factors and its kind."""

    column: int
    angle: bool


def viewpoint_factors(factors: Sequence[Mapping[str, Any]]) -> list[ViewpointFactor]:
    """The varied factors of a data set (``FactorSpec.to_dict()`` forms), in factor order."""
    chosen = [
        ViewpointFactor(column, factor.get("unit", "rad") == "rad")
        for column, factor in enumerate(factors)
        if len(factor["values"]) > 1
    ]
    if not chosen:
        raise ConfigError("A GQN needs a data set with at least one factor that varies.")
    return chosen


def viewpoint_dim(factors: Sequence[ViewpointFactor]) -> int:
    return sum(2 if factor.angle else 1 for factor in factors)


def viewpoints(values: torch.Tensor, factors: Sequence[ViewpointFactor]) -> torch.Tensor:
    """Factor values ``[..., F]`` -> viewpoint vectors ``[..., V]``."""
    parts = []
    for factor in factors:
        value = values[..., factor.column].float()
        parts += [torch.cos(value), torch.sin(value)] if factor.angle else [value]
    return torch.stack(parts, dim=-1)


@dataclass(frozen=True)
class Scenes:
    """Context views ``[B, M, ...]`` and query views ``[B, Q, ...]`` of ``B`` scenes."""

    context_images: torch.Tensor
    context_views: torch.Tensor
    query_images: torch.Tensor
    query_views: torch.Tensor


def split_scenes(
    images: torch.Tensor, views: torch.Tensor, context: int, generator: torch.Generator
) -> Scenes:
    """Each scene's ``S`` views in a random order: the first ``context`` are the context, the
    rest the queries (every image of the batch is used)."""
    scenes, size = images.shape[:2]
    if not 1 <= context < size:
        raise ConfigError(
            f"A scene of {size} views cannot give {context} context views and a query; use "
            f"model.max_context < dataset.group_size."
        )
    keys = torch.rand(scenes, size, generator=generator, device=generator.device)
    order = keys.argsort(dim=1).to(images.device)
    shuffled_images = images[torch.arange(scenes, device=images.device)[:, None], order]
    shuffled_views = views[torch.arange(scenes, device=views.device)[:, None], order]
    return Scenes(
        shuffled_images[:, :context],
        shuffled_views[:, :context],
        shuffled_images[:, context:],
        shuffled_views[:, context:],
    )
