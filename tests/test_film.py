"""FiLM in the image decoder (model.net.decoder_film): what it computes, where it starts, what
trains, bad values and checkpoints saved before the option."""

import pytest
import torch

from dcign.errors import ConfigError
from dcign.model.compatibility import check_compatible
from dcign.model.networks import UPSAMPLING, WEIGHT_KEYS, Architecture, InverseGraphicsNet


def small_arch(**kwargs) -> Architecture:
    return Architecture(
        image_size=16, latent_dim=6, encoder_filters=(4, 5), decoder_filters=(5, 3), **kwargs
    )


@pytest.mark.parametrize("mode", UPSAMPLING)
def test_film_starts_as_the_plain_decoder_and_trains_every_weight(mode):
    """Zero-initialised: with the plain decoder's weights it draws exactly what that decoder
    draws; after one backward pass every weight of the decoder, the style's included, has a
    gradient (a zero style still passes the loss's gradient to its weights)."""
    torch.manual_seed(0)
    styled = InverseGraphicsNet(small_arch(decoder_film=True, decoder_upsampling=mode))
    plain = InverseGraphicsNet(small_arch(decoder_upsampling=mode))
    plain.load_state_dict(
        {k: v for k, v in styled.state_dict().items() if not k.startswith("decoder.style.")}
    )
    z = torch.randn(4, 6)
    assert torch.equal(styled.decode_logits(z), plain.decode_logits(z))
    styled.decode_logits(z).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in styled.decoder.parameters())


def test_film_scales_and_shifts_each_stage_before_its_relu_by_hand():
    """One channel everywhere, 1x1 kernels, a 4x4 image from a 2x2 start (one stage), one
    latent z. Hand-computed: the start is relu(w z (1 + a0 z) + b0 z), the stage relu(c h (1 +
    a1 z) + b1 z), the image d times that; each constant sits in a known weight."""
    arch = Architecture(
        image_size=4,
        latent_dim=1,
        encoder_filters=(1,),
        decoder_filters=(1,),
        decoder_kernel=1,
        decoder_film=True,
    )
    decoder = InverseGraphicsNet(arch).decoder
    w, a0, b0, c, a1, b1, d = 1.5, 0.5, -0.25, 2.0, -0.2, 1.0, 3.0
    with torch.no_grad():
        for p in decoder.parameters():
            p.zero_()
        decoder.project.weight.fill_(w)
        decoder.style.weight.copy_(torch.tensor([[a0], [b0], [a1], [b1]]))
        decoder.render[1].weight.fill_(c)
        decoder.render[3].weight.fill_(d)
    for z in (2.0, -1.0):
        start = max(w * z * (1 + a0 * z) + b0 * z, 0.0)
        stage = max(c * start * (1 + a1 * z) + b1 * z, 0.0)
        image = decoder(torch.tensor([[z]]))
        assert torch.allclose(image, torch.full((1, 1, 4, 4), d * stage))


def test_decoder_film_must_be_a_bool():
    with pytest.raises(ConfigError, match="model.net.decoder_film must be true or false"):
        Architecture(decoder_film="yes")


def test_a_checkpoint_saved_before_the_option_has_no_film():
    """Weights saved before ``decoder_film`` existed have no style: resuming them without FiLM
    is allowed, with it refused by name."""
    sizes = {"latent_dim": 32, "encoder_filters": [32, 64], "decoder_filters": [64, 32]}
    old = {"net": sizes, "layout": None, "baseline": None}
    check_compatible(old, {**old, "net": {**sizes, "decoder_film": False}}, WEIGHT_KEYS)
    named = "model.net.decoder_film: checkpoint False, this run True"
    with pytest.raises(ConfigError, match=named):
        check_compatible(old, {**old, "net": {**sizes, "decoder_film": True}}, WEIGHT_KEYS)
