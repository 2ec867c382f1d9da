"""The explorer: its sliders' arithmetic, upload conversion, a session on a trained checkpoint,
the HTTP server through a client, and the page in a real (headless) Chromium."""

from __future__ import annotations

import base64
import copy
import io
import json
import math
import os
import re
import shutil
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from datamodules.image_conversion import ImageOptions, convert_file
from dcign.explorer import session as session_module
from dcign.explorer.controls import intrinsic_sliders
from dcign.explorer.server import ExplorerServer
from dcign.explorer.session import ExplorerSession, UploadError, convert_upload, png_data_url
from dcign.run.restore import load_checkpoint
from dcign.run.training import train
from dcign.scoring.latent_fit import LatentFit
from dcign.ship import SHIPPED
from tests.cli import QUIET
from tests.conftest import CONF, TINY, tiny_volume


# ----------------------------------------------------------------------------- sliders by hand
def test_latent_fit_maps_values_to_latents_and_back():
    values = torch.linspace(-1.5, 1.5, 31)
    codes = torch.stack([2 * values + 1, -values, torch.randn(31)], dim=1)
    fit = LatentFit.fit(codes, values, [0, 1], periodic=False)
    torch.testing.assert_close(fit.latents(0.5), torch.tensor([2.0, -0.5]))
    assert fit.value(torch.tensor([2.0, -0.5, 9.0])) == pytest.approx(0.5)
    edited = fit.apply(torch.zeros(3), -1.0)
    torch.testing.assert_close(edited, torch.tensor([-1.0, 1.0, 0.0]))


def test_periodic_fit_follows_a_circle():
    values = torch.linspace(0, 2 * math.pi, 37)[:-1]
    codes = torch.stack([values.cos(), values.sin()], dim=1)
    fit = LatentFit.fit(codes, values, [0, 1], periodic=True)
    torch.testing.assert_close(
        fit.latents(math.pi / 2), torch.tensor([0.0, 1.0]), atol=1e-6, rtol=0
    )
    assert fit.value(torch.tensor([-1.0, 0.0])) == pytest.approx(math.pi)


def test_a_fit_follows_an_arc_that_a_straight_line_would_cut_short():
    """A 2-d group tracing three quarters of a circle over a half turn of the head (as the
    default DC-IGN's azimuth group does): at each value of the data the fit gives that value's
    mean latents, and half way between two values the point half way between them."""
    values = torch.linspace(-1.5, 1.5, 15).repeat(3)
    angle = values * 1.5
    codes = torch.stack([angle.cos(), angle.sin()], dim=1)
    fit = LatentFit.fit(codes, values, [0, 1], periodic=False)
    for value in (-1.5, 0.0, 1.5):
        expected = torch.tensor([math.cos(1.5 * value), math.sin(1.5 * value)])
        torch.testing.assert_close(fit.latents(value), expected, atol=1e-6, rtol=0)
    step = 3.0 / 14
    half_way = fit.latents(step / 2)
    expected = 0.5 * (
        torch.tensor([1.0, 0.0]) + torch.tensor([math.cos(1.5 * step), math.sin(1.5 * step)])
    )
    torch.testing.assert_close(half_way, expected, atol=1e-6, rtol=0)


def test_intrinsic_directions_are_the_main_axes_in_standard_deviations():
    generator = torch.Generator().manual_seed(0)
    along = torch.randn(2000, generator=generator) * 3
    codes = torch.stack([along, along, 0.1 * torch.randn(2000, generator=generator)], dim=1)
    first, second = intrinsic_sliders(codes, [0, 1, 2], 2)
    assert abs(float(first.direction @ torch.tensor([1.0, 1.0, 0.0]))) == pytest.approx(
        math.sqrt(2), abs=1e-3
    )
    assert first.spread == pytest.approx(3 * math.sqrt(2), rel=0.05)
    assert second.spread < 0.2
    moved = first.apply(torch.zeros(3), 1.0)
    assert float(moved.norm()) == pytest.approx(first.spread, rel=1e-5)


# ----------------------------------------------------------------------------- uploads
def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def converter(**options):
    """A data set's conversion of an image file with these ImageOptions, as a tensor in [0, 1]."""
    return lambda source: torch.from_numpy(convert_file(source, ImageOptions(**options))) / 255.0


def test_upload_is_converted_as_the_data_set_converts_its_files():
    # A uniform colour (200, 100, 50) is gray 0.21*200 + 0.72*100 + 0.07*50 = 117.5 -> 118, and
    # inverted 255 - 117.5 = 137.5 -> 138, whatever the resizing.
    colour = np.zeros((40, 40, 3), dtype=np.uint8) + np.array([200, 100, 50], dtype=np.uint8)
    plain = convert_upload(_png(colour), converter(size=8))
    assert plain.shape == (1, 8, 8)
    assert torch.allclose(plain, torch.full_like(plain, 118 / 255))
    inverted = convert_upload(_png(colour), converter(size=8, invert=True))
    assert torch.allclose(inverted, torch.full_like(inverted, 138 / 255))
    # Not square: padded with the background (black) to a square, the object kept whole.
    wide = convert_upload(_png(np.full((10, 40, 3), 255, np.uint8)), converter(size=8))
    assert wide[0, 0].max() < 0.05 and wide[0, 4].min() > 0.95


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"just some text, not a picture", "not an image"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "not an image"),
    ],
)
def test_bad_uploads_get_a_clear_message(data, message):
    with pytest.raises(UploadError, match=message):
        convert_upload(data, converter(size=8))


def test_huge_uploads_are_refused_before_decoding(monkeypatch):
    monkeypatch.setattr(session_module, "MAX_UPLOAD_BYTES", 100)
    with pytest.raises(UploadError, match="MB"):
        convert_upload(b"x" * 101, converter(size=8))
    monkeypatch.setattr(session_module, "MAX_UPLOAD_PIXELS", 99)
    with pytest.raises(UploadError, match="pixels"):
        convert_upload(_png(np.zeros((10, 10, 3), np.uint8)), converter(size=8))


# ----------------------------------------------------------------------------- a session
def one_step_checkpoint(run: Path, cache_dir: Path, *overrides: str) -> Path:
    """A tiny run's checkpoint after one step: close to its random start, whose decodes still
    depend on the code (the tiny preset's full run can collapse, and then no slider changes a
    picture)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[
                *TINY,
                *QUIET,
                *overrides,
                "trainer.max_steps=1",
                f"paths.output_dir={run}",
                f"paths.cache_dir={cache_dir}",
            ],
        )
    train(cfg)
    return run / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, cache_dir) -> Path:
    return one_step_checkpoint(tmp_path_factory.mktemp("explorer-run"), cache_dir)


@pytest.fixture(scope="module")
def session(checkpoint, cache_dir) -> ExplorerSession:
    return ExplorerSession.from_checkpoint(
        str(checkpoint), cache_dir=str(cache_dir), gallery_size=6, reference_images=64
    )


def test_session_offers_a_slider_per_latent_group(session):
    info = session.info()
    keys = [slider["key"] for slider in info["sliders"]]
    assert keys[:3] == ["azimuth", "elevation", "light"]
    assert keys[3:] == ["intrinsic_1", "intrinsic_2", "intrinsic_3"]
    azimuth = info["sliders"][0]
    assert azimuth["unit"] == "deg" and azimuth["min"] == pytest.approx(-1.5 * 180 / math.pi)
    assert len(info["gallery"]) == 6 and info["truth"]
    assert info["networks"] == ["dcign", "baseline"]


def test_an_untouched_image_shows_its_reconstruction_and_its_own_truth(session):
    picked = session.pick("g2")
    image = session.gallery.images[2]
    with torch.no_grad():
        expected = session.model.decode(session.model.encode(image[None])[0])[0]
    assert picked["views"]["dcign"] == png_data_url(expected, 4)
    # The truth rendered at the image's own factor values is the image itself (the cache
    # stores the same renderer's output, rounded to 8 bits).
    truth = session._truth(session._get("g2"), {})
    assert float((truth - image).abs().max()) <= 1 / 255 + 1e-6
    start = picked["start"]
    factors = session.gallery.factors[2]
    assert start["azimuth"] == pytest.approx(math.degrees(float(factors[0])), abs=1e-4)


def test_moving_a_slider_edits_exactly_its_latents(session):
    start = session.pick("g1")
    picked = session._get("g1")
    azimuth = session.factor_sliders[0]
    # A value inside the data's range, away from the image's own azimuth.
    low, high = azimuth.low, azimuth.high
    own = math.radians(start["start"]["azimuth"])
    target = low + 0.2 * (high - low) if own > (low + high) / 2 else low + 0.8 * (high - low)
    codes, values = session._edited(picked, {"azimuth": math.degrees(target)})
    code, baseline_code = codes["dcign"], codes["baseline"]
    moved = list(azimuth.dcign.dims)
    others = [d for d in range(code.numel()) if d not in moved]
    torch.testing.assert_close(code[moved], azimuth.dcign.latents(target))
    torch.testing.assert_close(code[others], picked.codes["dcign"][others])
    assert values["azimuth"] == pytest.approx(target)
    baseline_dims = list(azimuth.comparisons["baseline"].dims)
    torch.testing.assert_close(
        baseline_code[baseline_dims], azimuth.comparisons["baseline"].latents(target)
    )
    # What the page shows is the decoded edited code, and the truth at the new azimuth.
    rendered = session.render("g1", {"azimuth": math.degrees(target)})
    with torch.no_grad():
        assert rendered["views"]["dcign"] == png_data_url(session.model.decode(code[None])[0], 4)
    assert rendered["truth"] != start["truth"]
    assert set(rendered["error"]) == {"dcign", "baseline"}
    with pytest.raises(UploadError, match="No slider"):
        session.render("g1", {"zoom": 1.0})
    with pytest.raises(UploadError, match="Unknown image"):
        session.render("g99", {})


class _Negated(torch.nn.Module):
    """A decoder whose logits are negated: its images are 1 - the wrapped decoder's."""

    def __init__(self, decoder: torch.nn.Module) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return -self.decoder(z)


def test_any_further_comparison_network_gets_its_own_view(cache_dir, monkeypatch):
    """A comparison network the explorer was never written for is shown and edited as the
    baseline is: here a twin of the baseline (same encoder, so the same chosen latents and
    the same edited code) whose decoder draws the negative image."""

    def with_twin(path: str):
        model, run_config = load_checkpoint(path)
        twin = copy.deepcopy(model.comparisons["baseline"])
        twin.decoder = _Negated(twin.decoder)
        model.comparisons["twin"] = twin
        return model, run_config

    monkeypatch.setattr(session_module, "load_checkpoint", with_twin)
    session = ExplorerSession.from_checkpoint(
        str(SHIPPED), cache_dir=str(cache_dir), gallery_size=2, reference_images=64
    )
    assert session.info()["networks"] == ["dcign", "baseline", "twin"]
    azimuth = session.factor_sliders[0]
    assert azimuth.comparisons["twin"].dims == azimuth.comparisons["baseline"].dims
    rendered = session.render("g0", {"azimuth": 30.0})
    baseline, twin = (_pixels(rendered["views"][name]) for name in ("baseline", "twin"))
    assert not np.array_equal(baseline, twin)
    assert np.abs(255 - baseline.astype(int) - twin.astype(int)).max() <= 1
    assert set(rendered["error"]) == {"dcign", "baseline", "twin"}


def _pixels(url: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",")[1]))))


def test_samples_and_sweeps(shipped):
    session = shipped
    samples = session.samples("g0", {}, count=8)
    assert len(samples["samples"]) == 8 and samples["max_std"] > 0
    gif, kind = session.sweep("g0", {}, "azimuth", 5, "gif")
    assert kind == "image/gif" and gif[:4] == b"GIF8"
    with Image.open(io.BytesIO(gif)) as animation:
        assert animation.n_frames == 5
    png, kind = session.sweep("g0", {}, "light", 4, "png")
    with Image.open(io.BytesIO(png)) as picture:
        size = session.datamodule.image_size
        scale = 128 // size
        assert picture.size == ((4 * (size + 1) + 1) * scale, (size + 2) * scale)
    with pytest.raises(UploadError, match="format"):
        session.sweep("g0", {}, "azimuth", 5, "bmp")


def test_an_upload_is_edited_like_a_gallery_image(shipped):
    session = shipped
    image = (session.gallery.images[3][0].numpy() * 255).round().astype(np.uint8)
    answer = session.upload(_png(image))
    assert answer["token"].startswith("u") and "truth" not in answer
    assert set(answer["start"]) >= {"azimuth", "elevation", "light"}
    moved = session.render(answer["token"], {"light": 40.0})
    assert moved["views"]["dcign"] != answer["views"]["dcign"]


# ----------------------------------------------------------------------------- the server
@pytest.fixture(scope="module")
def shipped(cache_dir) -> ExplorerSession:
    """The checkpoint shipped with the package (the default run), on its own data."""
    return ExplorerSession.from_checkpoint(
        str(SHIPPED), cache_dir=str(cache_dir), gallery_size=8, reference_images=256
    )


def test_a_slider_move_on_the_shipped_model_turns_the_head(shipped):
    start = shipped.pick("g0")
    azimuth = shipped.factor_sliders[0]
    far = azimuth.high if start["start"]["azimuth"] < 0 else azimuth.low
    moved = shipped.render("g0", {"azimuth": azimuth.to_display(far)})
    assert moved["views"]["dcign"] != start["views"]["dcign"] and moved["truth"] != start["truth"]
    # A model that learned azimuth re-renders the new view far better than the unchanged image.
    unchanged = _pixels(start["views"]["dcign"]) / 255
    truth = _pixels(moved["truth"]) / 255
    nochange = float(np.square(unchanged - truth).mean())
    assert moved["error"]["dcign"] < 0.5 * nochange


@pytest.fixture(scope="module")
def server(shipped):
    server = ExplorerServer(shipped, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _request(server, path: str, body: bytes | dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    request = urllib.request.Request(server.url.rstrip("/") + path, data=data)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_server_binds_locally_and_answers_through_a_client(server):
    assert server.server_address[0] == "127.0.0.1"
    status, info = _request(server, "/api/info")
    assert status == 200 and [s["key"] for s in info["sliders"]][:3] == [
        "azimuth",
        "elevation",
        "light",
    ]
    status, picked = _request(server, "/api/pick", {"token": "g0"})
    assert status == 200
    moved_to = picked["start"]["light"] + 50
    status, moved = _request(
        server, "/api/render", {"token": "g0", "positions": {"light": moved_to}}
    )
    assert status == 200 and moved["views"]["dcign"] != picked["views"]["dcign"]


def test_server_reports_a_bad_upload_and_keeps_serving(server):
    status, answer = _request(server, "/api/upload", b"%PDF-1.4 not an image")
    assert status == 400 and "not an image" in answer["error"]
    status, answer = _request(server, "/api/render", {"token": "g0", "positions": {"x": 1}})
    assert status == 400 and "No slider" in answer["error"]
    status, answer = _request(server, "/api/nothing", {})
    assert status == 404
    status, picked = _request(server, "/api/pick", {"token": "g1"})
    assert status == 200 and picked["views"]["dcign"].startswith("data:image/png;base64,")


# ----------------------------------------------------------------------------- the page
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_page_in_a_real_browser_re_renders_when_a_slider_moves(server, tmp_path):
    if CHROMIUM is None and not os.environ.get("DCIGN_REQUIRE_BROWSER"):
        pytest.skip("no system Chromium (apt-get install -y chromium); CI installs it")
    assert CHROMIUM is not None, "DCIGN_REQUIRE_BROWSER is set but Chromium is not installed"
    from playwright.sync_api import sync_playwright

    requested: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page()
        page.on("request", lambda request: requested.append(request.url))
        page.goto(server.url)
        # The pictures are built by the page's script after load: wait for them to exist.
        page.wait_for_function("document.getElementById('dcign')?.src?.startsWith('data:')")
        before = page.get_attribute("#dcign", "src")
        page.eval_on_selector(
            "#slider-azimuth",
            "input => { input.value = input.max; input.dispatchEvent(new Event('input')); }",
        )
        page.wait_for_function(f"document.getElementById('dcign').src !== {json.dumps(before)}")
        # Each picture's caption places the picked face among the test identities.
        caption = page.text_content("#dcign-caption")
        shot = tmp_path / "explorer.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    with Image.open(shot) as picture:
        assert picture.width > 600 and picture.height > 300
    assert re.search(r"MSE [0-9.]+, face [0-9]+ of [0-9]+", caption), caption
    # Offline by construction: every request went to the local server or was inline data.
    assert all(url.startswith((server.url, "data:")) for url in requested), requested


def test_server_refuses_an_upload_over_the_limit_before_reading_it(server, monkeypatch):
    from dcign.explorer import server as server_module

    monkeypatch.setattr(server_module, "MAX_UPLOAD_BYTES", 10)
    status, answer = _request(server, "/api/upload", b"x" * 100)
    assert status == 413 and "MB" in answer["error"]
    status, _ = _request(server, "/api/info")
    assert status == 200


def test_render_ranks_the_picked_face_among_the_test_identities(session, monkeypatch):
    """Each picture is placed in the line-up of every test identity at the view: a network that
    draws the picked face's true image ranks it first, one that draws another face does not."""
    picked = session._get("g1")
    lineup = session.datamodule.split_info("test").gallery.at(picked.factors[None])
    own = int((lineup.identity[0] == picked.identity).nonzero())
    other = (own + 1) % lineup.identity.shape[1]
    for name, index in (("dcign", own), ("baseline", other)):
        face = lineup.images[0, index]
        monkeypatch.setattr(session.model.networks[name], "decode", lambda z, f=face: f[None])
    rendered = session.render("g1", {})
    test_identities = len(session.datamodule.split_info("test").identities)
    assert rendered["lineup"] == test_identities
    assert rendered["rank"]["dcign"] == 1
    assert 2 <= rendered["rank"]["baseline"] <= test_identities


def test_a_3d_decoder_checkpoint_gets_the_same_sliders_and_turns_its_volume(
    tmp_path_factory, cache_dir
):
    """The explorer reads a model=dcign3d_learnt run as any other: one slider per latent group, and
    moving azimuth sets the one latent the volume turns by, and re-renders."""
    checkpoint = one_step_checkpoint(
        tmp_path_factory.mktemp("explorer-3d"), cache_dir, *tiny_volume("dcign3d_learnt")
    )
    session = ExplorerSession.from_checkpoint(
        str(checkpoint),
        cache_dir=str(cache_dir),
        gallery_size=4,
        reference_images=64,
    )
    keys = [slider["key"] for slider in session.info()["sliders"]]
    assert keys[:3] == ["azimuth", "elevation", "light"]
    session.pick("g0")
    azimuth = session.factor_sliders[0]
    assert azimuth.dcign.dims == (0,)
    codes, _ = session._edited(session._get("g0"), {"azimuth": math.degrees(azimuth.low)})
    torch.testing.assert_close(codes["dcign"][:1], azimuth.dcign.latents(azimuth.low))
    turned = session.render("g0", {"azimuth": math.degrees(azimuth.low)})
    assert turned["views"]["dcign"].startswith("data:image/png;base64,")
