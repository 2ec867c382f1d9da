"""``benchmarks/angle_reading.py`` on a hand-made data set whose answers are computed by hand.

The stand-in data set: identities 1, 2 at azimuths -1, -0.5, 0, 0.5, 1 rad and one light. An
"image" is two pixels: the azimuth in radians, then the identity / 10. The stand-in encoder
reads the azimuth only within +-0.5 rad (beyond, it reads the edge: a reading that saturates
outside a training range) and the identity exactly; its decoder draws both pixels from the code
exactly, at any angle.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from datamodules.factors import FactorSpec
from datamodules.gallery import Gallery
from dcign.batch import LabelledImages
from dcign.errors import ConfigError
from dcign.ship import SHIPPED
from tests.conftest import ROOT

IDENTITIES = np.array([1, 2])
AZIMUTHS = (-1.0, -0.5, 0.0, 0.5, 1.0)
FACTORS = (FactorSpec("azimuth", AZIMUTHS), FactorSpec("light", (0.0,)))


@pytest.fixture
def angles(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import angle_reading

    return angle_reading


class Rows:
    def __init__(self, codes: np.ndarray) -> None:
        self.codes = codes

    def read(self, rows: np.ndarray) -> LabelledImages:
        """Images ``[..., 1, 1, 2]`` shaped like ``rows``."""
        codes = self.codes[rows]
        azimuth = torch.from_numpy(np.asarray(AZIMUTHS)[codes[..., 1]]).float()
        face = torch.from_numpy(codes[..., 0] / 10).float()
        images = torch.stack([azimuth, face], dim=-1)[..., None, None, :]
        values = torch.stack([azimuth, torch.zeros_like(azimuth)], dim=-1)
        return LabelledImages(images, values, torch.from_numpy(codes[..., 0]))


def gallery() -> Gallery:
    codes = np.array([(i, a, 0) for i in IDENTITIES for a in range(len(AZIMUTHS))])
    return Gallery.build(FACTORS, codes, np.arange(len(codes)), IDENTITIES, Rows(codes))


class SaturatingReader:
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = x.flatten(1)
        codes = torch.stack([pixels[:, 0].clamp(-0.5, 0.5), pixels[:, 1]], dim=1)
        return codes, torch.zeros_like(codes)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z.view(-1, 1, 1, 2)


def test_a_reading_that_saturates_is_told_apart_from_a_decoder_that_draws_well(angles):
    scores = [angles.score_setting(SaturatingReader(), 0, gallery(), 0, {"light": 0}, batch=3)]
    rows = angles.by_value(scores, FACTORS[0], trained=(-0.5, 0.0, 0.5))
    assert [r["value"] for r in rows] == pytest.approx([math.degrees(a) for a in AZIMUTHS])
    assert [r["trained"] for r in rows] == [False, True, True, True, False]
    assert [r["images"] for r in rows] == [2] * 5
    # Read: the true angle inside +-0.5 rad, the edge beyond it; every face reads the same.
    edge = math.degrees(0.5)
    assert [r["read"] for r in rows] == pytest.approx([-edge, -edge, 0.0, edge, edge])
    assert all(r["read_sd"] == 0 for r in rows)
    # As read, the azimuth pixel is 0.5 off at +-1 rad: MSE 0.25 / 2 pixels; at the true angle
    # the decoder draws every image exactly.
    assert [r["mse_read"] for r in rows] == pytest.approx([0.125, 0, 0, 0, 0.125])
    assert all(r["mse_true"] == 0 for r in rows)


def test_a_full_turn_is_read_modulo_the_turn_about_each_value(angles):
    """Readings of 179 and -179 degrees at the value 180 are 1 degree either side of it: mean
    180, spread 1 (raw, they would average 0 with a spread of 179)."""
    turn = FactorSpec("azimuth", (0.0, math.pi), periodic=True)
    near = math.radians(179.0)
    scores = [
        {
            "true": np.array([math.pi, math.pi, 0.0]),
            "read": np.array([near, -near, 2 * math.pi + 0.01]),
            "mse_read": np.zeros(3),
            "mse_true": np.zeros(3),
        }
    ]
    rows = angles.by_value(scores, turn, trained=(0.0, math.pi))
    assert rows[1]["read"] == pytest.approx(180.0) and rows[1]["read_sd"] == pytest.approx(1.0)
    assert rows[0]["read"] == pytest.approx(math.degrees(0.01))


def test_a_decoder_without_angles_is_refused_with_a_pointer(angles):
    assert angles.angle_latent({"dcign": ["azimuth"]}, {"azimuth": 3}, "azimuth") == 3
    with pytest.raises(ConfigError, match="reads no angle for 'azimuth'.*model=dcign3d"):
        angles.angle_latent({}, {"azimuth": 3}, "azimuth")
    with pytest.raises(ConfigError, match="reads no angle for 'light'"):
        angles.angle_latent({"dcign": ["azimuth"]}, {"light": 1}, "light")


def test_the_shipped_image_decoder_is_refused_before_its_data_is_built(angles):
    with pytest.raises(ConfigError, match="reads no angle for 'azimuth'"):
        angles.measure(angles.parse_arguments(["--ckpt", str(SHIPPED)]))


class MirroredReader:
    """A learnt decoder's frame: reads each azimuth mirrored and offset (0.3 - a), and draws
    the azimuth pixel from its own reading, so it draws the truth only at its frame's value."""

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = x.flatten(1)
        codes = torch.stack([0.3 - pixels[:, 0], pixels[:, 1]], dim=1)
        return codes, torch.zeros_like(codes)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.stack([0.3 - z[:, 0], z[:, 1]], dim=1).view(-1, 1, 1, 2)


def test_a_learnt_frame_is_fitted_so_that_the_true_angle_is_drawn_in_it(angles):
    """Put in raw, the true value a is drawn as 0.3 - a: an error of (0.3 - 2a)^2 over the two
    pixels. The fitted frame is the line read = 0.3 - true, and in it every image is exact. On a
    full turn read mirrored from 1 rad (wrapped), the sign -1 and the offset 1."""
    reader, setting = MirroredReader(), {"light": 0}
    raw = angles.score_setting(reader, 0, gallery(), 0, setting, batch=3)
    assert raw["mse_true"] == pytest.approx((0.3 - 2 * raw["true"]) ** 2 / 2, abs=1e-6)
    frame = angles.fitted_frame(raw["true"], raw["read"], periodic=False)
    assert frame == pytest.approx({"slope": -1.0, "offset": 0.3}, abs=1e-6)
    fitted = angles.score_setting(
        reader, 0, gallery(), 0, setting, batch=3, frame=angles.in_frame(frame)
    )
    assert fitted["mse_true"] == pytest.approx(np.zeros(10), abs=1e-10)
    turn = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    read = np.angle(np.exp(1j * (1.0 - turn)))
    assert angles.fitted_frame(turn, read, periodic=True) == pytest.approx(
        {"slope": -1.0, "offset": 1.0}
    )


def test_a_learnt_frame_is_fitted_on_the_trained_values_only(angles):
    """A reader exact inside +-0.5 rad and stuck at the edge beyond: fitted on the trained
    values only, the frame is the identity (slope 1, offset 0); the views held out of training
    would have bent it (a least-squares line through the saturated readings of all five
    values: slope 1.5 / 2.5 = 0.6, offset 0)."""
    reader, settings = SaturatingReader(), [{"light": 0}]
    kept = angles.learnt_frame(reader, 0, gallery(), 0, settings, False, 3, (-0.5, 0.0, 0.5))
    assert kept == pytest.approx({"slope": 1.0, "offset": 0.0}, abs=1e-6)
    every = angles.learnt_frame(reader, 0, gallery(), 0, settings, False, 3, AZIMUTHS)
    assert every == pytest.approx({"slope": 0.6, "offset": 0.0}, abs=1e-6)
