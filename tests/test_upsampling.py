"""Decoder upsampling options: what each stage computes, sizes, bad values, old checkpoints."""

import pytest
import torch
from torch.nn import functional as F

from dcign.errors import ConfigError
from dcign.model.compatibility import check_compatible
from dcign.model.networks import (
    UPSAMPLING,
    WEIGHT_KEYS,
    Architecture,
    FitSize,
    InverseGraphicsNet,
    upsampling_stage,
)


def stage(mode: str, in_ch: int, out_ch: int, size: int, kernel: int = 3) -> torch.nn.Sequential:
    arch = Architecture(decoder_kernel=kernel, decoder_upsampling=mode)
    return torch.nn.Sequential(*upsampling_stage(arch, in_ch, out_ch, size))


def test_subpixel_stage_starts_as_nearest_unpooling_of_one_convolution():
    """ICNR: the four sub-pixels of a channel start equal, so the stage's first output is the
    low-resolution convolution (the first of each four filters) unpooled by repetition."""
    torch.manual_seed(0)
    layers = stage("subpixel", in_ch=3, out_ch=5, size=8)
    conv = layers[0]
    x = torch.randn(2, 3, 4, 4)
    low = F.conv2d(x, conv.weight[::4], conv.bias[::4], padding=1)
    expected = torch.relu(low.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3))
    assert torch.allclose(layers(x), expected, atol=1e-6)


def test_subpixel_shuffle_places_each_filter_at_its_own_sub_pixel():
    """After training the sub-pixels differ: filter 4c + 2i + j draws pixel (2y + i, 2x + j)."""
    layers = stage("subpixel", in_ch=1, out_ch=1, size=4, kernel=1)
    with torch.no_grad():
        layers[0].weight.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]).view(4, 1, 1, 1))
        layers[0].bias.zero_()
    x = torch.tensor([[1.0, 10.0], [100.0, 1000.0]]).view(1, 1, 2, 2)
    out = layers(x)[0, 0]
    assert out[0:2, 0:2].tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert out[2:4, 2:4].tolist() == [[1000.0, 2000.0], [3000.0, 4000.0]]


def test_transposed_stage_with_a_one_pixel_kernel_spreads_inputs_over_a_doubled_grid():
    """Stride 2, kernel 1: input (y, x) lands at (2y, 2x) times the weight; the rest is bias."""
    layers = stage("transposed", in_ch=1, out_ch=1, size=4, kernel=1)
    with torch.no_grad():
        layers[0].weight.fill_(2.0)
        layers[0].bias.fill_(0.5)
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
    expected = torch.full((4, 4), 0.5)
    expected[0::2, 0::2] = 2.0 * x[0, 0] + 0.5
    assert torch.equal(layers(x)[0, 0], expected)


def test_fit_size_copies_the_last_row_and_column_for_an_odd_mirrored_size():
    grid = torch.arange(16.0).view(1, 1, 4, 4)
    fitted = FitSize(5)(grid)[0, 0]
    assert fitted.shape == (5, 5)
    assert torch.equal(fitted[:4, :4], grid[0, 0])
    assert torch.equal(fitted[4, :4], grid[0, 0, 3])
    assert torch.equal(fitted[:4, 4], grid[0, 0, :, 3])


@pytest.mark.parametrize("mode", UPSAMPLING)
@pytest.mark.parametrize("image_size", [16, 19])
def test_every_option_draws_the_image_size_and_trains_every_weight(mode, image_size):
    """19 -> 9 -> 4 pools with a floor; each decoder must come back to exactly 19."""
    arch = Architecture(
        image_size=image_size,
        latent_dim=6,
        encoder_filters=(4, 4),
        decoder_filters=(4, 4),
        decoder_upsampling=mode,
    )
    net = InverseGraphicsNet(arch)
    mu, _ = net.encode(torch.rand(3, 1, image_size, image_size))
    logits = net.decode_logits(mu)
    assert logits.shape == (3, 1, image_size, image_size)
    logits.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.decoder.parameters())


def test_unknown_upsampling_names_the_choices():
    with pytest.raises(ConfigError, match="decoder_upsampling must be one of") as error:
        Architecture(decoder_upsampling="bilinear")
    assert "subpixel" in str(error.value)


def test_a_checkpoint_saved_before_the_option_counts_as_nearest():
    """Weights saved before ``decoder_upsampling`` existed were drawn by nearest unpooling:
    resuming them under that setting is allowed, under another refused by name."""
    sizes = {"latent_dim": 32, "encoder_filters": [16, 32, 64], "decoder_filters": [64, 32, 16]}
    old = {"net": sizes, "layout": None, "baseline": None}
    check_compatible(old, {**old, "net": {**sizes, "decoder_upsampling": "nearest"}}, WEIGHT_KEYS)
    with pytest.raises(ConfigError, match="trained with another model") as error:
        check_compatible(
            old, {**old, "net": {**sizes, "decoder_upsampling": "subpixel"}}, WEIGHT_KEYS
        )
    assert "model.net.decoder_upsampling: checkpoint 'nearest', this run 'subpixel'" in str(
        error.value
    )
