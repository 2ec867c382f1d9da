"""Each benchmark script runs on a fresh setup (``--quick``) and reports what it claims.

The numbers themselves are machine-dependent and are not asserted; what is asserted is that
each script runs as documented, writes the fields the docs read, and that the FLOP counts agree
with the arithmetic of the architecture worked out by hand.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.conftest import ROOT, tiny_volume

pytestmark = pytest.mark.slow


def run_benchmark(name: str, out: Path, *extra: str) -> dict:
    """``python benchmarks/<name>.py --quick --out <out>`` from the project root; its JSON."""
    done = subprocess.run(
        [sys.executable, f"benchmarks/{name}.py", "--quick", "--out", str(out), *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


def conv_flops(c_in: int, c_out: int, kernel: int, size: int) -> int:
    """A same-padded convolution on a ``size x size`` map: 2 FLOPs per multiply-add."""
    return 2 * c_in * c_out * kernel * kernel * size * size


def test_flops_match_the_small_architecture_counted_by_hand(tmp_path):
    """Small preset at 32x32: convs 1-32-64 (3x3, max-pool after each), two 4096->32 heads;
    decoder 32->64x8x8, then upsample+conv 64->64 at 16, 64->32 at 32, 32->1."""
    report = run_benchmark("flops", tmp_path / "flops.json")
    small = report["presets"]["small"]["per_image"]
    encoder = conv_flops(1, 32, 3, 32) + conv_flops(32, 64, 3, 16) + 2 * (2 * 64 * 8 * 8 * 32)
    decoder = (
        2 * 32 * 64 * 8 * 8
        + conv_flops(64, 64, 3, 16)
        + conv_flops(64, 32, 3, 32)
        + conv_flops(32, 1, 3, 32)
    )
    assert small["encoder_forward"] == encoder == 10_551_296
    assert small["decoder_forward"] == decoder
    # Backward costs two forwards (input and weight gradients), except that the image itself
    # needs no gradient: the first convolution's input gradient is never computed.
    assert small["forward_backward"] == 3 * (encoder + decoder) - conv_flops(1, 32, 3, 32)
    # The default trains the entangled baseline alongside: two networks per image. DC-IGN's
    # line-up term adds two N x D x N products forward (its cosines' dot products and the
    # rivals' norms, 2 N^2 D FLOPs each) and three backward: 10 N^2 D a batch, 10 N D an image,
    # for N = 12 images (the faces' three groups of four) of D = 32 latents.
    images, latents = 12, 32
    line_up = 10 * images * latents
    # DC-IGN's detail term (the baseline trains without it): at each pyramid scale n (32, 16,
    # 8) a blur is two n x n by n x n products forward, 2 * 2 n^3 FLOPs, and as many backward
    # (the blur matrices need no gradient): 8 n^3 a scale, an image.
    detail = sum(8 * side**3 for side in (32, 16, 8))
    assert small["library_step"] == 2 * small["forward_backward"] + line_up + detail
    for preset in report["presets"].values():
        assert 0 < preset["fraction_of_peak"] < 2
    assert report["machine"]["torch_threads"] >= 1


def test_step_overhead_reports_both_variants_against_the_bare_loop(tmp_path):
    report = run_benchmark("step_overhead", tmp_path / "overhead.json", "--presets", "small")
    rates = report["presets"]["small"]["images_per_second"]
    assert set(rates) == {"dcign_only", "with_baseline"}
    for variant in rates.values():
        assert variant["lightning"]["median"] > 0 and variant["bare"]["median"] > 0
        assert len(variant["lightning"]["samples"]) == len(variant["bare"]["samples"]) >= 2
    small = report["presets"]["small"]
    for key, (low, high) in small["ratio_intervals_90"].items():
        assert low <= small["ratios"][key] <= high


def test_the_ratio_interval_is_the_bootstrap_of_the_median_by_hand(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import common

    # Rounds that all agree leave no doubt.
    assert common.paired_ratio_interval([1.1, 2.2, 3.3], [1.0, 2.0, 3.0]) == pytest.approx(
        (1.1, 1.1)
    )
    # Two rounds with ratios 1 and 2: a resample's median is 1 (p 1/4), 1.5 (1/2) or 2 (1/4),
    # so the 90% interval runs from 1 to 2, and a 50% one is the middle value alone.
    assert common.paired_ratio_interval([1.0, 4.0], [1.0, 2.0]) == pytest.approx((1.0, 2.0))
    assert common.paired_ratio_interval([1.0, 4.0], [1.0, 2.0], level=0.4) == pytest.approx(
        (1.5, 1.5)
    )


def test_data_path_compares_loading_and_rendering_with_training(tmp_path):
    report = run_benchmark("data_path", tmp_path / "data.json")
    ratios = report["over_training"]
    assert ratios["train"] == 1.0
    assert {"render", "load_workers0", "load_workers2"} <= set(ratios)
    assert report["met"] == {
        name: ratios[name] >= target for name, target in report["targets"].items()
    }


def test_time_to_quality_writes_the_curve(tmp_path):
    report = run_benchmark("time_to_quality", tmp_path / "ttq.json")
    records = report["records"]
    assert [record["epochs"] for record in records] == [1, 2]
    assert records[0]["minutes"] < records[1]["minutes"]
    assert all("val/equivariance/azimuth" in record for record in records)
    with Image.open(report["png"]) as image:
        assert image.width > 100 and image.height > 100


def test_quality_scores_every_seed_on_the_test_identities(tmp_path, cache_dir):
    report = run_benchmark(
        "quality", tmp_path / "quality.json", "--seeds", "2", "--workdir", str(tmp_path / "runs")
    )
    assert report["seeds"] == [0, 1]
    assert [run["seed"] for run in report["runs"]] == [0, 1]
    for run in report["runs"]:
        # The final weights of each seed's own run were scored, with the baseline beside.
        assert (tmp_path / "runs" / f"seed{run['seed']}" / "checkpoints" / "last.ckpt").is_file()
        for network in ("dcign", "baseline"):
            metrics = run["metrics"][network]
            assert {"novel_view_gain/azimuth", "equivariance/azimuth", "code_use"} <= set(metrics)
            assert {"identity_kept/azimuth", "novel_view_ssim/azimuth"} <= set(metrics)
    azimuth = report["summary"]["factors"]["azimuth"]
    kept = [run["metrics"]["dcign"]["identity_kept/azimuth"] for run in report["runs"]]
    assert azimuth["dcign/identity_kept"]["mean"] == pytest.approx(sum(kept) / 2)
    gains = [run["metrics"]["dcign"]["novel_view_gain/azimuth"] for run in report["runs"]]
    stats = azimuth["dcign/novel_view_gain"]
    assert stats["mean"] == pytest.approx(sum(gains) / 2)
    assert stats["worst"] == min(gains)
    assert stats["std"] == pytest.approx(abs(gains[0] - gains[1]) / 2**0.5)
    # The same runs scored again on groups of another shape: other pairs, the runs untouched.
    regrouped = run_benchmark(
        "quality",
        tmp_path / "regrouped.json",
        *("--seeds", "1", "--reuse", "--no-val", "--workdir", str(tmp_path / "runs")),
        *(
            "--eval-override",
            "+dataset.eval_group_size=2",
            "--eval-override",
            "+dataset.eval_groups_per_batch=4",
        ),
    )
    overrides = ["+dataset.eval_group_size=2", "+dataset.eval_groups_per_batch=4"]
    assert regrouped["eval_overrides"] == overrides
    pairs = "novel_view_nochange/azimuth"  # the error of not editing: set by the pairs alone
    first, again = report["runs"][0]["metrics"]["dcign"], regrouped["runs"][0]["metrics"]["dcign"]
    assert again[pairs] != first[pairs]
    assert set(report["summary"]["collapsed"]) == {"dcign", "baseline"}


def test_explorer_speed_times_slider_moves(tmp_path, cache_dir):
    report = run_benchmark("explorer_speed", tmp_path / "explorer.json")
    (size,) = report["sizes"].values()
    assert len(size["ms"]) == 10 and all(ms > 0 for ms in size["ms"])
    assert size["median_ms"] <= size["p95_ms"]


def test_novel_view_scores_every_model_on_the_same_pairs(tmp_path, cache_dir):
    report = run_benchmark(
        "novel_view",
        tmp_path / "nv.json",
        "--seeds",
        "1",
        "--scenes",
        "2",
        "--contexts",
        "1,2",
        "--workdir",
        str(tmp_path / "runs"),
    )
    azimuth = report["summary"]["azimuth"]
    assert set(azimuth) >= {"nochange", "DC-IGN", "baseline", "GQN"}
    assert set(azimuth["DC-IGN"]) == set(azimuth["GQN"]) == {"1", "2"}
    assert set(azimuth["baseline"]) == {"1"}  # a one-view model
    one = report["runs"][0]["scores"]["azimuth"]
    for model in ("DC-IGN", "baseline", "GQN"):
        mse = one[model]["1"]["mse"]
        # Reduction of the no-change error and PSNR follow from the MSE by their definitions.
        assert one[model]["1"]["reduction"] == pytest.approx(1 - mse / one["nochange"], rel=1e-6)
        assert one[model]["1"]["psnr"] == pytest.approx(-10 * math.log10(mse), rel=1e-6)
        # Fidelity beside the error: SSIM, identity kept, and the model given the true view.
        assert -1 <= one[model]["1"]["ssim"] <= 1 and 0 <= one[model]["1"]["kept"] <= 1
        assert set(one["own_view"][model]) == {"mse", "psnr", "ssim", "detail", "kept"}
        assert one[model]["1"]["detail"] <= 1
    # The line-up holds every test identity of the tiny faces (8 heads, a quarter for test).
    assert one["chance"] == 0.5
    assert one["nochange_scores"]["mse"] == one["nochange"]
    assert Image.open(report["plot"]).width == 3 * 300  # a panel per view factor
    assert report["wandb_dir"] and Path(report["wandb_dir"]).is_dir()


def test_export_writes_a_folder_the_folder_loader_reads_back(tmp_path, cache_dir):
    out = tmp_path / "faces"
    done = subprocess.run(
        [sys.executable, "benchmarks/export_faces.py", str(out), "--override", "debug=tiny"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    from datamodules.folder import FolderDataModule

    rows = (out / "faces.csv").read_text().splitlines()
    assert rows[0] == "path,identity,azimuth,elevation,light"
    degrees = {"unit": "deg"}
    folder = FolderDataModule(
        out / "faces.csv",
        factors={"azimuth": degrees, "elevation": degrees, "light": degrees},
        cache_dir=tmp_path / "cache",
        image_size=16,
    )
    # The tiny faces: 8 heads on a 4 x 3 x 3 grid, every view written once.
    assert len(rows) - 1 == 8 * 4 * 3 * 3
    assert [len(f.values) for f in folder.factors] == [4, 3, 3]
    assert folder.layout == {"azimuth": 1, "elevation": 1, "light": 1, "intrinsic": None}


def test_exported_heads_render_through_the_mesh_folder_loader(tmp_path, cache_dir):
    out = tmp_path / "heads"
    done = subprocess.run(
        [
            sys.executable,
            "benchmarks/export_faces.py",
            str(out),
            "--meshes",
            "--override",
            "debug=tiny",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    from datamodules.mesh_folder import MeshFolderDataModule

    assert len(list(out.glob("*.obj"))) == 8  # the tiny faces' 8 heads
    heads = MeshFolderDataModule(
        root=out, n_azimuth=4, image_size=16, group_size=2, cache_dir=tmp_path / "cache"
    )
    heads.prepare_data()
    heads.setup("fit")
    images = heads.sample_images("train", 4).images
    assert images.shape == (4, 1, 16, 16) and float(images.max()) > 0.2  # a lit head, not black


def test_novel_view_scores_a_volume_decoder_beyond_the_front_half_of_a_full_turn(tmp_path):
    """The 3D decoder on the chairs' full turn, trained on its front half: every model is
    scored at views of the back half (the targets held out), the volume's angle latent told
    them through its map on the circle (tests/test_train_range.py checks the map itself)."""
    report = run_benchmark(
        "novel_view",
        tmp_path / "nv.json",
        "--beyond",
        *("--seeds", "1", "--scenes", "2", "--contexts", "1", "--no-wandb"),
        *("--override", "dataset=chairs"),
        *("--override", "dataset.train_range={azimuth: [270, 90]}"),
        *(arg for override in tiny_volume() for arg in ("--dcign-override", override)),
        *("--workdir", str(tmp_path / "runs")),
    )
    assert report["beyond"]["azimuth"].startswith("15 of azimuth's 31 values")
    one = report["runs"][0]["scores"]["azimuth"]
    for model in ("DC-IGN", "baseline", "GQN"):
        assert math.isfinite(one[model]["1"]["mse"]) and 0 <= one[model]["1"]["kept"] <= 1


def test_every_model_is_rendered_from_the_same_views_and_scored_on_the_same_targets(
    monkeypatch, cache_dir
):
    """The novel-view benchmark hands every model the same context views and query factors at
    each M, and scores every answer against the same target; a model that answers with its
    first context view scores exactly the no-change bound."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import novel_view

    from datamodules.procedural import FacesDataModule
    from tests.conftest import ready

    datamodule = ready(
        FacesDataModule(
            n_identities=8,
            n_azimuth=4,
            n_elevation=2,
            n_light=2,
            image_size=16,
            group_size=4,
            split={"train": 4, "val": 2, "test": 2},
            cache_dir=cache_dir,
        )
    )
    calls: dict[str, list] = {}

    def first_context_view(name: str):
        def render(images, known, query):
            calls.setdefault(name, []).append((images.clone(), known.clone(), query.clone()))
            return images[:, :1]

        return render

    renderers = {
        "DC-IGN": (first_context_view("DC-IGN"), [1, 2]),
        "baseline": (first_context_view("baseline"), [1]),
        "GQN": (first_context_view("GQN"), [1, 2]),
    }
    results = novel_view.evaluate_seed(renderers, datamodule, ["azimuth"], [1, 2], count=4)
    # Calls per model: its render of the true view, then one per M.
    assert [len(c) for c in calls.values()] == [3, 2, 3]
    for dcign, gqn in zip(calls["DC-IGN"], calls["GQN"], strict=True):
        assert all(torch.equal(a, b) for a, b in zip(dcign, gqn, strict=True))
    for dcign, baseline in zip(calls["DC-IGN"][:2], calls["baseline"], strict=True):
        assert all(torch.equal(a, b) for a, b in zip(dcign, baseline, strict=True))
    azimuth = results["azimuth"]
    for model in ("DC-IGN", "baseline", "GQN"):
        scores = azimuth[model]["1"]
        assert scores["mse"] == azimuth["nochange"] and scores["reduction"] == 0.0
        assert scores["kept"] == azimuth["nochange_scores"]["kept"]


def test_decoder_speed_times_the_volume_decoders_beside_the_image_one(tmp_path, cache_dir):
    report = run_benchmark("decoder_speed", tmp_path / "decoders.json")
    results = report["results"]
    assert set(results) == {"image", "volume (learnt)", "volume (told)"}
    assert results["image"]["ratio_to_image"] == 1.0
    for result in results.values():
        samples = result["ms_per_step"]["samples"]
        assert len(samples) == report["schedule"]["rounds"] and min(samples) > 0
    # The volume decoder replaces the image decoder's weights with its own.
    assert results["volume (told)"]["dcign_parameters"] != results["image"]["dcign_parameters"]


def test_decoder_speed_times_a_variant_of_ones_own(tmp_path, cache_dir):
    """A user's variant joins the same rounds, is built with its own overrides (twice the
    volume's channels: more weights than the told preset's) and keeps them in the report."""
    report = run_benchmark(
        "decoder_speed",
        tmp_path / "decoders.json",
        "--variant",
        "told, 16 channels",
        "model=dcign3d",
        "model.net.volume_channels=16",
    )
    results = report["results"]
    wide = results["told, 16 channels"]
    assert wide["variant_overrides"] == ["model=dcign3d", "model.net.volume_channels=16"]
    assert len(wide["ms_per_step"]["samples"]) == report["schedule"]["rounds"]
    assert wide["dcign_parameters"] > results["volume (told)"]["dcign_parameters"]


@pytest.mark.parametrize(
    ("variant", "message"),
    [
        (["image", "model=dcign3d"], "that name is taken"),
        (["bare"], "needs one or more KEY=VALUE"),
        (["typo", "model.net.volume_channels"], "needs one or more KEY=VALUE"),
    ],
)
def test_decoder_speed_refuses_a_malformed_variant(tmp_path, variant, message):
    done = subprocess.run(
        [sys.executable, "benchmarks/decoder_speed.py", "--quick", "--variant", *variant],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0 and message in done.stderr


def test_score_speed_times_both_ways_and_finds_the_same_numbers(tmp_path):
    report = run_benchmark("score_speed", tmp_path / "scores.json", "--threads", "2")
    assert report["same_numbers"] is True
    for way in ("one after the other", "side by side"):
        samples = report["seconds"][way]["samples"]
        assert len(samples) == report["rounds"] and min(samples) > 0
    assert report["speed_up"] > 0


def test_lineup_blur_finds_every_unblurred_true_view_and_counts_every_image(tmp_path):
    """Unblurred, each true image is its own nearest (distance 0): identity kept 1. The quick
    faces hold 3 validation identities at 3 x 2 x 2 views: 36 images judged in 12 line-ups."""
    report = run_benchmark("lineup_blur", tmp_path / "blur.json", "--sigmas", "0", "1", "3")
    assert report["kept"]["0.0"] == 1.0
    assert report["cells"] == 12 and report["images_judged"] == 36
    assert report["lineup_size"] == {"min": 3, "max": 3}
    assert all(0.0 <= kept <= 1.0 for kept in report["kept"].values())


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--sigmas", "1", "-0.5"], "--sigmas must be >= 0"),
        (["--cells", "0"], "--cells must be >= 1"),
    ],
)
def test_lineup_blur_refuses_a_bad_argument(arguments, message):
    done = subprocess.run(
        [sys.executable, "benchmarks/lineup_blur.py", "--quick", *arguments],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and message in done.stderr


def test_lineup_blur_blurs_by_sigma_per_32_pixels_of_side(monkeypatch):
    """At 64x64 a line-up of a soft blob (identity 0) and that blob already blurred by 2 pixels
    (identity 1). Unblurred, the blob finds itself. Blurred by sigma 1 per 32 px of side, 2 px
    at 64, it becomes identity 1's image exactly and is lost; had sigma been read in plain
    pixels (1 px), the blob would stay nearer to itself (hand-checked distances 0.39 < 0.74).
    Identity 1 moves further from the blob as it blurs, so it is kept throughout."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import lineup_blur

    from dcign.scoring.fidelity import gaussian_blur

    dot = torch.zeros(1, 1, 64, 64)
    dot[..., 32, 32] = 1.0
    blob = gaussian_blur(dot, 1.5, 5)
    blob = blob / blob.max()
    lineup = torch.cat([blob, gaussian_blur(blob, 2.0, 6)])
    identity = torch.tensor([0, 1])
    unblurred, blurred = lineup_blur.kept_at_sigmas(lineup, identity, [0.0, 1.0])
    assert unblurred.tolist() == [True, True]
    assert blurred.tolist() == [False, True]
