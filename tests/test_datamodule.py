"""The procedural data modules end to end: cache, splits, batches, sharding, validation."""

from __future__ import annotations

import itertools
import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

import datamodules.procedural as procedural
from datamodules.chair_meshes import CHAIR_AZIMUTHS, CHAIR_ELEVATIONS, chair_mesh
from datamodules.face_meshes import face_mesh
from datamodules.grouped import resolve_cache_dir, split_counts
from datamodules.procedural import CHAIR_LIGHT_AZIMUTH, ChairsDataModule, FacesDataModule
from datamodules.renderer import render_views
from dcign.batch import GroupedBatch
from dcign.errors import ConfigError
from tests.conftest import ready

FACE_GRID = {"n_azimuth": 4, "n_elevation": 2, "n_light": 3}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def faces(cache_dir, **overrides) -> FacesDataModule:
    args = {
        "n_identities": 8,
        **FACE_GRID,
        "image_size": 16,
        "group_size": 4,
        "groups_per_batch": 3,
        # Evaluation batches of the training shape, unless a test asks for another.
        "eval_group_size": None,
        "eval_groups_per_batch": None,
        "split": {"train": 4, "val": 2, "test": 2},
        "cache_dir": cache_dir,
        "val_batches": 4,
        # An epoch is one pass over the tiny training split.
        "batches_per_epoch": None,
    }
    return FacesDataModule(**{**args, **overrides})


def chairs(cache_dir, **overrides) -> ChairsDataModule:
    args = {
        "n_identities": 6,
        "image_size": 16,
        "group_size": 5,
        "groups_per_batch": 2,
        "split": {"train": 2, "val": 2, "test": 2},
        "cache_dir": cache_dir,
        "batches_per_epoch": None,
    }
    return ChairsDataModule(**{**args, **overrides})


def batch_key(batch) -> bytes:
    return batch.identity.numpy().tobytes() + batch.factors.numpy().tobytes()


@pytest.mark.parametrize("make", [faces, chairs])
def test_batches_have_the_documented_format_and_group_semantics(cache_dir, make):
    dm = ready(make(cache_dir))
    n_factors = len(dm.factors)
    G, S = dm.groups_per_batch, dm.group_size
    train_ids = set(dm.split_info("train").identities.tolist())
    grids = [np.asarray(f.values, dtype=np.float32) for f in dm.factors]
    for batch in itertools.islice(dm.train_dataloader(), 12):
        assert isinstance(batch, GroupedBatch)
        images, factors = batch.images, batch.factors
        assert images.dtype == torch.float32 and images.shape == (G, S, 1, 16, 16)
        assert images.min() >= 0.0 and images.max() <= 1.0 and images.max() > 0.2
        assert factors.dtype == torch.float32 and factors.shape == (G, S, n_factors)
        assert batch.identity.dtype == torch.int64 and batch.identity.shape == (G, S)
        assert batch.group_type.dtype == torch.int64 and batch.group_type.shape == (G,)
        assert set(batch.identity.flatten().tolist()) <= train_ids
        for j, grid in enumerate(grids):
            assert np.isin(factors[..., j].numpy(), grid).all()
        labels = torch.cat([batch.identity[..., None].float(), factors], dim=-1)
        for g, t in enumerate(batch.group_type.tolist()):
            name = dm.group_types[t]
            varying = [c for c in range(labels.shape[-1]) if len(labels[g, :, c].unique()) > 1]
            expected = 0 if name == "intrinsic" else 1 + dm.factor_names.index(name)
            assert varying == [expected]


def test_faces_and_chairs_declare_their_factors(cache_dir):
    face_dm, chair_dm = faces(cache_dir), chairs(cache_dir)
    assert face_dm.factor_names == ["azimuth", "elevation", "light"]
    assert face_dm.group_types == ["azimuth", "elevation", "light", "intrinsic"]
    assert face_dm.ratio["intrinsic"] == 3.0 and face_dm.ratio["azimuth"] == 1.0
    assert chair_dm.ratio == {"azimuth": 4.0, "intrinsic": 1.0}
    assert [len(f.values) for f in face_dm.factors] == [4, 2, 3]
    assert not any(f.periodic for f in face_dm.factors)
    assert chair_dm.factor_names == ["azimuth", "elevation"]
    assert chair_dm.group_types == ["azimuth", "intrinsic"]
    assert chair_dm.factors[0].periodic and len(chair_dm.factors[0].values) == 31


@pytest.mark.parametrize("make", [faces, chairs])
def test_cached_pixels_are_the_renders_of_their_factor_values(cache_dir, make):
    dm = ready(make(cache_dir))
    sample = dm.sample_images("val", 6, seed=3)
    mesh_of = face_mesh if make is faces else chair_mesh
    for image, values, identity in zip(sample.images, sample.factors, sample.identity, strict=True):
        light = values[2] if make is faces else CHAIR_LIGHT_AZIMUTH
        expected = render_views(
            mesh_of(int(identity)),
            np.array([values[0]]),
            np.array([values[1]]),
            np.array([light]),
            16,
            supersample=2,
        )
        np.testing.assert_allclose(image[0].numpy(), expected[0], atol=1 / 255 + 1e-6)


def test_chair_grid_is_the_3d_chairs_grid(cache_dir):
    dm = ready(chairs(cache_dir))
    factors = dm.sample_images("train", 62 * 2, seed=0).factors.numpy()
    np.testing.assert_allclose(np.unique(factors[:, 0]), CHAIR_AZIMUTHS, atol=1e-6)
    np.testing.assert_allclose(np.unique(factors[:, 1]), CHAIR_ELEVATIONS, atol=1e-6)


def test_identity_splits_are_disjoint_and_cover_the_data_set(cache_dir):
    dm = ready(faces(cache_dir))
    ids = {name: set(dm.split_info(name).identities.tolist()) for name in ("train", "val", "test")}
    assert [len(ids[n]) for n in ("train", "val", "test")] == [4, 2, 2]
    assert ids["train"].isdisjoint(ids["val"]) and ids["train"].isdisjoint(ids["test"])
    assert ids["val"].isdisjoint(ids["test"])
    assert set().union(*ids.values()) == set(range(8))
    for name, loader in (("val", dm.val_dataloader()), ("test", dm.test_dataloader())):
        for batch in loader:
            assert set(batch.identity.flatten().tolist()) <= ids[name]
    other_seed = ready(faces(cache_dir, split_seed=1))
    assert set(other_seed.split_info("test").identities.tolist()) != ids["test"]


def test_fractional_split_gives_every_split_two_identities_where_the_data_allow(cache_dir):
    # 10% of 8 identities rounds to 1; 8 identities are enough for 2 in every split, which an
    # intrinsic group (identity varies) needs.
    dm = ready(faces(cache_dir, split={"train": 0.8, "val": 0.1, "test": 0.1}))
    sizes = [len(dm.split_info(n).identities) for n in ("train", "val", "test")]
    assert sizes == [4, 2, 2]
    # The paper's chairs proportions on 31 chairs (one val chair by rounding) and on 5 (too few
    # for two per split: one each, and an intrinsic group there is a clear error at setup).
    paper = {"train": 0.86, "val": 0.03, "test": 0.11}
    assert split_counts(paper, 31) == {"train": 26, "val": 2, "test": 3}
    assert split_counts(paper, 5) == {"train": 3, "val": 1, "test": 1}


def test_cache_is_reused_across_instances(cache_dir, monkeypatch):
    ready(faces(cache_dir))

    def must_not_render(*args, **kwargs):
        raise AssertionError("rendered again")

    monkeypatch.setattr(procedural, "render_views", must_not_render)
    again = ready(faces(cache_dir, seed=5, group_size=3))  # sampling options share the cache
    assert again.cache_path == faces(cache_dir).cache_path
    next(iter(again.train_dataloader()))
    assert faces(cache_dir, image_size=8).cache_path != again.cache_path
    assert faces(cache_dir, render_seed=1).cache_path != again.cache_path


def test_ddp_ranks_get_equal_disjoint_shards_of_the_global_sequence(cache_dir):
    def batches(world_size, rank, batches_per_epoch):
        dm = ready(faces(cache_dir, batches_per_epoch=batches_per_epoch))
        dm.trainer = SimpleNamespace(global_rank=rank, world_size=world_size)
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(1)
        return [batch_key(b) for b in loader]

    single = batches(1, 0, 6)
    shards = [batches(2, rank, 3) for rank in range(2)]
    assert [len(s) for s in shards] == [3, 3]
    assert not set(shards[0]) & set(shards[1])
    assert [b for pair in zip(*shards, strict=True) for b in pair] == single


def test_an_unset_epoch_length_is_one_pass_over_training_images_shared_by_ranks(cache_dir):
    dm = ready(faces(cache_dir))
    images_per_batch = dm.groups_per_batch * dm.group_size
    assert len(dm.train_dataloader()) == 4 * 24 // images_per_batch
    dm.trainer = SimpleNamespace(global_rank=1, world_size=2)
    assert len(dm.train_dataloader()) == 4 * 24 // (2 * images_per_batch)


def test_evaluation_loaders_are_fixed_and_sharded(cache_dir):
    dm = ready(faces(cache_dir, val_batches=5))
    loader = dm.val_dataloader()
    first = [batch_key(b) for b in loader]
    assert [batch_key(b) for b in loader] == first and len(first) == 5
    assert [batch_key(b) for b in dm.val_dataloader()] == first
    dm.trainer = SimpleNamespace(global_rank=0, world_size=2)
    assert len(dm.val_dataloader()) == 3 and len(dm.test_dataloader()) == 3
    assert ready(faces(cache_dir, val_batches=0)).val_dataloader() == []


def test_evaluation_batches_keep_their_own_shape_whatever_the_training_shape(cache_dir):
    # Two runs trained on groups of 2 and of 4 are scored on the same validation and test
    # batches (groups of 3, 2 a batch), and the training batches keep the training shape.
    evaluation = {"eval_group_size": 3, "eval_groups_per_batch": 2}
    small = ready(faces(cache_dir, group_size=2, groups_per_batch=6, **evaluation))
    large = ready(faces(cache_dir, group_size=4, groups_per_batch=3, **evaluation))
    for split in ("val", "test"):
        batches = [batch_key(b) for b in small.evaluation_loader(split)]
        assert batches == [batch_key(b) for b in large.evaluation_loader(split)]
        assert all(b.images.shape[:2] == (2, 3) for b in small.evaluation_loader(split))
    assert next(iter(small.train_dataloader())).images.shape[:2] == (6, 2)
    assert next(iter(large.train_dataloader())).images.shape[:2] == (3, 4)
    # Unset, evaluation follows the training shape (how runs saved without it are scored).
    plain = ready(faces(cache_dir, group_size=2, groups_per_batch=6))
    assert next(iter(plain.val_dataloader())).images.shape[:2] == (6, 2)
    # Not given: evaluation groups of 10, 4 a batch; the faces train on 3 groups of 4 a batch,
    # 833 batches an epoch (the 10,000 images of 250 batches of 10 groups of 4).
    default = FacesDataModule(n_identities=8, **FACE_GRID, image_size=16, cache_dir=cache_dir)
    shapes = (default.group_size, default.groups_per_batch)
    assert shapes + (default.eval_group_size, default.eval_groups_per_batch) == (4, 3, 10, 4)
    assert default.batches_per_epoch == 833


def test_pairs_are_counted_in_evaluation_groups(cache_dir):
    # Groups of 3 hold 2 distinct elevation pairs (e0 e1 e0) and 3 light pairs; 10 pairs need
    # 5 groups of each of the 4 types, 20 groups at 4 a batch: 5 batches, whatever the
    # training groups (of 2, which would hold 2 pairs of every factor, 6 a batch).
    dm = faces(cache_dir, group_size=2, groups_per_batch=6, eval_group_size=3)
    dm.eval_groups_per_batch = 4
    assert dm.batches_for_pairs(10) == 5


def test_sample_images_are_fixed_by_their_seed(cache_dir):
    dm = ready(faces(cache_dir))
    a, b = dm.sample_images("test", 5, seed=1), dm.sample_images("test", 5, seed=1)
    assert a.images.shape == (5, 1, 16, 16) and a.factors.shape == (5, 3)
    assert torch.equal(a.images, b.images) and torch.equal(a.identity, b.identity)
    assert set(a.identity.tolist()) <= set(dm.split_info("test").identities.tolist())
    with pytest.raises(ConfigError, match="sample images"):
        dm.sample_images("test", 1000, seed=1)


def test_dataset_survives_pickling_for_spawned_workers(cache_dir):
    dm = ready(faces(cache_dir))
    spec = next(iter(dm.train_dataloader().sampler))
    dataset = dm.train_dataloader().dataset
    clone = pickle.loads(pickle.dumps(dataset))
    assert isinstance(clone.images, np.memmap)
    assert torch.equal(clone[spec].images, dataset[spec].images)


def test_worker_processes_deliver_the_same_batches(cache_dir):
    in_process = [batch_key(b) for b in ready(faces(cache_dir)).train_dataloader()]
    with_workers = ready(faces(cache_dir, num_workers=2)).train_dataloader()
    assert [batch_key(b) for b in with_workers] == in_process


@pytest.mark.parametrize("cuda", [False, True])
def test_pinned_memory_only_where_a_gpu_can_use_it(cache_dir, monkeypatch, cuda):
    """``pin_memory=true`` page-locks batches for fast copies to a GPU; without one it would
    only cost memory (and warns in PyTorch), so it is switched off."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    loader = ready(faces(cache_dir, pin_memory=True)).train_dataloader()
    assert loader.pin_memory is cuda
    assert ready(faces(cache_dir)).train_dataloader().pin_memory is False


class _Recorder(pl.LightningModule):
    """Records which batches it trained on."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[bytes] = []

    def training_step(self, batch, batch_idx):
        self.seen.append(batch_key(batch))
        return (self.weight - batch.images.mean()) ** 2

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_resumes_mid_epoch_with_the_uninterrupted_batches(cache_dir, tmp_path):
    options = {
        "use_distributed_sampler": False,
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "enable_checkpointing": False,
        "accelerator": "cpu",
        "default_root_dir": tmp_path,
    }
    full = _Recorder()
    pl.Trainer(max_epochs=2, **options).fit(full, datamodule=faces(cache_dir, val_batches=0))
    first = _Recorder()
    checkpoint = pl.callbacks.ModelCheckpoint(
        dirpath=tmp_path / "ckpt", every_n_train_steps=11, save_top_k=-1
    )
    trainer = pl.Trainer(
        max_epochs=2,
        max_steps=11,
        callbacks=[checkpoint],
        **{**options, "enable_checkpointing": True},
    )
    trainer.fit(
        first, datamodule=faces(cache_dir, val_batches=0, num_workers=1)
    )  # workers prefetch ahead
    second = _Recorder()
    pl.Trainer(max_epochs=2, **options).fit(
        second,
        datamodule=faces(cache_dir, val_batches=0),
        ckpt_path=tmp_path / "ckpt" / "epoch=1-step=11.ckpt",
    )
    assert len(full.seen) == 16 and len(first.seen) == 11
    assert first.seen + second.seen == full.seen


def test_cache_dir_is_resolved_against_the_start_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_cache_dir("rel/cache") == tmp_path / "rel" / "cache"
    monkeypatch.setenv("DCIGN_CACHE", str(tmp_path / "env"))
    assert resolve_cache_dir(None) == tmp_path / "env"
    monkeypatch.delenv("DCIGN_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_cache_dir(None) == tmp_path / "xdg" / "dcign"


@pytest.mark.parametrize(
    ("make", "overrides", "message"),
    [
        (faces, {"layout": {"azimuth": 1, "pose": 1, "intrinsic": None}}, r"\['pose'\]"),
        (chairs, {"layout": {"azimuth": 1, "light": 1, "intrinsic": None}}, "not factors"),
        (faces, {"ratio": {"azimuth": 1, "shape": 3}}, r"dataset.ratio names \['shape'\]"),
        (chairs, {"ratio": {"elevation": 1}}, "not groups of the latent layout"),
        (faces, {"ratio": {"azimuth": -1}}, "non-negative"),
        (faces, {"group_size": 1}, "group_size"),
        (faces, {"groups_per_batch": 0}, "groups_per_batch"),
        (faces, {"eval_group_size": 1}, "dataset.eval_group_size must be an integer >= 2"),
        (faces, {"eval_groups_per_batch": 0}, "dataset.eval_groups_per_batch must be a positive"),
        (faces, {"split": {"train": 0.8, "holdout": 0.2}}, "dataset.split"),
        (faces, {"split": {"train": 0, "test": 1}}, "dataset.split"),
        (faces, {"image_size": 0}, "image_size"),
        (faces, {"n_azimuth": 0}, "dataset.n_azimuth"),
        (chairs, {"n_identities": 0}, "n_identities"),
    ],
)
def test_bad_configuration_raises_config_error(cache_dir, make, overrides, message):
    with pytest.raises(ConfigError, match=message):
        make(cache_dir, **overrides)


def test_layout_error_lists_the_valid_group_names(cache_dir):
    with pytest.raises(ConfigError, match=r"\['azimuth', 'elevation', 'intrinsic'\]"):
        chairs(cache_dir, layout={"pose": 1})


def test_split_that_cannot_form_a_drawn_group_fails_at_setup(cache_dir):
    dm = faces(cache_dir, split={"train": 6, "val": 1, "test": 1})
    with pytest.raises(ConfigError, match="val split .* single identity"):
        ready(dm)


def test_split_asking_for_more_identities_than_exist_fails(cache_dir):
    with pytest.raises(ConfigError, match="has 8"):
        ready(faces(cache_dir, split={"train": 6, "val": 2, "test": 2}))


def test_evaluation_batches_for_a_number_of_pairs_per_factor(cache_dir):
    # 4 group types with an intrinsic-heavy training ratio, groups of 4, 3 groups a batch. The 2
    # elevations fill a group of 4 as e0 e1 e0 e1: 2 distinct pairs (e0->e1, e1->e0); the 3
    # lights as l0 l1 l2 l0: 3 (the last pairs l0 with itself). 10 distinct pairs per factor
    # need 5 elevation groups, so 5 groups of each type: 20 groups, 7 batches.
    dm = ready(faces(cache_dir, ratio={"azimuth": 1, "elevation": 1, "light": 1, "intrinsic": 10}))
    assert dm.batches_for_pairs(10) == 7
    dm.val_batches = dm.batches_for_pairs(10)
    distinct: dict[int, set] = {t: set() for t in range(4)}
    for batch in dm.evaluation_loader("test"):
        for g, group_type in enumerate(batch.group_type.tolist()):
            keys = [
                (int(i), *f.tolist())
                for i, f in zip(batch.identity[g], batch.factors[g], strict=True)
            ]
            for s, key in enumerate(keys):
                partner = keys[(s + 1) % len(keys)]
                if partner != key:
                    distinct[group_type].add((g, batch.identity[g, 0].item(), key, partner))
    assert min(len(pairs) for pairs in distinct.values()) >= 10
    with pytest.raises(ConfigError, match="pairs"):
        dm.batches_for_pairs(0)


def test_maps_are_fitted_on_validation_identities_never_on_test_ones(cache_dir):
    dm = ready(faces(cache_dir))
    references = dm.reference_images(20, seed=3)
    val = set(dm.split_info("val").identities.tolist())
    assert set(references.identity.tolist()) <= val and len(references.images) == 20
    # A data set without a validation split fits on training identities instead.
    no_val = ready(faces(cache_dir, split={"train": 6, "val": 0, "test": 2}))
    train = set(no_val.split_info("train").identities.tolist())
    assert set(no_val.reference_images(20).identity.tolist()) <= train
