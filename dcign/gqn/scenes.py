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
    """Context views ``[B, M, ...]`` and query views ``[B, Q, ...]`` of ``B`` scenes.

    ``query_new [B, Q]`` marks the queries whose viewpoint no context view has: only those are
    trained on, since a query that repeats a context view can be answered by copying it.
    """

    context_images: torch.Tensor
    context_views: torch.Tensor
    query_images: torch.Tensor
    query_views: torch.Tensor
    query_new: torch.Tensor


def repeated_views(views: torch.Tensor) -> torch.Tensor:
    """``[B, S]``: True where a scene's view repeats the viewpoint of an earlier view of it.

    A group holds ``S`` images, and a factor with fewer values than that (the faces' 5
    elevations in groups of 10) shows some views twice.
    """
    same = (views[:, :, None, :] == views[:, None, :, :]).all(dim=-1)  # [B, S, S]
    earlier = torch.ones_like(same[0]).tril(diagonal=-1)
    return (same & earlier).any(dim=-1)


def distinct_views(views: torch.Tensor) -> int:
    """The fewest distinct viewpoints of any scene of ``views [B, S, V]``."""
    return int((~repeated_views(views)).sum(dim=1).min())


def split_scenes(
    images: torch.Tensor, views: torch.Tensor, context: int, generator: torch.Generator
) -> Scenes:
    """Each scene's views in a random order, repeats behind the distinct ones: the first
    ``context`` (all distinct) are the context, the rest the queries, of which those with a
    viewpoint that is not in the context are new (every other view of the scene is one)."""
    scenes, size = images.shape[:2]
    if not 1 <= context < distinct_views(views):
        raise ConfigError(
            f"A scene of {distinct_views(views)} distinct views cannot give {context} context "
            "views and a new query; use model.max_context below the fewest values of a view "
            "factor (and below dataset.group_size)."
        )
    keys = torch.rand(scenes, size, generator=generator, device=generator.device)
    order = (keys.to(views.device) + repeated_views(views).float()).argsort(dim=1)
    rows = torch.arange(scenes, device=views.device)[:, None]
    shuffled_images, shuffled_views = images[rows, order], views[rows, order]
    context_views, query_views = shuffled_views[:, :context], shuffled_views[:, context:]
    copies = (query_views[:, :, None, :] == context_views[:, None, :, :]).all(dim=-1)
    return Scenes(
        shuffled_images[:, :context],
        context_views,
        shuffled_images[:, context:],
        query_views,
        ~copies.any(dim=-1),
    )
