"""Training on a sub-range of a factor's values; scoring views beyond it."""

import math
import sys

import numpy as np
import pytest
import torch

from datamodules.factors import FactorSpec
from datamodules.procedural import FacesDataModule
from datamodules.train_range import in_range, parse_train_range
from dcign.errors import ConfigError
from dcign.scoring.latent_fit import LatentFit
from tests.conftest import ROOT, ready


def tiny_faces(cache_dir, **kwargs) -> FacesDataModule:
    """8 heads; azimuth -1.5, -0.75, 0, 0.75, 1.5 rad (+-0.75 rad = +-42.97 degrees)."""
    return FacesDataModule(
        n_identities=8,
        n_azimuth=5,
        n_elevation=2,
        n_light=2,
        image_size=16,
        group_size=3,
        split={"train": 4, "val": 2, "test": 2},
        cache_dir=cache_dir,
        **kwargs,
    )


def test_training_sees_only_the_range_and_validation_and_test_see_every_value(cache_dir):
    data = ready(tiny_faces(cache_dir, train_range={"azimuth": [-43, 43]}))
    azimuths = {
        name: set(np.round(data.sample_up_to(name, 10_000).factors[:, 0].numpy(), 2))
        for name in ("train", "val", "test")
    }
    assert azimuths["train"] == {-0.75, 0.0, 0.75}
    assert azimuths["val"] == azimuths["test"] == {-1.5, -0.75, 0.0, 0.75, 1.5}
    trained = {f["name"]: f["values"] for f in data.training_factor_dicts}
    assert trained["azimuth"] == [-0.75, 0.0, 0.75] and len(trained["light"]) == 2
    # 4 training heads x 3 azimuths x 2 elevations x 2 lights.
    assert len(data.split_info("train").rows) == 4 * 3 * 2 * 2
    for batch in [next(iter(data.train_dataloader()))]:
        assert batch.factors[..., 0].abs().max() <= 0.75 + 1e-6


def test_a_periodic_range_wraps_around_the_turn():
    turn = FactorSpec("azimuth", tuple(math.radians(d) for d in (0, 90, 180, 270)), periodic=True)
    (front,) = parse_train_range({"azimuth": [270, 90]}, [turn])
    assert [round(math.degrees(v)) for v in front.kept_values()] == [0, 90, 270]
    values = np.array([[math.radians(d)] for d in (0, 45, 180, 300)])
    assert in_range([front], values, ["azimuth"]).tolist() == [True, True, False, True]
    assert str(front) == "3 of azimuth's 4 values (0 90 270 deg)"


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"pose": [0, 1]}, "not a factor of this data set; its factors are"),
        ({"azimuth": [10]}, "must be two numbers"),
        ({"azimuth": "wide"}, "must be two numbers"),
        ({"azimuth": [40, -40]}, "low > high"),
        ({"azimuth": [-10, 10]}, "keeps 1 of the factor's values"),
    ],
)
def test_a_bad_range_is_refused_with_what_to_write(spec, words):
    bounded = FactorSpec("azimuth", (-0.75, 0.0, 0.75))
    with pytest.raises(ConfigError, match=words):
        parse_train_range(spec, [bounded])


def test_an_extrapolating_fit_goes_on_along_its_line_and_a_plain_one_holds_the_end():
    values = torch.linspace(-1.0, 1.0, 5).repeat(2)
    codes = torch.stack([2 * values + 1, torch.zeros_like(values)], dim=1)
    plain = LatentFit.fit(codes, values, [0], periodic=False)
    going_on = LatentFit(**{**plain.__dict__, "extrapolate": True})
    torch.testing.assert_close(plain.latents(2.0), torch.tensor([3.0]))
    torch.testing.assert_close(going_on.latents(2.0), torch.tensor([5.0]))
    torch.testing.assert_close(going_on.latents(-1.5), torch.tensor([-2.0]))
    torch.testing.assert_close(going_on.latents(0.5), torch.tensor([2.0]))  # inside: unchanged


def test_beyond_the_range_every_target_is_held_out_and_every_context_view_is_not(
    monkeypatch, cache_dir
):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    sys.modules.pop("novel_view", None)
    import novel_view

    data = ready(tiny_faces(cache_dir, train_range={"azimuth": [-43, 43]}))
    (azimuth,) = data.train_range
    seen = []

    def first_view(images, known, query):
        seen.append((known, query))
        return images[:, :1]

    renderers = {"DC-IGN": (first_view, [1, 2]), "GQN": (first_view, [1, 2])}
    novel_view.evaluate_seed(
        renderers, data, ["azimuth"], [1, 2], count=4, split="test", beyond={"azimuth": azimuth}
    )
    edits = [(known, query) for known, query in seen if not torch.equal(known, query)]
    assert edits  # the renders from context views, beside the true view given as its own context
    for known, query in edits:
        assert (query[..., 0].abs() > 0.75 + 1e-6).all()
        assert (known[..., 0].abs() <= 0.75 + 1e-6).all()
