"""A code model rendering a novel view from one or several views and the query's factor values.

DC-IGN from M views, with no new training: encode the M context views of a scene, average their
codes (the intrinsic latents are trained to be the same for every view of an identity), set
each extrinsic latent group to the latents of the query's factor value through the
equivariance fit (:class:`~dcign.scoring.latent_fit.LatentFit`, fitted on reference images), and
decode. An entangled network (the baseline) is edited the same way through the latents chosen
for each factor (paper 4.1.1); it is a one-view model, so it is shown with M = 1.
This is the same call a GQN answers (``render_views``), so one benchmark scores both.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from dcign.batch import LabelledImages
from dcign.model.interface import CodeModel, Renderer
from dcign.model.layout import INTRINSIC
from dcign.scoring.latent_fit import LatentFit


@dataclass(frozen=True)
class FactorFit:
    """The fit of one factor: its column among the data's factors and its latents' map."""

    column: int
    fit: LatentFit


class CodeRenderer:
    """``render_views`` for an encoder-decoder whose factor latents have fits."""

    def __init__(self, network: Renderer, fits: Sequence[FactorFit]) -> None:
        self.network = network
        self.fits = list(fits)

    @classmethod
    def for_dcign(
        cls,
        model: CodeModel,
        reference: LabelledImages,
        factors: Sequence[Mapping[str, Any]],
        extrapolate: bool = False,
    ) -> CodeRenderer:
        """DC-IGN: each extrinsic latent group fitted to its factor on ``reference`` images
        (``extrapolate``: beyond their values, along the fit's line; else held at the end)."""
        groups = [(name, dims) for name, dims in model.layout.items() if name != INTRINSIC]
        angles = model.angle_factors.get("dcign", ())
        return cls(model, _fits(model, groups, reference, factors, extrapolate, angles))

    @classmethod
    def for_entangled(
        cls,
        network: Renderer,
        chosen: torch.Tensor,
        group_types: Sequence[str],
        reference: LabelledImages,
        factors: Sequence[Mapping[str, Any]],
        extrapolate: bool = False,
    ) -> CodeRenderer:
        """An entangled network: the latents ``chosen [T, D]`` for each group type's factor."""
        groups = [
            (name, chosen[row].nonzero().flatten().tolist())
            for row, name in enumerate(group_types)
            if name != INTRINSIC
        ]
        return cls(network, _fits(network, groups, reference, factors, extrapolate))

    @torch.no_grad()
    def render_views(
        self,
        context_images: torch.Tensor,
        context_factors: torch.Tensor,
        query_factors: torch.Tensor,
    ) -> torch.Tensor:
        """Views ``[B, Q, C, H, W]`` at ``query_factors [B, Q, F]`` of the scenes seen in
        ``context_images [B, M, C, H, W]`` (``context_factors`` are not needed: the code says
        what the views show)."""
        scenes, queries = query_factors.shape[:2]
        mu, _ = self.network.encode(context_images.flatten(0, 1))
        code = mu.unflatten(0, context_images.shape[:2]).mean(dim=1)  # [B, D]
        codes = code[:, None].expand(scenes, queries, code.shape[-1]).flatten(0, 1).clone()
        flat_queries = query_factors.flatten(0, 1)
        for factor in self.fits:
            latents = factor.fit.latents_of(flat_queries[:, factor.column])
            codes[:, list(factor.fit.dims)] = latents.to(codes)
        images = self.network.decode(codes)
        return images.unflatten(0, (scenes, queries))


def _fits(
    network: Renderer,
    groups: Sequence[tuple[str, list[int]]],
    reference: LabelledImages,
    factors: Sequence[Mapping[str, Any]],
    extrapolate: bool,
    angles: Collection[str] = (),
) -> list[FactorFit]:
    """Each factor's latents ``(name, dims)`` regressed on its value over ``reference``; a
    full-turn factor named in ``angles`` on the circle (its latent is an angle)."""
    with torch.no_grad():
        codes = network.encode(reference.images)[0].float().cpu()
    names = [factor["name"] for factor in factors]
    fits = []
    for name, dims in groups:
        column = names.index(name)
        values = reference.factors[:, column]
        periodic = bool(factors[column]["periodic"])
        fit = LatentFit.fit(codes, values, dims, periodic, angular=periodic and name in angles)
        fit = replace(fit, extrapolate=extrapolate)
        fits.append(FactorFit(column, fit))
    return fits
