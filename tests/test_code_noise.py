"""``benchmarks/code_noise.py`` on posteriors whose spread and noise are set by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from datamodules.factors import FactorSpec
from datamodules.gallery import Gallery
from dcign.batch import LabelledImages
from dcign.errors import ConfigError
from dcign.model.layout import LatentLayout
from dcign.model.module import RUN_CONFIG_KEY
from tests.conftest import ROOT

LAYOUT = LatentLayout.from_sizes({"azimuth": 1, "intrinsic": None}, 3)


@pytest.fixture
def noise(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import code_noise

    return code_noise


def posteriors() -> tuple[torch.Tensor, torch.Tensor]:
    """Four images. Latent 0 (azimuth): means -2, -2, 2, 2 (sample sd 4 / sqrt(3)), noise 0.5.
    Latent 1: means -0.3, 0.3, -0.3, 0.3 (sd 0.6 / sqrt(3)), noise 0.3. Latent 2: means
    0, 0, 0, 0.4 (sd 0.2), noise 0.1 for two images and 0.3 for the other two (mean 0.2)."""
    mu = torch.tensor([[-2.0, -0.3, 0.0], [-2.0, 0.3, 0.0], [2.0, -0.3, 0.0], [2.0, 0.3, 0.4]])
    sd = torch.tensor([[0.5, 0.3, 0.1], [0.5, 0.3, 0.1], [0.5, 0.3, 0.3], [0.5, 0.3, 0.3]])
    return mu, 2 * sd.log()


def test_each_latent_reports_its_spread_noise_and_the_information_it_passes(noise):
    stats = noise.latent_noise(*posteriors())
    spread = np.array([4 / math.sqrt(3), 0.6 / math.sqrt(3), 0.2])
    sd = np.array([0.5, 0.3, 0.2])
    np.testing.assert_allclose(stats["spread"], spread, rtol=1e-6)
    np.testing.assert_allclose(stats["noise"], sd, rtol=1e-6)
    np.testing.assert_allclose(stats["ratio"], sd / spread, rtol=1e-6)
    # A Gaussian channel: 0.5 log(1 + SNR); latent 2's noise equals its spread, so 0.5 log 2.
    expected = [0.5 * math.log(1 + (s / n) ** 2) for s, n in zip(spread, sd, strict=True)]
    np.testing.assert_allclose(stats["information"], expected, rtol=1e-6)
    assert stats["information"][2] == pytest.approx(0.5 * math.log(2))


def test_groups_sum_their_information_and_count_their_noisy_latents(noise):
    stats = noise.latent_noise(*posteriors())
    azimuth, intrinsic = noise.by_group(stats, LAYOUT)
    assert (azimuth["group"], azimuth["latents"], azimuth["noisier_than_half"]) == ("azimuth", 1, 0)
    assert azimuth["median_ratio"] == pytest.approx(0.5 * math.sqrt(3) / 4)
    # Latent 1: noise 0.3 against a spread of 0.346 (ratio 0.87); latent 2: ratio 1.
    assert (intrinsic["latents"], intrinsic["noisier_than_half"]) == (2, 2)
    assert intrinsic["median_ratio"] == pytest.approx((0.3 * math.sqrt(3) / 0.6 + 1.0) / 2)
    assert intrinsic["spread"] == pytest.approx((0.2, 0.6 / math.sqrt(3)))
    assert intrinsic["noise"] == pytest.approx((0.2, 0.3))
    assert intrinsic["information"] == pytest.approx(
        0.5 * math.log(1 + (0.6 / math.sqrt(3) / 0.3) ** 2) + 0.5 * math.log(2)
    )


class Rows:
    """Images whose only pixel is their row number."""

    def read(self, rows: np.ndarray) -> LabelledImages:
        images = torch.as_tensor(rows, dtype=torch.float32).view(-1, 1, 1, 1)
        return LabelledImages(images, torch.zeros(len(rows), 1), torch.zeros(len(rows)))


def test_images_are_drawn_from_the_split_without_repeats_or_missing_views(noise):
    factors = (FactorSpec("azimuth", (0.0, 1.0, 2.0)),)
    # Identities 0 and 1 at three views; identity 1 lacks view 2 (rows 0-4 exist).
    codes = np.array([[0, 0], [0, 1], [0, 2], [1, 0], [1, 1]])
    gallery = Gallery.build(factors, codes, np.arange(5), np.array([0, 1]), Rows())
    drawn = noise.split_images(gallery, 4, seed=0).flatten().tolist()
    assert len(set(drawn)) == 4 and set(drawn) <= {0.0, 1.0, 2.0, 3.0, 4.0}
    every = noise.split_images(gallery, 100, seed=0).flatten().tolist()
    assert every == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_bad_arguments_are_refused_by_the_parser(noise, capsys):
    with pytest.raises(SystemExit):
        noise.parse_arguments(["--images", "1"])
    assert "--images must be at least 2" in capsys.readouterr().err


def test_a_gqn_checkpoint_is_refused_with_a_pointer(noise, tmp_path):
    gqn = tmp_path / "gqn.ckpt"
    torch.save({RUN_CONFIG_KEY: {"model": {"_target_": "dcign.gqn.module.GQN"}}}, gqn)
    with pytest.raises(ConfigError, match="holds a GQN, not a DC-IGN"):
        noise.measure(noise.parse_arguments(["--ckpt", str(gqn)]))


class OnePixelNetwork:
    """Reads an image's pixel as the mean of its one latent, at posterior sd 0.5."""

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu = x.flatten(1)
        return mu, torch.full_like(mu, 2 * math.log(0.5))


class StandInModel:
    networks = {"dcign": OnePixelNetwork()}
    latent_layout = LatentLayout.from_sizes({"intrinsic": None}, 1)
    hparams = type("HParams", (), {"layout": {"intrinsic": None}})()

    def eval(self) -> StandInModel:
        return self


class StandInData:
    def __init__(self, gallery: Gallery) -> None:
        self.gallery = gallery

    def prepare_data(self) -> None:
        pass

    def setup(self, stage: str) -> None:
        pass

    def split_info(self, split: str):
        return self


def test_the_report_joins_every_chunk_of_the_split(noise, monkeypatch):
    factors = (FactorSpec("azimuth", (0.0,)),)
    codes = np.array([[k, 0] for k in range(5)])
    gallery = Gallery.build(factors, codes, np.arange(5), np.arange(5), Rows())
    monkeypatch.setattr(noise, "load_checkpoint", lambda path: (StandInModel(), {}))
    monkeypatch.setattr(noise, "data_config", lambda cfg, run: {})
    monkeypatch.setattr(noise, "build", lambda config, layout: StandInData(gallery))
    # Five images (pixels 0-4) in chunks of two: a report from one chunk would miss the rest.
    report = noise.measure(noise.parse_arguments(["--images", "5", "--batch", "2"]))
    (group,) = report["networks"]["dcign"]["groups"]
    assert report["images"] == 5
    assert group["spread"] == pytest.approx((math.sqrt(2.5),) * 2)
    assert group["noise"] == pytest.approx((0.5, 0.5))
    assert group["information"] == pytest.approx(0.5 * math.log(1 + 2.5 / 0.25))
