"""DC-IGN rendering a view from M context views and the query's factor values."""

from __future__ import annotations

import math

import torch

from dcign.batch import LabelledImages
from dcign.scoring.multi_view import CodeRenderer

FACTORS = [{"name": "azimuth", "values": [0.0, 1.0, 2.0], "periodic": False, "unit": "rad"}]


class PixelCode:
    """A renderer whose code is the image's 4 pixels: pixel 0 carries the azimuth."""

    layout = {"azimuth": [0], "intrinsic": [1, 2, 3]}
    comparisons: dict = {}
    angle_factors: dict = {}
    device = torch.device("cpu")

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        code = x.flatten(1)
        return code, torch.zeros_like(code)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z.view(-1, 1, 2, 2)


def images(azimuth: torch.Tensor, rest: torch.Tensor) -> torch.Tensor:
    """Images ``[..., 1, 2, 2]`` with pixel 0 = 0.5 * azimuth + 0.1 and pixels 1-3 = rest."""
    pixels = torch.cat([(0.5 * azimuth + 0.1)[..., None], rest], dim=-1)
    return pixels.view(*azimuth.shape, 1, 2, 2)


def test_context_codes_are_averaged_and_the_query_azimuth_comes_from_the_fit():
    generator = torch.Generator().manual_seed(0)
    values = torch.tensor([0.0, 1.0, 2.0]).repeat(4)
    reference = LabelledImages(
        images(values, torch.rand(12, 3, generator=generator)), values[:, None], torch.zeros(12)
    )
    renderer = CodeRenderer.for_dcign(PixelCode(), reference, FACTORS)
    context_rest = torch.tensor([[[0.2, 0.4, 0.6], [0.4, 0.6, 0.8]]])  # one scene, two views
    context_azimuth = torch.tensor([[0.0, 1.0]])
    context = images(context_azimuth, context_rest)
    query = torch.tensor([[[2.0], [0.0]]])  # two queries
    rendered = renderer.render_views(context, context_azimuth[..., None], query)
    assert rendered.shape == (1, 2, 1, 2, 2)
    pixels = rendered.flatten(2)
    # Pixel 0 is the fit's latent for each query azimuth (exact: the fit is linear); the
    # rest is the mean of the two views' intrinsic pixels.
    torch.testing.assert_close(pixels[0, :, 0], torch.tensor([1.1, 0.1]))
    torch.testing.assert_close(pixels[0, 0, 1:], torch.tensor([0.3, 0.5, 0.7]))
    torch.testing.assert_close(pixels[0, 1, 1:], torch.tensor([0.3, 0.5, 0.7]))


def test_an_entangled_network_edits_the_latents_chosen_for_the_factor():
    values = torch.tensor([0.0, 1.0, 2.0]).repeat(2)
    reference = LabelledImages(images(values, torch.zeros(6, 3)), values[:, None], torch.zeros(6))
    chosen = torch.tensor([[True, False, False, False], [False, False, False, False]])
    renderer = CodeRenderer.for_entangled(
        PixelCode(), chosen, ["azimuth", "intrinsic"], reference, FACTORS
    )
    source = images(torch.tensor([[0.0]]), torch.tensor([[[0.9, 0.8, 0.7]]]))
    rendered = renderer.render_views(source, torch.zeros(1, 1, 1), torch.tensor([[[1.0]]]))
    torch.testing.assert_close(rendered.flatten(), torch.tensor([0.6, 0.9, 0.8, 0.7]))


class AngleCode(PixelCode):
    """PixelCode whose pixel 0 is a volume decoder's full-turn angle latent, in radians."""

    angle_factors = {"dcign": ["azimuth"]}


def test_a_full_turn_angle_latent_is_told_a_held_out_view_on_the_circle():
    """Fitted on the front half of a turn (0-90 and 270-330 degrees), a model that reads its
    azimuth latent as an angle is given 180 degrees for a query at 180, where a code latent
    (an image decoder's) is given the straight line's point between 90 and -90: 0."""
    factors = [{"name": "azimuth", "values": [], "periodic": True, "unit": "rad"}]
    kept = torch.deg2rad(torch.tensor([0.0, 30.0, 60.0, 90.0, 270.0, 300.0, 330.0])).repeat(2)
    read = torch.atan2(kept.sin(), kept.cos())  # the encoder's angle, wrapped into a turn
    reference = LabelledImages(
        torch.cat([read[:, None], torch.zeros(len(kept), 3)], dim=1).view(-1, 1, 2, 2),
        kept[:, None],
        torch.zeros(len(kept)),
    )
    source = torch.zeros(1, 1, 1, 2, 2)
    query = torch.tensor([[[math.pi], [math.radians(120.0)]]])
    as_angle = CodeRenderer.for_dcign(AngleCode(), reference, factors)
    as_code = CodeRenderer.for_dcign(PixelCode(), reference, factors)
    angles = as_angle.render_views(source, torch.zeros(1, 1, 1), query).flatten(2)[0, :, 0]
    torch.testing.assert_close(angles.abs()[0], torch.tensor(math.pi))
    torch.testing.assert_close(angles[1], torch.tensor(math.radians(120.0)))
    chord = as_code.render_views(source, torch.zeros(1, 1, 1), query).flatten(2)[0, 0, 0]
    torch.testing.assert_close(chord, torch.tensor(0.0), atol=1e-6, rtol=0)
