"""``benchmarks/identity_by_view.py`` on a hand-made data set whose answers are counted by hand.

The stand-in data set: identities 10, 11, 12 at 4 azimuths and 2 lights. Each "image" is one
row of pixels: the azimuth index / 4, the light index, then a one-hot that marks the identity
but moves with the view: identity k (0, 1, 2) at azimuth a lights pixel (k + a) mod 3. The
true image a of face k therefore looks exactly like face k + a - b at azimuth b: a profile
that resembles another face's frontal view, the way the real faces' views do. The stand-in
encoder reads the true azimuth, light and identity back; its decoder draws the true image
from them. Every value is a multiple of 1/4, so the line-up's distances are exact and ties
go to the first identity of the line-up.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

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

IDENTITIES = np.array([10, 11, 12])
K = len(IDENTITIES)
AZIMUTHS = 4
FACTORS = (
    FactorSpec("azimuth", tuple(np.linspace(-1.5, 1.5, AZIMUTHS))),
    FactorSpec("light", (-0.5, 0.5)),
)
LAYOUT = LatentLayout.from_sizes({"azimuth": 1, "light": 1, "intrinsic": None}, 2 + K)


@pytest.fixture
def ibv(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import identity_by_view

    return identity_by_view


def shifted(one_hot: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Each row's one-hot ``[N, K]`` moved by its ``shift [N]`` places (mod K)."""
    positions = (torch.arange(K)[None, :] - shift[:, None]) % K
    return one_hot.gather(1, positions)


def image(k: int, azimuth: int, light: int) -> torch.Tensor:
    """Identity index k at azimuth and light indices: ``[1, 1, 2 + K]``."""
    pixels = torch.zeros(2 + K)
    pixels[0], pixels[1], pixels[2 + (k + azimuth) % K] = azimuth / AZIMUTHS, light, 1.0
    return pixels.view(1, 1, -1)


class Rows:
    """The data set's rows, read as the cache's reader reads them."""

    def __init__(self, codes: np.ndarray) -> None:
        self.codes = codes
        self.images = torch.stack(
            [image(int(np.searchsorted(IDENTITIES, i)), a, li) for i, a, li in codes]
        )
        self.values = np.stack(
            [[FACTORS[0].values[a], FACTORS[1].values[li]] for _, a, li in codes]
        )

    def read(self, rows: np.ndarray) -> LabelledImages:
        return LabelledImages(
            self.images[torch.from_numpy(rows)],
            torch.from_numpy(self.values[rows]),
            torch.from_numpy(self.codes[rows, 0]),
        )


def gallery(missing: tuple[int, int, int] | None = None) -> Gallery:
    """Every identity at every view, but ``missing`` (identity, azimuth, light indices)."""
    codes = np.array(
        [
            (i, a, li)
            for i in IDENTITIES
            for a in range(AZIMUTHS)
            for li in range(2)
            if (i, a, li) != missing
        ]
    )
    rows = np.arange(len(codes))
    return Gallery.build(FACTORS, codes, rows, IDENTITIES, Rows(codes))


class TrueViews:
    """Encoder: the true azimuth, light and identity one-hot (nan for a blank image); decoder:
    the true image of a code (or, with ``faceless``, every identity pixel at 1/4: equally far
    from every face)."""

    def __init__(self, faceless: bool = False) -> None:
        self.faceless = faceless

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = x.flatten(1)
        shift = (pixels[:, 0] * AZIMUTHS).round().long()
        codes = torch.cat([pixels[:, :2], shifted(pixels[:, 2:], -shift)], dim=1)
        # A blank picture (the line-up's stand-in for a missing view) shows no face to read.
        codes[pixels.sum(dim=1) == 0] = float("nan")
        return codes, torch.zeros_like(codes)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        shift = (z[:, 0] * AZIMUTHS).round().long()
        faces = torch.full_like(z[:, 2:], 0.25) if self.faceless else shifted(z[:, 2:], shift)
        return torch.cat([z[:, :2], faces], dim=1).view(-1, 1, 1, 2 + K)


class LeakyViews(TrueViews):
    """Writes the face into the azimuth latent as well (azimuth index / 4 + identity index /
    100) and draws the face it reads there, whatever the intrinsic latents say."""

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        codes, spread = super().encode(x)
        codes[:, 0] += codes[:, 2:].argmax(dim=1) / 100
        return codes, spread

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        azimuth = (z[:, 0] * AZIMUTHS).round()
        face = ((z[:, 0] - azimuth / AZIMUTHS) * 100).round().long()
        one_hot = torch.nn.functional.one_hot(face, K).to(z)
        return super().decode(torch.cat([azimuth[:, None] / AZIMUTHS, z[:, 1:2], one_hot], 1))


def scores_of(ibv, renderer: TrueViews, data: Gallery) -> list:
    """Both settings of the light, in the script's order (the middle first)."""
    settings = ibv.choose_settings(FACTORS, 0, 1, seed=0)
    return [ibv.score_setting(renderer, LAYOUT, data, 0, setting, batch=5) for setting in settings]


def test_the_true_views_keep_every_face_and_the_source_keeps_what_the_views_share(ibv):
    scores = scores_of(ibv, TrueViews(), gallery())
    overall = ibv.summary(scores)
    # 2 settings x 12 ordered pairs of azimuths x 3 identities.
    assert overall["pairs"] == 72
    assert overall["edit"] == overall["oracle"] == overall["multi_view"] == 1.0
    assert overall["other_face"] == 1.0
    assert overall["chance"] == pytest.approx(1 / 3) and overall["lineup"] == 3
    # Source a of face k is nearest to face k + a - b at b: its own only 3 steps apart, in
    # 2 of the 12 ordered pairs (0 -> 3, 3 -> 0).
    assert overall["source"] == pytest.approx(2 / 12)
    steps = ibv.by_bin(scores, ibv.steps_apart(AZIMUTHS, periodic=False))
    assert {b: (e["pairs"], e["source"]) for b, e in steps.items()} == {
        1: (36, 0.0),
        2: (24, 0.0),
        3: (12, 1.0),
    }
    # Offsets from the middle (1.5): 1.5, 0.5, 0.5, 1.5; gap 0 holds (0, 3), (1, 2) both ways.
    gaps = ibv.by_bin(scores, ibv.middle_gap(AZIMUTHS))
    assert {b: (e["pairs"], e["source"]) for b, e in gaps.items()} == {0: (24, 0.5), 1: (48, 0.0)}
    # By the source's value and by the target's: the unchanged source is kept only from 0 at
    # 3 and from 3 at 0, one pair in three of each end view (3 targets / sources x 3 faces x 2
    # settings = 18 pairs each).
    for bins in (ibv.source_value(AZIMUTHS), ibv.target_value(AZIMUTHS)):
        ends = ibv.by_bin(scores, bins)
        assert {b: (e["pairs"], e["source"]) for b, e in ends.items()} == {
            0: (18, pytest.approx(1 / 3)),
            1: (18, 0.0),
            2: (18, 0.0),
            3: (18, pytest.approx(1 / 3)),
        }
    # The held latents (light, identity) do not change with the view; two faces' one-hots lie
    # sqrt(2) apart.
    assert overall["held_distance"] == 0.0
    assert [s.between for s in scores] == pytest.approx([math.sqrt(2)] * 2)


def test_a_decoder_that_draws_no_face_keeps_chance(ibv):
    scores = scores_of(ibv, TrueViews(faceless=True), gallery())
    overall = ibv.summary(scores)
    # Every face at equal distance: the line-up's first identity (10) is named, one in three.
    for name in ("edit", "oracle", "multi_view"):
        assert overall[name] == pytest.approx(1 / 3)
        kept = np.stack([s.kept[name] for s in scores])
        assert kept[..., 0][np.stack([s.scored for s in scores])[..., 0]].all()
        assert not kept[..., 1:].any()
    assert overall["source"] == pytest.approx(2 / 12)  # the true images do not change


def test_a_missing_view_leaves_its_pairs_out_and_shrinks_its_line_up(ibv):
    # Identity 12 lacks azimuth 1 at light 1 (the middle setting, scored first).
    scores = scores_of(ibv, TrueViews(), gallery(missing=(12, 1, 1)))
    assert scores[0].lineup.tolist() == [3, 2, 3, 3]
    assert scores[1].lineup.tolist() == [3, 3, 3, 3]
    # 6 ordered pairs of that face involve azimuth 1; its blank image (whose code the encoder
    # cannot read) enters no average.
    overall = ibv.summary(scores)
    assert overall["pairs"] == 72 - 6
    assert overall["edit"] == overall["oracle"] == overall["multi_view"] == 1.0
    assert overall["lineup"] == pytest.approx((60 * 3 + 6 * 2) / 66)


def test_settings_start_in_the_middle_and_are_distinct(ibv):
    factors = [
        FACTORS[0],
        FactorSpec("elevation", (-0.2, 0.0, 0.2)),
        FactorSpec("light", (-1.0, -0.5, 0.0, 0.5, 1.0)),
    ]
    settings = ibv.choose_settings(factors, 0, 5, seed=3)
    assert settings[0] == {"elevation": 1, "light": 2}
    assert len({tuple(s.values()) for s in settings}) == 6
    assert settings == ibv.choose_settings(factors, 0, 5, seed=3)
    # No more than the other factors' 15 settings.
    assert len(ibv.choose_settings(factors, 0, 40, seed=0)) == 15
    values = ibv.setting_values(factors, 0, settings[0])
    assert values.tolist() == [[a, 0.0, 0.0] for a in FACTORS[0].values]


def test_steps_go_round_a_full_turn(ibv):
    assert ibv.steps_apart(4, periodic=False)[0].tolist() == [0, 1, 2, 3]
    assert ibv.steps_apart(4, periodic=True)[0].tolist() == [0, 1, 2, 1]
    assert ibv.middle_gap(5)[0].tolist() == [0, 1, 2, 1, 0]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("nose", "Unknown factor 'nose'.*choose one of \\['azimuth', 'light'\\]"),
        ("intrinsic", "Unknown factor 'intrinsic'"),
        ("elevation", "Unknown factor 'elevation'.*the layout's groups"),
        ("scale", "'scale' takes a single value"),
    ],
)
def test_factors_that_cannot_be_edited_are_named(ibv, name, message):
    factors = [
        FACTORS[0],
        FactorSpec("elevation", (0.0, 0.2)),  # no latent group of its own
        FACTORS[1],
        FactorSpec("scale", (1.0,)),  # a latent group, but one value
    ]
    layout = LatentLayout.from_sizes(
        {"azimuth": 1, "light": 1, "scale": 1, "intrinsic": None}, 2 + 1 + K
    )
    assert ibv.check_factor(factors, layout, "light") == 2
    with pytest.raises(ConfigError, match=message):
        ibv.check_factor(factors, layout, name)


def test_a_gqn_checkpoint_is_refused_with_a_pointer(ibv, tmp_path):
    gqn = tmp_path / "gqn.ckpt"
    torch.save({RUN_CONFIG_KEY: {"model": {"_target_": "dcign.gqn.module.GQN"}}}, gqn)
    with pytest.raises(ConfigError, match="holds a GQN, not a DC-IGN"):
        ibv.measure(ibv.parse_arguments(["--ckpt", str(gqn)]))


@pytest.mark.slow
def test_an_unknown_factor_ends_the_script_with_its_message_before_any_rendering(tmp_path):
    cache = tmp_path / "cache"
    done = subprocess.run(
        [sys.executable, "benchmarks/identity_by_view.py", "--factor", "nose"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "DCIGN_CACHE": str(cache), "WANDB_MODE": "offline"},
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Unknown factor 'nose'" in done.stderr and "Traceback" not in done.stderr
    assert not cache.exists() or not any(cache.iterdir())


def test_a_face_read_back_from_the_azimuth_latent_is_lost_with_another_faces_view(ibv):
    # The same-face edit gets its face back through the azimuth latent and keeps every face;
    # read from another face at the target's view, the azimuth latent draws that other face.
    overall = ibv.summary(scores_of(ibv, LeakyViews(), gallery()))
    assert overall["edit"] == overall["oracle"] == 1.0
    assert overall["other_face"] == 0.0


class FacelessAtFirstView(TrueViews):
    """Draws the true image at every azimuth but the first, where it draws no face."""

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        images = super().decode(z)
        first = (z[:, 0] * AZIMUTHS).round() == 0
        images[first, ..., 2:] = 0.25
        return images


def test_a_view_drawn_without_a_face_shows_in_its_target_row_only(ibv):
    scores = scores_of(ibv, FacelessAtFirstView(), gallery())
    # Drawn at azimuth 0 every face is equally far from all three: the first (10) is named.
    targets = ibv.by_bin(scores, ibv.target_value(AZIMUTHS))
    assert {b: e["edit"] for b, e in targets.items()} == {
        0: pytest.approx(1 / 3),
        1: 1.0,
        2: 1.0,
        3: 1.0,
    }
    # Read from azimuth 0 the face is drawn elsewhere, and kept; read from any other view, one
    # target in three is azimuth 0.
    sources = ibv.by_bin(scores, ibv.source_value(AZIMUTHS))
    assert {b: e["edit"] for b, e in sources.items()} == {
        0: 1.0,
        1: pytest.approx(7 / 9),
        2: pytest.approx(7 / 9),
        3: pytest.approx(7 / 9),
    }
