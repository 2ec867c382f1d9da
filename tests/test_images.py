"""Image-file decoding: colour, crop, inversion, padding, transparency, and broken files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from datamodules.image_conversion import ImageOptions, read_rgb
from datamodules.image_files import convert_images
from datamodules.procedural import FacesDataModule
from datamodules.sources import BadFiles
from dcign.errors import ConfigError, UnreadableImageError

WHITE = (255, 255, 255)
ORANGE = (200, 100, 40)
# 0.21 * 200 + 0.72 * 100 + 0.07 * 40 = 42 + 72 + 2.8 = 116.8, and inverted 255 - 116.8 = 138.2.
ORANGE_GRAY = 117
ORANGE_INVERTED_GRAY = 138


def write(path: Path, pixels: np.ndarray) -> Path:
    Image.fromarray(pixels).save(path)
    return path


def rectangle(rows: slice, cols: slice, colour=ORANGE, size: int = 24) -> np.ndarray:
    """A ``size`` x ``size`` white picture with one ``colour`` rectangle."""
    pixels = np.full((size, size, 3), WHITE, dtype=np.uint8)
    pixels[rows, cols] = colour
    return pixels


def keep_all() -> BadFiles:
    return BadFiles(False, "image")


def test_gray_uses_the_paper_weights_and_rgb_keeps_the_colour(tmp_path):
    path = write(tmp_path / "orange.png", np.full((8, 8, 3), ORANGE, dtype=np.uint8))
    gray, kept = convert_images([path], ImageOptions(size=4), keep_all())
    assert gray.dtype == np.uint8 and gray.shape == (1, 1, 4, 4)
    assert np.all(gray == ORANGE_GRAY) and kept.tolist() == [0]
    rgb, _ = convert_images([path], ImageOptions(size=4, channels=3), keep_all())
    assert rgb.shape == (1, 3, 4, 4)
    for channel, value in enumerate(ORANGE):
        assert np.all(rgb[0, channel] == value)


def test_crop_and_invert_put_the_object_on_black_in_its_square(tmp_path):
    # Object rows 6..11, columns 6..17: larger side 12, border ceil(0.05 * 12) = 1 on each side,
    # so a 14-pixel square centred on the object: rows (6 + 12 - 14) // 2 = 2 .. 15 and columns
    # (6 + 18 - 14) // 2 = 5 .. 18. At image_size 14 nothing is resampled, so the object sits at
    # rows 4..9 and columns 1..12 of the output.
    path = write(tmp_path / "chair.png", rectangle(slice(6, 12), slice(6, 18)))
    options = ImageOptions(size=14, crop=True, invert=True, background=WHITE)
    images, _ = convert_images([path], options, keep_all())
    expected = np.zeros((14, 14), dtype=np.uint8)
    expected[4:10, 1:13] = ORANGE_INVERTED_GRAY
    np.testing.assert_array_equal(images[0, 0], expected)


def test_the_images_of_one_identity_share_one_crop_box(tmp_path):
    # Left half and right half of the same 6 x 12 object: their union is the box above.
    left = write(tmp_path / "left.png", rectangle(slice(6, 12), slice(6, 12)))
    right = write(tmp_path / "right.png", rectangle(slice(6, 12), slice(12, 18)))
    options = ImageOptions(size=14, crop=True, invert=True, background=WHITE)
    images, _ = convert_images([left, right], options, keep_all())
    expected = np.zeros((2, 14, 14), dtype=np.uint8)
    expected[0, 4:10, 1:7] = ORANGE_INVERTED_GRAY
    expected[1, 4:10, 7:13] = ORANGE_INVERTED_GRAY
    np.testing.assert_array_equal(images[:, 0], expected)


def test_without_crop_a_wide_image_is_padded_to_a_square(tmp_path):
    # 2 rows x 4 columns: the 4 x 4 square starts one row above the image; rows 0 and 3 are
    # background (black), rows 1 and 2 the image.
    pixels = np.full((2, 4, 3), ORANGE, dtype=np.uint8)
    images, _ = convert_images([write(tmp_path / "wide.png", pixels)], ImageOptions(4), keep_all())
    expected = np.zeros((4, 4), dtype=np.uint8)
    expected[1:3] = ORANGE_GRAY
    np.testing.assert_array_equal(images[0, 0], expected)


def test_transparent_pixels_take_the_background_colour(tmp_path):
    pixels = np.zeros((4, 4, 4), dtype=np.uint8)
    pixels[..., :3] = ORANGE
    pixels[:2, ..., 3] = 255  # the top half is opaque orange, the bottom half transparent
    path = write(tmp_path / "alpha.png", pixels)
    rgb = read_rgb(path, WHITE)
    np.testing.assert_array_equal(rgb[:2], np.full((2, 4, 3), ORANGE))
    np.testing.assert_array_equal(rgb[2:], np.full((2, 4, 3), WHITE))


def noise_png(path: Path) -> Path:
    """A PNG whose compressed data fills most of the file (noise does not compress)."""
    rng = np.random.default_rng(0)
    return write(path, rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))


def test_a_truncated_png_is_unreadable_even_when_pil_is_set_to_be_lenient(tmp_path, monkeypatch):
    path = noise_png(tmp_path / "cut.png")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(UnreadableImageError, match="truncated"):
        read_rgb(path, WHITE)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the user's setting is restored


@pytest.mark.parametrize("content", [b"not a png at all", None])
def test_a_corrupt_or_missing_file_is_unreadable(tmp_path, content):
    path = tmp_path / "broken.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UnreadableImageError):
        read_rgb(path, WHITE)


def test_an_unreadable_file_stops_with_its_name_or_is_skipped(tmp_path):
    good = write(tmp_path / "good.png", np.full((8, 8, 3), ORANGE, dtype=np.uint8))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ConfigError, match="broken.png.*skip_bad_files=true"):
        convert_images([good, broken], ImageOptions(4), keep_all())
    skipping = BadFiles(True, "image")
    images, kept = convert_images([broken, good], ImageOptions(4), skipping)
    assert kept.tolist() == [1] and len(images) == 1 and np.all(images == ORANGE_GRAY)
    assert skipping.summary()["skipped_files"] == 1
    only_broken, none_kept = convert_images([broken], ImageOptions(4), skipping)
    assert only_broken.shape == (0, 1, 4, 4) and len(none_kept) == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"channels": 2}, "dataset.channels must be 1 .gray. or 3 .RGB."),
        ({"background": [255, 255]}, "dataset.background must be an RGB colour"),
        ({"background": [0, 0, 256]}, "dataset.background must be an RGB colour"),
        ({"crop": "yes"}, "dataset.crop must be true or false"),
        ({"invert": 1}, "dataset.invert must be true or false"),
    ],
)
def test_bad_options(options, message):
    with pytest.raises(ConfigError, match=message):
        ImageOptions(size=8, **options)


def test_a_rendered_data_set_converts_an_image_file_plain_and_draws_any_view(tmp_path):
    # A render is gray, not cropped, on black: a uniform orange file is ORANGE_GRAY everywhere.
    faces = FacesDataModule(n_identities=4, n_azimuth=3, n_elevation=1, n_light=1, image_size=8)
    path = tmp_path / "orange.png"
    Image.new("RGB", (20, 10), ORANGE).save(path)
    image = faces.convert_image(path)
    assert image.shape == (1, 8, 8)
    # The short side is padded with black to a square: the top and bottom rows are black.
    # (Lanczos rings by a level or two next to the black edge.)
    assert image[0, 0].max() == 0
    assert image[0, 4, 4] == pytest.approx(ORANGE_GRAY / 255, abs=2 / 255)
    # Its renderer draws an identity at a view between the data's values.
    truth = faces.render_truth(1, {"azimuth": 0.1})
    assert truth.shape == (1, 8, 8) and 0 < truth.max() <= 1
    assert not torch.equal(truth, faces.render_truth(1, {"azimuth": 0.8}))
    assert faces.can_render
