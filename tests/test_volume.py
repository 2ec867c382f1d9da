"""The volume decoder: rotation, compositing, latent roles, the told pose, and its settings."""

import logging
import math

import numpy as np
import pytest
import torch

from dcign.batch import GroupedBatch, LabelledImages
from dcign.errors import ConfigError
from dcign.model.compatibility import check_compatible
from dcign.model.layout import LatentLayout
from dcign.model.networks import WEIGHT_KEYS, Architecture, InverseGraphicsNet
from dcign.model.pose_training import AngleRange, expected_batch_spread
from dcign.model.volume import (
    LatentRoles,
    composite,
    one_latent_per_pose,
    rotate_volume,
    rotation_matrices,
    voxel_shuffle,
)
from dcign.run.runtime import apply_memory_layout
from tests.test_model import TINY_NET, tiny_module

FACES_DEFAULT = {"azimuth": 2, "elevation": 1, "light": 1, "intrinsic": None}
VOLUME_NET = {**TINY_NET, "decoder": "volume", "volume_size": 8, "volume_channels": 2}
FACTORS = [
    {"name": name, "values": values, "periodic": False}
    for name, values in (
        ("azimuth", [-1.5, 0.0, 1.5]),
        ("elevation", [-0.5, 0.5]),
        ("light", [0.0]),
    )
]
POSE = {"_target_": "dcign.model.pose_training.PoseTraining"}


def roles(sizes: dict) -> LatentRoles:
    return LatentRoles.of(LatentLayout.from_sizes(sizes, 8))


def test_azimuth_turns_right_into_the_depth_and_elevation_tilts_down_into_it():
    """Hand-computed columns: a quarter turn of azimuth takes x to -depth, of elevation y to
    +depth; every rotation is orthonormal with determinant 1."""
    quarter, zero = torch.tensor([math.pi / 2]), torch.tensor([0.0])
    turn = rotation_matrices(quarter, zero)[0]
    tilt = rotation_matrices(zero, quarter)[0]
    assert torch.allclose(turn @ torch.tensor([1.0, 0, 0]), torch.tensor([0.0, 0, -1]), atol=1e-6)
    assert torch.allclose(tilt @ torch.tensor([0.0, 1, 0]), torch.tensor([0.0, 0, 1]), atol=1e-6)
    both = rotation_matrices(torch.tensor([0.3, -1.2]), torch.tensor([0.5, 0.1]))
    assert torch.allclose(both @ both.transpose(1, 2), torch.eye(3).expand(2, 3, 3), atol=1e-6)
    assert torch.allclose(torch.linalg.det(both), torch.ones(2), atol=1e-6)


def test_a_quarter_turn_moves_one_voxel_to_its_hand_computed_place_exactly():
    """In a 4^3 grid, voxel (d=2, h=1, w=3) sits at (x, y, z) = (0.75, -0.25, 0.25); a quarter
    turn of azimuth takes it to (z, y, -x) = (0.25, -0.25, -0.75): voxel (d=0, h=1, w=2). Voxel
    centres land on voxel centres, so the sampled volume is exactly one there, zero elsewhere."""
    volume = torch.zeros(1, 1, 4, 4, 4)
    volume[0, 0, 2, 1, 3] = 1.0
    turned = rotate_volume(volume, rotation_matrices(torch.tensor([math.pi / 2]), torch.zeros(1)))
    expected = torch.zeros_like(volume)
    expected[0, 0, 0, 1, 2] = 1.0
    assert torch.allclose(turned, expected, atol=1e-5)


def test_compositing_lets_an_opaque_voxel_hide_what_is_behind_it():
    """Per ray: an opaque voxel shows its feature alone; a half-transparent one (optical depth
    ln 2) in front of an opaque one shows 0.5 * front + 0.5 * back; an empty ray shows nothing.
    The depth seen is the weighted slice centre ((d + 0.5) / 4)."""
    density = torch.zeros(1, 1, 4, 1, 3)
    features = torch.zeros(1, 1, 4, 1, 3)
    density[0, 0, 1, 0, 0], features[0, 0, 1, 0, 0] = 50.0, 0.7
    density[0, 0, 2, 0, 0], features[0, 0, 2, 0, 0] = 50.0, 5.0  # hidden
    density[0, 0, 0, 0, 1], features[0, 0, 0, 0, 1] = math.log(2.0), 1.0
    density[0, 0, 3, 0, 1], features[0, 0, 3, 0, 1] = 50.0, 3.0
    image = composite(density, features)[0, :, 0]
    assert torch.allclose(image[0], torch.tensor([0.7, 2.0, 0.0]), atol=1e-6)
    assert torch.allclose(image[1], torch.tensor([1.0, 1.0, 0.0]), atol=1e-6)  # opacity
    assert torch.allclose(image[2], torch.tensor([0.375, 0.5, 0.0]), atol=1e-6)  # depth


def test_voxel_shuffle_puts_channel_8c_plus_4i_2j_k_at_sub_voxel_i_j_k():
    coarse = torch.arange(16.0).view(1, 16, 1, 1, 1)
    fine = voxel_shuffle(coarse)
    assert fine.shape == (1, 2, 2, 2, 2)
    for c, i, j, k in [(0, 0, 0, 1), (0, 1, 0, 0), (1, 0, 1, 0), (1, 1, 1, 1)]:
        assert fine[0, c, i, j, k] == 8 * c + 4 * i + 2 * j + k
    two = torch.zeros(1, 8, 1, 1, 2)
    two[0, 7, 0, 0, 1] = 1.0  # sub-voxel (1, 1, 1) of coarse voxel w = 1
    assert torch.nonzero(voxel_shuffle(two)).tolist() == [[0, 0, 1, 1, 3]]


def test_pose_groups_become_one_angle_each_and_the_rest_keeps_the_freed_latent():
    sizes = one_latent_per_pose(FACES_DEFAULT)
    assert sizes == {"azimuth": 1, "elevation": 1, "light": 1, "intrinsic": None}
    assert roles(sizes) == LatentRoles(
        azimuth=0, elevation=1, shape=tuple(range(3, 8)), shading=(2,)
    )
    chairs = roles(one_latent_per_pose({"azimuth": 2, "intrinsic": None}))
    assert (chairs.azimuth, chairs.elevation, chairs.shading) == (0, None, ())


@pytest.mark.parametrize(
    ("sizes", "words"),
    [
        ({"light": 1, "intrinsic": None}, "has neither"),
        ({"azimuth": 1, "light": 2, "elevation": 1, "shape": None}, "'intrinsic' latent group"),
        (FACES_DEFAULT, "model.layout.azimuth=1"),
    ],
)
def test_a_layout_the_volume_decoder_cannot_read_is_refused_by_name(sizes, words):
    with pytest.raises(ConfigError, match=words):
        roles(sizes)


@pytest.mark.parametrize(
    ("net", "words"),
    [
        ({"decoder": "voxels"}, "model.net.decoder must be one of"),
        ({"decoder": "volume", "volume_size": 6}, "multiple of 4"),
        ({"decoder": "volume", "volume_doublings": 3}, "volume_doublings is how many times"),
        ({"decoder": "volume", "volume_doublings": True}, "volume_doublings is how many times"),
        ({"decoder": "volume", "volume_doublings": 1.0}, "volume_doublings is how many times"),
        ({"decoder": "volume", "volume_doublings": 1, "volume_size": 7}, "multiple of 2"),
        ({"decoder": "volume", "volume_channels": 0}, "volume_channels must be >= 1"),
        ({"decoder": "volume", "volume_film": "yes"}, "volume_film must be true or false"),
        ({"decoder": "volume", "volume_mirror": 1}, "volume_mirror must be true or false"),
        ({"decoder": "volume", "volume_film_shape": "no"}, "volume_film_shape must be true or"),
        ({"decoder": "volume", "volume_render_filters": [64]}, "two or more positive ints"),
        ({"decoder": "volume", "volume_render_filters": [64, 0]}, "two or more positive ints"),
        ({"decoder": "volume", "volume_render_filters": 64}, "two or more positive ints"),
        ({"decoder": "volume", "volume_held_elevation": "above"}, "'data' .* or degrees"),
        ({"decoder": "volume", "volume_held_elevation": 120}, "within \\[-90, 90\\]; got 120"),
        ({"decoder": "volume", "volume_held_elevation": True}, "volume_held_elevation is"),
        ({"decoder": "volume", "volume_turn_reading": "ellipse"}, "volume_turn_reading must be"),
        (
            {
                "decoder": "volume",
                "image_size": 16,
                "volume_size": 8,
                "volume_render_filters": [8, 4, 4, 2],
            },
            r"double the volume's grid \(8\) 2 times .* to 32, past dataset.image_size=16",
        ),
    ],
)
def test_bad_volume_settings_name_the_option(net, words):
    with pytest.raises(ConfigError, match=words):
        Architecture(**net)


def volume_net(layout: dict | None = None, **net) -> InverseGraphicsNet:
    """A tiny volume network on ``layout`` (default: the faces', pose groups one angle each)."""
    settings = {k: v for k, v in VOLUME_NET.items() if k != "_target_"} | net
    sizes = layout or one_latent_per_pose(FACES_DEFAULT)
    return InverseGraphicsNet(Architecture(**settings), roles(sizes))


@pytest.mark.parametrize(("doublings", "voxel", "low", "high"), [(1, 2, 2, 7), (2, 1, 2, 9)])
def test_one_projected_voxel_changes_the_volume_where_its_doublings_carry_it(
    doublings, voxel, low, high
):
    """Raise one voxel of the grid the code's projection fills (a 16-voxel volume grows from
    8^3 in one doubling, from 4^3 in two) and see which voxels of the volume change. One
    doubling: the 3x3x3 convolution on the 8-grid reaches voxels 1-3 around voxel 2, volume
    voxels 2-7 after the sub-voxel split. Two: voxel 1 of the 4-grid unpools to 2-3 of an
    8-grid, the convolution reaches 1-4, volume voxels 2-9. So one doubling lets the code
    place detail twice as finely (8^3 start voxels against 4^3)."""
    torch.manual_seed(0)
    decoder = volume_net(volume_size=16, volume_doublings=doublings).decoder
    wide, start = decoder.start
    assert start == 16 // 2**doublings and decoder.project.out_features == wide * start**3
    z = torch.randn(1, 8)
    before = decoder.volume(z)
    with torch.no_grad():
        # channel 0 of the start voxel (voxel, voxel, voxel), in [wide, s, s, s] order
        decoder.project.bias[(voxel * start + voxel) * start + voxel] += 10.0
    changed = ((decoder.volume(z) - before).abs().amax(dim=(0, 1)) > 0).nonzero()
    for axis in range(3):
        assert changed[:, axis].min() == low and changed[:, axis].max() == high


def test_the_pose_reaches_the_image_only_as_a_rotation():
    """A full turn of either angle draws the same image; half a turn draws another; every
    weight of the volume decoder gets a gradient."""
    torch.manual_seed(0)
    net = volume_net()
    z = torch.randn(3, 8)
    for latent in (0, 1):
        turned = z.clone()
        turned[:, latent] += 2 * math.pi
        assert torch.allclose(net.decode(z), net.decode(turned), atol=1e-5)
    half = z.clone()
    half[:, 0] += math.pi
    assert (net.decode(z) - net.decode(half)).abs().max() > 1e-3
    net.decode_logits(z).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.decoder.parameters())


@pytest.mark.parametrize(("film", "film_shape"), [(False, True), (True, True), (True, False)])
def test_film_lets_the_shape_code_style_the_renderer_and_never_the_pose(film, film_shape):
    """FiLM starts as the plain renderer. An empty volume projects nothing, so what is drawn
    then comes from the light latent and the style alone: a new shape code changes the image
    only with FiLM styled by the shape (``volume_film_shape``), and a new azimuth never does
    (the style is pose-free)."""
    torch.manual_seed(0)
    decoder = volume_net(volume_film=film, volume_film_shape=film_shape).decoder
    z = torch.randn(2, 8)
    if film:
        styled = decoder(z)
        decoder.style, style = None, decoder.style
        assert torch.equal(styled, decoder(z))
        decoder.style = style
        torch.nn.init.normal_(decoder.style.weight)
    with torch.no_grad():
        decoder.grow[-1].weight.zero_()
        decoder.grow[-1].bias.zero_()
        decoder.grow[-1].bias[:8] = -40.0  # the density's eight sub-voxels: softplus ~ 0
    reshaped, turned = z.clone(), z.clone()
    reshaped[:, 3:] = torch.randn(2, 5)
    turned[:, 0] += 1.0
    relit = z.clone()
    relit[:, 2] += 1.0
    assert torch.allclose(decoder(z), decoder(turned), atol=1e-6)
    assert torch.allclose(decoder(z), decoder(reshaped), atol=1e-6) is not (film and film_shape)
    assert not torch.allclose(decoder(z), decoder(relit), atol=1e-6)


def test_a_style_without_the_shape_needs_shading_latents():
    """A layout of pose and shape alone (the chairs') leaves nothing to style the renderer
    once the shape is taken out of the style: refused by name, not a FiLM of no inputs."""
    chairs = {"azimuth": 1, "elevation": 1, "intrinsic": None}
    with pytest.raises(ConfigError, match="volume_film_shape=false .* has none"):
        volume_net(chairs, volume_film=True, volume_film_shape=False)


def projection(volume: torch.Tensor, azimuth: float, elevation: float) -> torch.Tensor:
    """What the 2D renderer is given of ``volume`` turned by the two angles."""
    turned = rotate_volume(
        volume, rotation_matrices(torch.tensor([azimuth]), torch.tensor([elevation]))
    )
    return composite(turned[:, :1], turned[:, 1:])


@pytest.mark.parametrize("mirror", [False, True])
def test_a_mirrored_volume_turned_left_projects_the_mirror_image_of_it_turned_right(mirror):
    """A mirror across x = 0 conjugates a turn by ``a`` into a turn by ``-a`` and leaves a tilt
    as it is, so a symmetric volume turned by ``(a, e)`` projects exactly the left-right mirror
    of its projection turned by ``(-a, e)`` (features, opacity and depth alike); the grid is
    symmetric about x = 0, so trilinear sampling keeps it exact. A volume that is not mirrored
    has no reason to."""
    torch.manual_seed(0)
    decoder = volume_net(volume_mirror=mirror).decoder
    volume = decoder.volume(torch.randn(1, 8)).detach()
    assert torch.equal(volume, volume.flip(-1)) is mirror
    left, right = projection(volume, 0.6, 0.3), projection(volume, -0.6, 0.3)
    assert torch.allclose(left, right.flip(-1), atol=1e-5) is mirror


def test_the_renderer_takes_its_widths_or_the_last_two_of_the_decoder_s():
    """Two convolutions at the volume's grid, one at the image's, one to the image channels."""

    def widths(net: InverseGraphicsNet) -> list[int]:
        return [
            layer.out_channels for layer in net.decoder.render if hasattr(layer, "out_channels")
        ]

    assert widths(volume_net(decoder_filters=[7, 3])) == [7, 7, 3, 1]
    assert widths(volume_net(decoder_filters=[7, 3], volume_render_filters=[6, 5])) == [6, 6, 5, 1]


def test_more_render_widths_grow_the_grid_in_doublings_to_the_image():
    """A 4-voxel grid at 16x16 with three widths: two convolutions at 4x4, one at 8x8 after a
    doubling, one at 16x16, then the image channel."""
    net = volume_net(volume_size=4, volume_render_filters=[6, 5, 3], volume_film=True)
    sizes, widths = [], []
    for layer in net.decoder.render:
        if isinstance(layer, torch.nn.Conv2d):
            layer.register_forward_hook(lambda _, __, out: sizes.append(out.shape[-1]))
            widths.append(layer.out_channels)
    image = net.decode(torch.randn(2, 8))
    assert image.shape == (2, 1, 16, 16)
    assert widths == [6, 6, 5, 3, 1] and sizes == [4, 4, 8, 16, 16]
    # FiLM styles every hidden stage: a scale and a shift for each of 6 + 6 + 5 + 3 channels.
    assert net.decoder.style.out_features == 2 * (6 + 6 + 5 + 3)


def test_two_render_widths_keep_the_layer_names_of_saved_checkpoints():
    """Checkpoints trained before the renderer took more widths name its layers 0, 2, 5, 7."""
    decoder = volume_net(volume_render_filters=[6, 5]).decoder
    names = {key.split(".")[1] for key in decoder.state_dict() if key.startswith("render.")}
    assert names == {"0", "2", "5", "7"}


def volume_module(**kwargs):
    return tiny_module(net=VOLUME_NET, layout=FACES_DEFAULT, factors=FACTORS, **kwargs)


def test_a_volume_dcign_reads_one_angle_per_pose_group_and_its_baseline_draws_images():
    module = volume_module()
    assert module.layout["azimuth"] == [0] and module.layout["intrinsic"] == [3, 4, 5, 6, 7]
    assert type(module.baseline.decoder).__name__ == "Decoder"


def grouped_batch() -> GroupedBatch:
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(2, 3, 1, 16, 16, generator=generator)
    factors = torch.rand(2, 3, 3, generator=generator)
    return GroupedBatch(images, factors, torch.zeros(2, 3, dtype=torch.long), torch.tensor([0, 3]))


def plain_objective(module, batch: GroupedBatch):
    """The objective's loss through the network's own encoder and decoder, no pose term."""
    active = module.active_masks[batch.group_type]
    noise = torch.zeros(*batch.images.shape[:2], 8)
    return module.objective.loss(
        module.dcign.encode, module.dcign.decode_logits, batch.images, active, noise
    )


def test_told_the_pose_the_decoder_turns_by_the_data_and_the_encoder_learns_to_read_it():
    """The decoder sees each image's true azimuth and elevation in place of its pose latents;
    the added term is the encoder's squared angle error, averaged over images."""
    module = volume_module(
        pose={
            "_target_": "dcign.model.pose_training.PoseTraining",
            "source": "told",
            "weight": 10.0,
        }
    )
    batch = grouped_batch()
    seen = []
    decode = module.dcign.decoder.forward
    module.dcign.decoder.forward = lambda z: seen.append(z.detach()) or decode(z)
    parts = module.dcign_loss(batch, deterministic=True)
    truth = batch.factors.flatten(0, 1)[:, :2]
    assert torch.equal(seen[0][:, :2], truth)
    mu = module.dcign.encode(batch.images.flatten(0, 1))[0][:, :2]
    assert torch.allclose(parts.pose, (mu - truth).square().sum(1).mean(), atol=1e-6)
    learnt = plain_objective(module, batch)
    assert not torch.equal(seen[-1][:, :2], truth)  # the learnt path decodes the encoder's
    assert learnt.pose is None


def test_pose_training_needs_a_volume_decoder_and_the_data_s_angles():
    told = {**POSE, "source": "told"}
    with pytest.raises(ConfigError, match="model.net.decoder=volume"):
        tiny_module(pose=told)
    with pytest.raises(ConfigError, match=r"factors are \['light'\]"):
        tiny_module(net=VOLUME_NET, layout=FACES_DEFAULT, pose=told, factors=[{"name": "light"}])
    with pytest.raises(ConfigError, match="model.pose.source must be one of"):
        volume_module(pose={**told, "source": "labels"})


def front_voxel_row(held: float, azimuth: float, monkeypatch) -> float:
    """The row (in voxels, down from the top) where the chairs' volume decoder, told to hold
    the elevation at ``held`` degrees, shows one opaque voxel block in front of the centre,
    turned by ``azimuth``: the opacity's centre of mass in what its 2D renderer is given."""
    decoder = volume_net({"azimuth": 1, "intrinsic": None}, volume_size=16).decoder
    decoder.held_elevation = math.radians(held)
    volume = torch.zeros(1, 3, 16, 16, 16)  # density, then two features; [N, C, D, H, W]
    volume[0, 0, 1, 7:9, 7:9] = 50.0  # depth slice 1 of 16 faces the camera: z = -0.8125
    monkeypatch.setattr(decoder, "volume", lambda z: volume)
    monkeypatch.setattr(decoder, "draw", lambda h, z: h)
    z = torch.zeros(1, 8)
    z[0, decoder.roles.azimuth] = azimuth
    opacity = decoder(z)[0, 2]
    rows = torch.arange(16, dtype=torch.float32) + 0.5
    return float((opacity.sum(dim=1) * rows).sum() / opacity.sum())


def test_without_an_elevation_group_the_volume_turns_about_an_axis_tilted_by_the_held_one(
    monkeypatch,
):
    """Seen from 25 degrees above, a point in front of the centre (z = -0.8125 of the
    half-size) shows 16 / 2 * sin(25 deg) * 0.8125 = 2.75 voxels below the centre row, and
    half a turn takes it behind, 2.75 above: 5.49 rows apart. Held at 0 (the image's own
    vertical) the turn leaves its row where it was."""
    lift = 16 / 2 * math.sin(math.radians(25.0)) * 0.8125
    assert front_voxel_row(25.0, 0.0, monkeypatch) == pytest.approx(8 + lift, abs=0.3)
    assert front_voxel_row(25.0, math.pi, monkeypatch) == pytest.approx(8 - lift, abs=0.3)
    assert front_voxel_row(0.0, 0.0, monkeypatch) == pytest.approx(8.0, abs=0.3)
    assert front_voxel_row(0.0, math.pi, monkeypatch) == pytest.approx(8.0, abs=0.3)


def test_the_held_elevation_is_the_mean_of_the_data_s_and_an_elevation_group_overrides_it():
    chairs = [
        {"name": "azimuth", "values": [0.0, 3.0], "periodic": True},
        {"name": "elevation", "values": [math.radians(20.0), math.radians(30.0)]},
    ]
    data = Architecture(volume_held_elevation="data")
    assert data.for_data(chairs).volume_held_elevation == pytest.approx(25.0)
    assert data.for_data(chairs[:1]).volume_held_elevation == 0.0
    assert data.for_data(None).volume_held_elevation == 0.0
    assert Architecture(volume_held_elevation=-10).for_data(chairs).volume_held_elevation == -10
    # Through the module, as a run builds it: the chairs' layout holds 25 degrees ...
    net = {**VOLUME_NET, "volume_held_elevation": "data"}
    module = tiny_module(net=net, layout={"azimuth": 2, "intrinsic": None}, factors=chairs)
    z = torch.zeros(2, 8)
    assert torch.allclose(module.dcign.decoder.angles(z)[1], torch.full((2,), math.radians(25.0)))
    # ... and a layout with an elevation group turns by its own latent.
    faces = tiny_module(net=net, layout=FACES_DEFAULT, factors=chairs)
    z[:, faces.layout["elevation"][0]] = 0.3
    assert torch.equal(faces.dcign.decoder.angles(z)[1], torch.full((2,), 0.3))


def test_older_checkpoints_are_image_decoders_and_a_volume_one_is_refused_by_name():
    old = {"net": {"latent_dim": 8}, "layout": FACES_DEFAULT, "baseline": None}
    check_compatible(old, {**old, "net": {"latent_dim": 8, "decoder": "image"}}, WEIGHT_KEYS)
    with pytest.raises(ConfigError, match="model.net.decoder: checkpoint 'image'"):
        check_compatible(old, {**old, "net": {"latent_dim": 8, "decoder": "volume"}}, WEIGHT_KEYS)


def test_volumes_saved_before_their_doublings_were_an_option_grew_in_two():
    old = {"net": {"latent_dim": 8, "decoder": "volume"}, "layout": FACES_DEFAULT, "baseline": None}
    net = old["net"]
    check_compatible(old, {**old, "net": {**net, "volume_doublings": 2}}, WEIGHT_KEYS)
    with pytest.raises(ConfigError, match="model.net.volume_doublings: checkpoint 2"):
        check_compatible(old, {**old, "net": {**net, "volume_doublings": 1}}, WEIGHT_KEYS)


CHAIRS = [
    {"name": "azimuth", "values": [0.0, 3.0], "periodic": True},
    {"name": "elevation", "values": [math.radians(20.0), math.radians(30.0)]},
]


def chairs_module(**net):
    settings = {**VOLUME_NET, "volume_held_elevation": "data", **net}
    return tiny_module(net=settings, layout={"azimuth": 2, "intrinsic": None}, factors=CHAIRS)


def test_volumes_saved_before_the_held_elevation_turned_upright_and_resume_under_another():
    """The held tilt shapes no weight, so a checkpoint resumes under any; one saved before the
    key existed was trained turning about the image's vertical, and is read so."""
    module = chairs_module()
    assert module.dcign.decoder.held_elevation == pytest.approx(math.radians(25.0))
    saved = dict(module.hparams)
    saved["net"] = {k: v for k, v in saved["net"].items() if k != "volume_held_elevation"}
    check_compatible(saved, module.hparams, WEIGHT_KEYS)
    module.on_load_checkpoint({"hyper_parameters": saved})
    assert module.dcign.decoder.held_elevation == 0.0


def test_a_full_turn_is_read_as_the_direction_of_two_outputs_of_its_own():
    """With the circle reading the azimuth latent is atan2 of the turn head's two outputs:
    set to (cos a, sin a), it reads a exactly, on both sides of the half turn; the other
    latents are the plain linear ones. Only a periodic pose factor of a volume DC-IGN gets the
    head: not the faces' bounded azimuth, not the line reading, not the baseline."""
    module = chairs_module()
    encoder = module.dcign.encoder
    assert encoder.turn.out_features == 2 and encoder.turn_latents.tolist() == [0]
    x = torch.rand(3, 1, 16, 16)
    with torch.no_grad():
        for degrees in (170.0, 180.0, -170.0, -5.0):
            a = math.radians(degrees)
            encoder.turn.weight.zero_()
            encoder.turn.bias.copy_(torch.tensor([math.cos(a), math.sin(a)]))
            mu, _ = encoder(x)
            assert torch.allclose(mu[:, 0], torch.full((3,), a), atol=1e-5)
            assert torch.equal(mu[:, 1:], encoder.mu(encoder.features(x).flatten(1))[:, 1:])
    assert chairs_module(volume_turn_reading="line").dcign.encoder.turn is None
    assert module.baseline.encoder.turn is None
    faces = tiny_module(net=VOLUME_NET, layout=FACES_DEFAULT, factors=FACTORS)
    assert faces.dcign.encoder.turn is None


def angle_images(angles: torch.Tensor) -> torch.Tensor:
    """16x16 images of a bright blob on a circle of radius 5 about the centre, at ``angles``:
    an image that shows its angle on both sides of the half turn alike."""
    grid = torch.arange(16, dtype=torch.float32) - 7.5
    x = 5 * torch.cos(angles)[:, None, None]
    y = 5 * torch.sin(angles)[:, None, None]
    blob = torch.exp(-((grid[None, None, :] - x) ** 2 + (grid[None, :, None] - y) ** 2) / 4)
    return blob[:, None]


def half_turn_error(reading: str) -> float:
    """Degrees of the encoder's largest error within 20 degrees of the half turn, after 300
    steps of the told term (the wrapped squared error) on blobs at random angles."""
    torch.manual_seed(0)
    encoder = chairs_module(volume_turn_reading=reading).dcign.encoder
    optimizer = torch.optim.Adam(encoder.parameters(), lr=0.01)
    for _ in range(300):
        truth = (torch.rand(64) * 2 - 1) * math.pi
        read = encoder(angle_images(truth))[0][:, 0]
        error = torch.remainder(read - truth + math.pi, 2 * math.pi) - math.pi
        optimizer.zero_grad()
        error.square().mean().backward()
        optimizer.step()
    near = torch.linspace(160.0, 200.0, 9).deg2rad()
    with torch.no_grad():
        read = encoder(angle_images(near))[0][:, 0]
    error = torch.remainder(read - near + math.pi, 2 * math.pi) - math.pi
    return float(error.abs().max().rad2deg())


def test_the_circle_reads_the_half_turn_that_the_line_cannot():
    """A blob on a circle shows its angle equally well at every value; read by one linear
    output the angle must jump from +180 to -180 degrees between two nearly equal images,
    and misses by tens of degrees there; read as a direction it does not."""
    assert half_turn_error("circle") < 10.0
    assert half_turn_error("line") > 30.0


def test_checkpoints_saved_before_the_circle_reading_read_a_line_and_a_line_run_refuses_one():
    """Whether a checkpoint reads a circle is in its weights (the turn head's)."""
    line, circle = chairs_module(volume_turn_reading="line"), chairs_module()
    module = chairs_module()
    module.on_load_checkpoint({"hyper_parameters": circle.hparams, "state_dict": line.state_dict()})
    assert module.dcign.encoder.turn is None
    module.load_state_dict(line.state_dict())
    with pytest.raises(ConfigError, match="encoder reads full-turn angles as a circle"):
        line.on_load_checkpoint(
            {"hyper_parameters": circle.hparams, "state_dict": circle.state_dict()}
        )


def test_channels_last_converts_the_image_weights_and_leaves_the_3d_ones():
    module = volume_module()
    apply_memory_layout(module, channels_last=True)
    weights = {p.dim(): p for p in module.parameters() if p.dim() in (4, 5)}
    assert weights[4].is_contiguous(memory_format=torch.channels_last)
    assert weights[5].is_contiguous()


def test_the_angle_slope_is_the_least_squares_slope_of_one_latent_on_a_bounded_value():
    from dcign.scoring.metrics import Equivariance

    values = torch.linspace(-1.5, 1.5, 15)
    bounded = Equivariance()
    bounded.update((0.2 * values + 3.0)[:, None], values)
    assert float(bounded.slope()) == pytest.approx(0.2)
    turn = Equivariance(periodic=True)
    turn.update(values[:, None], values)
    pair = Equivariance()
    pair.update(torch.stack([values, values], dim=1), values)
    assert math.isnan(float(turn.slope())) and math.isnan(float(pair.slope()))


def test_a_full_turn_s_reading_scores_how_it_turns_with_the_object_wherever_it_starts():
    """24 views round the turn: read with an offset it agrees exactly (1), read mirrored -1,
    read as one constant or winding twice it agrees with neither (the resultant of a full
    circle of angles is 0)."""
    from dcign.scoring.metrics import Equivariance

    values = torch.arange(24) * (2 * math.pi / 24) - math.pi

    def agreement(latents: torch.Tensor, periodic: bool = True) -> float:
        metric = Equivariance(periodic=periodic)
        metric.update(torch.atan2(latents.sin(), latents.cos())[:, None], values)
        return float(metric.turn_agreement())

    assert agreement(values + 1.0) == pytest.approx(1.0)
    assert agreement(0.5 - values) == pytest.approx(-1.0)
    assert agreement(torch.full_like(values, 2.0)) == pytest.approx(0.0, abs=1e-6)
    assert agreement(2 * values) == pytest.approx(0.0, abs=1e-6)
    assert math.isnan(agreement(values, periodic=False))


# The batch of grouped_batch(): an azimuth group of three (values -1.5, 0, 1.5: all three) and
# an intrinsic group of three holding one azimuth h, and both groups holding elevation (+-0.5).
# Azimuth: the batch's sd is 0.8660 for h = 0 and 1.1456 for h = +-1.5, so E[sd] = 1.0524 and
# the spread asked is 1.5 / 1.0524 = 1.4253; angles of mean 1 and sd 0 miss by 1 + 1.4253^2 =
# 3.0314. Elevation: two held values, sd 0 or 0.5, E[sd] = 0.25, asked 0.25 / 0.25 = 1; the
# miss is 1 + 1 = 2.
AZIMUTH_MISS, ELEVATION_MISS = 1 + (1.5 / ((math.sqrt(0.75) + 2 * math.sqrt(1.3125)) / 3)) ** 2, 2.0


def test_the_range_term_pulls_the_batch_s_angles_to_the_training_values_mean_and_spread():
    """Encoded angles of mean 1 and sd 0 on both factors, range weight 2 (the miss above, within
    the sampled expectation's error)."""
    module = volume_module(pose={**POSE, "range_weight": 2.0})
    batch = grouped_batch()
    module.dcign.encode = lambda x: (torch.ones(len(x), 8), torch.zeros(len(x), 8))
    parts = module.dcign_loss(batch, deterministic=True)
    assert float(parts.pose) == pytest.approx(AZIMUTH_MISS + ELEVATION_MISS, rel=0.01)
    plain = plain_objective(module, batch)
    expected = float(plain.total.detach()) + 2.0 * float(parts.pose)
    assert float(parts.total.detach()) == pytest.approx(expected, rel=1e-5)


def test_a_range_weight_per_factor_weighs_each_factor_s_mismatch():
    """The same angles; azimuth weighs 2, elevation 1: the loss adds 2 * azimuth's miss + 1 *
    elevation's, and the logged term is the miss by share of the largest weight."""
    weights = {"azimuth": 2.0, "elevation": 1.0}
    module = volume_module(pose={**POSE, "range_weight": weights})
    batch = grouped_batch()
    module.dcign.encode = lambda x: (torch.ones(len(x), 8), torch.zeros(len(x), 8))
    parts = module.dcign_loss(batch, deterministic=True)
    assert float(parts.pose) == pytest.approx(AZIMUTH_MISS + 0.5 * ELEVATION_MISS, rel=0.01)
    expected = float(plain_objective(module, batch).total.detach()) + 2.0 * float(parts.pose)
    assert float(parts.total.detach()) == pytest.approx(expected, rel=1e-5)


def test_the_spread_a_batch_is_asked_for_is_hand_computable_where_its_draws_are():
    """Values -1 and 1 (sd 1). Two single-image groups holding the value: the batch's sd is 0
    or 1, each half the time, so E[sd] = 0.5 and the spread asked is 1 / 0.5 = 2. One group of
    two varying it takes both values: sd 1 always, asked 1. One group holding it never
    spreads: nothing is asked."""
    values = np.array([-1.0, 1.0])
    assert expected_batch_spread(values, groups=2, size=1, varying=0) == pytest.approx(
        0.5, abs=0.02
    )
    assert expected_batch_spread(values, groups=1, size=2, varying=1) == pytest.approx(1.0)
    factors = [{"name": "azimuth", "values": [-1.0, 1.0], "periodic": False}]
    term = AngleRange(roles({"azimuth": 1, "intrinsic": None}), factors, [1.0])
    assert term.spread(0, 2, 1, 0) == pytest.approx(2.0, abs=0.1)
    assert term.spread(0, 1, 2, 1) == pytest.approx(1.0)
    assert term.spread(0, 1, 4, 0) == 0.0


def clustered_azimuths(rng: np.random.Generator, values: np.ndarray) -> tuple[torch.Tensor, int]:
    """One batch of the faces' shape: three groups of four, a group varying azimuth (four
    different values) one time in six, else holding one value for its four images; and how many
    groups vary it."""
    varies = rng.random(3) < 1 / 6
    rows = [rng.choice(values, 4, replace=False) if v else [rng.choice(values)] * 4 for v in varies]
    return torch.tensor(np.concatenate(rows), dtype=torch.float32), int(varies.sum())


def fitted_scale(term: AngleRange, values: np.ndarray, steps: int = 2000) -> float:
    """The scale ``k`` of angles ``k * true`` that ``term`` alone trains by plain SGD on
    batches of clustered azimuths (the mean over the second half of the steps)."""
    rng = np.random.default_rng(0)
    scale, trace = torch.tensor(0.5, requires_grad=True), []
    for _ in range(steps):
        true, varied = clustered_azimuths(rng, values)
        varying = torch.arange(3)[:, None] < varied
        images = LabelledImages(torch.zeros(3, 4, 1, 2, 2), torch.zeros(3, 4, 1), torch.zeros(3, 4))
        batch = GroupedBatch.of(images, varying[:, 0].long())
        (grad,) = torch.autograd.grad(term.term(None, scale * true[:, None], batch, varying), scale)
        with torch.no_grad():
            scale -= 0.05 * grad
        trace.append(float(scale))
    return float(np.mean(trace[steps // 2 :]))


def test_the_range_term_trains_the_true_scale_on_batches_that_mostly_hold_the_angle():
    """Asked for the values' own sd (``range_spread=values``), the expected squared mismatch
    is least at ``k = sd * E[batch sd] / E[batch mean square]``, computed here from 5,000
    sampled batches (about 0.79 for this shape), and SGD finds it; asked for the batch-aware
    spread (the default), at 1."""
    values = np.linspace(-1.5, 1.5, 15)
    rng = np.random.default_rng(1)
    batches = [clustered_azimuths(rng, values)[0].double() for _ in range(5_000)]
    batch_sd = float(np.mean([float(b.std(unbiased=False)) for b in batches]))
    mean_square = float(np.mean([float(b.square().mean()) for b in batches]))
    shortened = values.std() * batch_sd / mean_square
    assert 0.75 < shortened < 0.83
    factors = [{"name": "azimuth", "values": values.tolist(), "periodic": False}]
    layout = roles({"azimuth": 1, "intrinsic": None})
    plain = AngleRange(layout, factors, [1.0], batch_spread=False)
    assert fitted_scale(plain, values) == pytest.approx(shortened, abs=0.03)
    assert fitted_scale(AngleRange(layout, factors, [1.0]), values) == pytest.approx(1.0, abs=0.03)
    with pytest.raises(ConfigError, match="range_spread must be one of"):
        volume_module(pose={**POSE, "range_weight": 1.0, "range_spread": "batches"})


def test_the_range_term_is_refused_where_it_cannot_apply():
    with pytest.raises(ConfigError, match="told angles are the data's"):
        volume_module(pose={**POSE, "source": "told", "range_weight": 1.0})
    turn = [{**FACTORS[0], "periodic": True}, *FACTORS[1:]]
    with pytest.raises(ConfigError, match="model.net.decoder=volume"):
        tiny_module(pose={**POSE, "range_weight": 1.0})
    with pytest.raises(ConfigError, match=r"names \['light'\], which are not pose factors"):
        volume_module(pose={**POSE, "range_weight": {"azimuth": 1.0, "light": 1.0}})
    volume_module(pose={**POSE, "range_weight": {"azimuth": 1.0, "light": 0.0}})  # weight 0: fine
    with pytest.raises(ConfigError, match="range_weight must be >= 0"):
        volume_module(pose={**POSE, "range_weight": {"elevation": -1.0}})
    # A full turn left out of the range term is fine: only the bounded elevation is pulled.
    tiny_module(
        net=VOLUME_NET,
        layout=FACES_DEFAULT,
        factors=turn,
        pose={**POSE, "range_weight": {"elevation": 1.0}},
    )


def test_a_pose_factor_without_a_group_is_left_out_of_the_range_term(caplog):
    """The learnt preset's weights (azimuth 10, elevation 30) on the chairs' layout, where the
    data hold the elevation: the full turn is pulled alone (with a warning for elevation); on
    the faces' layout with a full turn, both, by their shares of the largest weight."""
    learnt = {**POSE, "range_weight": {"azimuth": 10.0, "elevation": 30.0}}
    with caplog.at_level(logging.WARNING, logger="dcign.model.pose_training"):
        chairs = tiny_module(
            net=VOLUME_NET, layout={"azimuth": 2, "intrinsic": None}, factors=CHAIRS, pose=learnt
        )
    assert "no group for ['elevation']" in caplog.text
    assert chairs._pose.share.tolist() == [1.0] and chairs._pose.periodic.tolist() == [True]
    turn = [{**FACTORS[0], "periodic": True}, *FACTORS[1:]]
    faces = tiny_module(net=VOLUME_NET, layout=FACES_DEFAULT, factors=turn, pose=learnt)
    assert faces._pose.share.tolist() == pytest.approx([1 / 3, 1.0])
    assert faces._pose.periodic.tolist() == [True, False]


def test_a_full_turn_s_angles_are_asked_to_spread_round_the_turn_as_true_angles_do():
    """A full turn has no mean to match; the batch's circular spread ``sqrt(1 - R)`` (``R`` the
    mean resultant length) is pulled to the one true angles have in batches of its shape. One
    group of four taking the four quarter turns: the true angles' ``R`` is 0, spread 1, so a
    still reading misses by 1 and the truth moved by any offset by nothing. Plain SGD on ``k *
    true`` from a nearly still 0.05 reaches the first scale whose ``R`` is 0: the true one."""
    quarters = [0.0, math.pi / 2, math.pi, 3 * math.pi / 2]
    factors = [{"name": "azimuth", "values": quarters, "periodic": True}]
    term = AngleRange(roles({"azimuth": 1, "intrinsic": None}), factors, [1.0])
    images = LabelledImages(torch.zeros(1, 4, 1, 2, 2), torch.zeros(1, 4, 1), torch.zeros(1, 4))
    batch, varying = GroupedBatch.of(images, torch.zeros(1).long()), torch.ones(1, 1).bool()
    true = torch.tensor(quarters)[:, None]

    def miss(angles: torch.Tensor) -> torch.Tensor:
        return term.term(None, angles, batch, varying)

    assert float(miss(torch.full((4, 1), 0.7))) == pytest.approx(1.0, abs=1e-3)
    assert float(miss(true + 2.5)) == pytest.approx(0.0, abs=1e-6)
    scale = torch.tensor(0.05, requires_grad=True)
    for _ in range(500):
        (grad,) = torch.autograd.grad(miss(scale * true), scale)
        with torch.no_grad():
            scale -= 0.1 * grad
    assert float(scale) == pytest.approx(1.0, abs=0.02)


def test_a_told_full_turn_is_read_modulo_the_turn():
    """Truth 6.2 rad read as -0.0832 (6.2 - 2 pi) is no error; elevation 0.25 off is 0.0625."""
    turn = [{**FACTORS[0], "periodic": True}, *FACTORS[1:]]
    module = tiny_module(
        net=VOLUME_NET, layout=FACES_DEFAULT, factors=turn, pose={**POSE, "source": "told"}
    )
    batch = grouped_batch()
    factors = batch.factors.clone()
    factors[..., 0], factors[..., 1] = 6.2, 0.25
    batch = batch._replace(factors=factors)
    read = torch.zeros(6, 8)
    read[:, 0] = 6.2 - 2 * math.pi
    module.dcign.encode = lambda x: (read, torch.zeros(len(x), 8))
    parts = module.dcign_loss(batch, deterministic=True)
    assert float(parts.pose) == pytest.approx(0.0625, abs=1e-5)


def test_under_bf16_autocast_the_turn_and_projection_stay_float32(monkeypatch):
    """The convolutions may run in bf16; the rotation and the compositing see float32."""
    import dcign.model.volume as volume

    seen = []
    composite_in_float = volume.composite
    monkeypatch.setattr(
        volume,
        "composite",
        lambda d, f: seen.append((d.dtype, f.dtype)) or composite_in_float(d, f),
    )
    net = volume_net()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        image = net.decode_logits(torch.randn(2, 8))
    assert seen == [(torch.float32, torch.float32)] and torch.isfinite(image).all()
