"""Training on a sub-range of a factor's values; scoring views beyond it."""

import math
import sys

import numpy as np
import pytest
import torch

import tests.test_mesh_folder as mesh_tests
from datamodules.factors import FactorSpec
from datamodules.grouped import GroupedDataModule
from datamodules.procedural import FacesDataModule
from datamodules.train_range import in_range, parse_train_range
from dcign.errors import ConfigError
from dcign.scoring.latent_fit import LatentFit
from tests.conftest import ROOT, ready
from tests.test_chairs3d import chairs, write_chairs
from tests.test_folder import folder as manifest_folder
from tests.test_folder import write_folder
from tests.test_mesh_folder import meshes
from tests.test_norb import norb, write_norb

# The mesh folder's own fixture (coloured.PLY, cube.obj, sub/tetra.obj: identities 0, 1, 2),
# registered here under a name that does not clash with the CSV folder's helper.
mesh_files = mesh_tests.folder


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


# --- the other data sets with a view factor: the same option, through the same base class ---


def degrees_seen(data: GroupedDataModule, factor: str) -> dict[str, set[int]]:
    """Each split's values of the angle ``factor`` over all its images, in whole degrees."""
    column = data.factor_names.index(factor)
    return {
        split: {
            round(math.degrees(v))
            for v in data.sample_up_to(split, 10_000).factors[:, column].tolist()
        }
        for split in ("train", "val", "test")
    }


def batch_degrees(data: GroupedDataModule, factor: str) -> set[int]:
    """The values of the angle ``factor`` in the first training batch, in whole degrees."""
    batch = next(iter(data.train_dataloader()))
    column = data.factor_names.index(factor)
    return {round(math.degrees(v)) for v in batch.factors[..., column].flatten().tolist()}


def trained_degrees(data: GroupedDataModule, factor: str) -> list[int]:
    """``training_factor_dicts``' values of the angle ``factor``, in whole degrees, and a check
    that every other factor keeps all its values there."""
    trained = {f["name"]: f for f in data.training_factor_dicts}
    others = {f["name"]: f for f in data.factor_dicts if f["name"] != factor}
    assert {name: trained[name] for name in others} == others
    return [round(math.degrees(v)) for v in trained[factor]["values"]]


def test_a_csv_folder_trains_on_a_range_given_in_degrees(tmp_path):
    """The manifest's azimuth column is in degrees (unit deg, stored as radians): the range is
    in degrees too, and its bounds are inclusive on the converted values."""
    data = ready(
        manifest_folder(
            write_folder(tmp_path),
            tmp_path / "cache",
            split={"train": 2, "val": 1, "test": 1},
            ratio={"azimuth": 1, "light": 1, "intrinsic": 0},
            train_range={"azimuth": [0, 45]},
        )
    )
    seen = degrees_seen(data, "azimuth")
    # The manifest's azimuths are 0, 45, 90; 0 <= a <= 45 keeps 0 and 45.
    assert seen["train"] == {0, 45}
    assert seen["val"] == seen["test"] == {0, 45, 90}
    assert batch_degrees(data, "azimuth") <= {0, 45}
    assert trained_degrees(data, "azimuth") == [0, 45]
    # 2 training objects x 2 azimuths x 2 lights; val and test: 1 object x 3 x 2 each.
    assert len(data.split_info("train").rows) == 2 * 2 * 2
    assert len(data.split_info("val").rows) == len(data.split_info("test").rows) == 3 * 2


def test_smallnorb_trains_on_a_range_that_wraps_through_zero(tmp_path):
    """smallNORB's azimuth is a full turn (0 to 340 degrees in steps of 20), so a range may
    wrap through 0; the official test identities keep every azimuth."""
    data = ready(
        norb(write_norb(tmp_path / "norb"), tmp_path / "cache", train_range={"azimuth": [340, 0]})
    )
    seen = degrees_seen(data, "azimuth")
    # The fixture's azimuths are 0, 20, 340; going up from 340: 340 (+0), 0 (+20); 20 is +40,
    # past the range's width of 20.
    assert seen["train"] == {0, 340}
    assert seen["val"] == seen["test"] == {0, 20, 340}
    assert batch_degrees(data, "azimuth") <= {0, 340}
    # Of smallNORB's 18 azimuths (0, 20, ..., 340), the range holds the same two, in the
    # factor's value order.
    assert trained_degrees(data, "azimuth") == [0, 340]
    # 2 training toys x 2 azimuths x 2 elevations x 2 lightings; val: 2 toys x 3 x 2 x 2;
    # test: the 4 toys of the testing file x 3 x 2 x 2.
    assert len(data.split_info("train").rows) == 2 * 2 * 2 * 2
    assert len(data.split_info("val").rows) == 2 * 3 * 2 * 2
    assert len(data.split_info("test").rows) == 4 * 3 * 2 * 2


def test_a_mesh_folder_trains_on_the_front_half_of_the_turn(mesh_files, tmp_path):
    """Meshes are rendered at n_azimuth azimuths over a full turn; [270, 90] wraps through 0
    and keeps the views from the front half, ends included."""
    data = ready(meshes(mesh_files, tmp_path, train_range={"azimuth": [270, 90]}))
    seen = degrees_seen(data, "azimuth")
    # n_azimuth=4: 0, 90, 180, 270; going up from 270: 270 (+0), 0 (+90), 90 (+180); 180 is
    # +270, past the range's width of 180.
    assert seen["train"] == {0, 90, 270}
    assert seen["val"] == seen["test"] == {0, 90, 180, 270}
    assert batch_degrees(data, "azimuth") <= {0, 90, 270}
    assert trained_degrees(data, "azimuth") == [0, 90, 270]
    # 1 training mesh x 3 azimuths x 1 elevation; val and test: 1 mesh x 4 x 1 each.
    assert len(data.split_info("train").rows) == 1 * 3 * 1
    assert len(data.split_info("val").rows) == len(data.split_info("test").rows) == 4


def test_3d_chairs_train_on_a_range_that_wraps_through_zero(tmp_path):
    """The chairs' azimuths are read from the file names over a full turn (t000 ... t348), so
    a range wraps through 0; a chair missing a view outside the range changes nothing."""
    data = ready(
        chairs(
            write_chairs(tmp_path / "rendered_chairs"),
            tmp_path / "cache",
            train_range={"azimuth": [340, 15]},
        )
    )
    seen = degrees_seen(data, "azimuth")
    # The renders' azimuths are 0, 11, 23, 348; going up from 340: 348 (+8), 0 (+20), 11 (+31);
    # 23 is +43, past the range's width of 35.
    assert seen["train"] == {0, 11, 348}
    assert seen["val"] == seen["test"] == {0, 11, 23, 348}
    assert batch_degrees(data, "azimuth") <= {0, 11, 348}
    assert trained_degrees(data, "azimuth") == [0, 11, 348]
    # 2 training chairs x 3 azimuths x 2 elevations: the one missing render (azimuth 23,
    # elevation 30) is outside the range, whichever split its chair is in.
    assert len(data.split_info("train").rows) == 2 * 3 * 2


def test_a_periodic_range_wraps_around_the_turn():
    turn = FactorSpec("azimuth", tuple(math.radians(d) for d in (0, 90, 180, 270)), periodic=True)
    (front,) = parse_train_range({"azimuth": [270, 90]}, [turn])
    assert [round(math.degrees(v)) for v in front.kept_values()] == [0, 90, 270]
    values = np.array([[math.radians(d)] for d in (0, 45, 180, 300)])
    assert in_range([front], values, ["azimuth"]).tolist() == [True, True, False, True]
    assert str(front) == "3 of azimuth's 4 values (0 90 270 deg)"
    # A whole turn or more keeps every value, however its bounds are written.
    for bounds in ([-180, 180], [0, 360], [0, 400], [-200, 200]):
        (whole,) = parse_train_range({"azimuth": bounds}, [turn])
        assert len(whole.kept_values()) == 4, bounds
    (light,) = parse_train_range({"light": [1, 2]}, [FactorSpec("light", (0.0, 1.0, 2.0), unit="")])
    assert str(light) == "2 of light's 3 values (1 2)"


def test_a_range_that_leaves_training_one_value_says_so(tmp_path):
    """smallNORB's grid holds azimuths 20, 40 and 60, but the fixture renders only 0, 20 and
    340: [20, 60] passes the grid's check and leaves training one azimuth; the error names
    the range as the cause."""
    data = norb(
        write_norb(tmp_path / "norb"), tmp_path / "cache", train_range={"azimuth": [20, 60]}
    )
    with pytest.raises(
        ConfigError, match="single value in the train split .*within dataset.train_range"
    ):
        ready(data)


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


def wrapped_degrees(angles: torch.Tensor) -> torch.Tensor:
    """Radians -> degrees in [-180, 180), as an angle latent is read."""
    return torch.remainder(torch.rad2deg(angles) + 180.0, 360.0) - 180.0


def angle_fit(kept_degrees: list[float], reading) -> LatentFit:
    """The fit of a one-latent angle code that reads each kept value ``v`` (radians) as
    ``reading(v)``, wrapped into a turn, on a full-turn factor."""
    values = torch.deg2rad(torch.tensor(kept_degrees, dtype=torch.float64)).repeat(3)
    codes = reading(values)
    codes = torch.atan2(codes.sin(), codes.cos())[:, None]
    return LatentFit.fit(codes, values, [0], periodic=True, angular=True)


FRONT_HALF = [0.0, 30.0, 60.0, 90.0, 270.0, 300.0, 330.0]  # train_range [270, 90]


@pytest.mark.parametrize(
    ("reading", "expected"),
    [
        # A reader that reads the true angle: beyond the front half it is asked for the very
        # angle of the view, 120 / 180 / 240 degrees, not a point on the chord back through 0.
        (lambda v: v, {120: 120.0, 180: -180.0, 240: -120.0, 15: 15.0, 345: -15.0}),
        # A mirrored reader with an offset (latent = 40 degrees - v): the same, turned the
        # other way, as a learnt volume may read the turn.
        (lambda v: math.radians(40) - v, {120: -80.0, 180: -140.0, 240: 160.0, 345: 55.0}),
    ],
)
def test_an_angle_latent_is_carried_across_a_held_out_half_turn_the_way_it_turns(reading, expected):
    """A full-turn angle latent, fitted on the front half only: at a held-out value the fit
    gives the angle the reader's own rule gives (the knots' means joined round the circle in
    the direction the reading turns), where averaging and joining the raw latents would cross
    the wrap and send the back of the turn to the front (180 degrees read as 0)."""
    fit = angle_fit(FRONT_HALF, reading)
    for degrees, latent in expected.items():
        got = wrapped_degrees(fit.latents(math.radians(degrees)).double())
        assert float(got) == pytest.approx(latent, abs=1e-4), degrees
    plain = LatentFit.fit(
        torch.tensor([[math.radians(90)], [math.radians(-90)]]),
        torch.tensor([math.radians(90), math.radians(270)]),
        [0],
        periodic=True,
    )
    assert float(plain.latents(math.pi)) == pytest.approx(0.0, abs=1e-6)  # the chord


def test_an_angle_latent_is_averaged_on_the_circle_and_read_back_across_the_wrap():
    """Readings of 179 and -179 degrees of one view average to 180, not 0; and a code's latent
    of -160 degrees is read back as the value 200 degrees (the inverse fit on cos and sin)."""
    values = torch.deg2rad(torch.tensor([180.0, 180.0, 0.0, 0.0, 90.0, 270.0]))
    codes = torch.deg2rad(torch.tensor([[179.0], [-179.0], [1.0], [-1.0], [90.0], [-90.0]]))
    fit = LatentFit.fit(codes, values, [0], periodic=True, angular=True)
    assert abs(float(wrapped_degrees(fit.means[2]))) == pytest.approx(180.0, abs=1e-9)
    assert float(wrapped_degrees(fit.means[0])) == pytest.approx(0.0, abs=1e-9)
    read = fit.value(torch.tensor([math.radians(-160.0)]))
    assert math.degrees(read) == pytest.approx(200.0, abs=1.0)


class ContextRecorder:
    """A GQN stand-in for the query sweep: answers every query with its first context view and
    keeps the factor values of the context views it was shown."""

    device = torch.device("cpu")

    def __init__(self) -> None:
        self.shown: list[torch.Tensor] = []

    def render_views(self, context, known, query, samples=None, seed=None):
        self.shown.append(known.clone())
        return context[:, :1].expand(-1, query.shape[1], -1, -1, -1)


def test_the_query_sweep_of_a_ranged_run_takes_its_context_inside_the_range(cache_dir, tmp_path):
    """Trained on the middle three of five azimuths, the sweep's context views are those three,
    however many are asked for, and its columns are all five: the outer two are views the
    models never saw; without a range the context is drawn from every view."""
    from callbacks.query_sweep import QuerySweep

    ranged = ready(tiny_faces(cache_dir, train_range={"azimuth": [-43, 43]}))
    recorder = ContextRecorder()
    figures = QuerySweep(str(tmp_path), context=5, samples=1, dcign_ckpt=None).figures(
        ranged, recorder
    )
    for known in recorder.shown:
        assert sorted(set(np.round(known[..., 0].flatten().numpy(), 2))) == [-0.75, 0.0, 0.75]
    assert "from 3 context views inside dataset.train_range" in figures.pictures[0].caption
    full = ready(tiny_faces(cache_dir))
    recorder = ContextRecorder()
    QuerySweep(str(tmp_path), context=5, samples=1, dcign_ckpt=None).figures(full, recorder)
    assert recorder.shown[0].shape[1] == 5


def test_the_query_sweep_fits_dc_igns_map_inside_the_range_and_follows_it_beyond(
    cache_dir, tmp_path, monkeypatch
):
    """DC-IGN's row in the sweep of a ranged run is told the held-out views as novel_view.py
    --beyond tells them: its value -> latents map sees reference images inside the range only
    and is extrapolated beyond it."""
    import callbacks.query_sweep as query_sweep
    import dcign.run.restore as restore

    data = ready(tiny_faces(cache_dir, train_range={"azimuth": [-43, 43]}))
    model = IdentityStandIn(data)
    monkeypatch.setattr(restore, "load_checkpoint", lambda path: (model, {}))
    fitted = {}

    def for_dcign(network, reference, factors, extrapolate=False):
        fitted.update(reference=reference, extrapolate=extrapolate)
        return "renderer"

    monkeypatch.setattr(query_sweep.CodeRenderer, "for_dcign", staticmethod(for_dcign))
    sweep = query_sweep.QuerySweep(str(tmp_path), dcign_ckpt=str(tmp_path / "any.ckpt"))
    assert sweep._load_dcign(data) == "renderer"
    assert fitted["extrapolate"] is True
    assert fitted["reference"].factors[:, 0].abs().max() <= 0.75 + 1e-6
    assert len(fitted["reference"].factors) > 0


class IdentityStandIn:
    """What the query sweep reads of a DC-IGN checkpoint before fitting its map."""

    def __init__(self, data) -> None:
        self.hparams = type("HParams", (), {"net": {"image_size": 16, "channels": 1}})()
        self.layout = {name: [i] for i, name in enumerate(data.factor_names)}
        self.layout["intrinsic"] = [len(self.layout)]

    def eval(self):
        return self
