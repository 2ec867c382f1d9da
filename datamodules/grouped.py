"""The generic LightningDataModule of DC-IGN: cached images served as factor-grouped batches.

A concrete data set only says what its factors are, what changes its pixels (the cache key)
and how to write its cache; this base class does the rest the same way for every data set:
identity splits, one group index per split, samplers sharded over DDP ranks, and batches

    images      float32 [G, S, C, H, W] in [0, 1]
    factors     float32 [G, S, F]  ground-truth factor values (radians for angles)
    identity    int64   [G, S]
    group_type  int64   [G]        position in the latent layout's group names
"""

from __future__ import annotations

import logging
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, BinaryIO

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, SequentialSampler

from datamodules.cache import build_cache, cache_key, is_complete, open_cache
from datamodules.factors import FactorSpec, factor_values
from datamodules.gallery import Gallery
from datamodules.image_conversion import ImageOptions, convert_file
from datamodules.sampler import (
    BatchSpec,
    GroupedBatchSampler,
    GroupIndex,
    check_group_shape,
    distinct_pairs_per_group,
    ratio_probabilities,
)
from datamodules.sources import from_start_dir
from datamodules.train_range import in_range, parse_train_range
from dcign.batch import GroupedBatch, LabelledImages
from dcign.errors import ConfigError
from dcign.model.layout import INTRINSIC

log = logging.getLogger(__name__)

IDENTITY = "identity"
SPLITS = ("train", "val", "test")
DEFAULT_SPLIT = {"train": 0.8, "val": 0.1, "test": 0.1}


def resolve_cache_dir(cache_dir: str | os.PathLike | None) -> Path:
    """The absolute cache root.

    ``None`` means ``$DCIGN_CACHE``, else ``$XDG_CACHE_HOME/dcign`` (``~/.cache/dcign``). A
    relative path is taken from the directory the program started in (see
    :func:`~datamodules.sources.from_start_dir`).
    """
    if cache_dir is None:
        cache_dir = os.environ.get("DCIGN_CACHE") or (
            Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dcign"
        )
    return from_start_dir(Path(cache_dir).expanduser())


def _check_split(split: Mapping[str, float | int]) -> dict[str, float | int]:
    unknown = [name for name in split if name not in SPLITS]
    values = list(split.values())
    if (
        unknown
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        or any(v < 0 or (isinstance(v, float) and v > 1) for v in values)
        or not split.get("train")
    ):
        raise ConfigError(
            f"dataset.split must map {list(SPLITS)} to identity fractions (floats in [0, 1]) or "
            f"counts (integers), with a positive train share; got {dict(split)}. Example: "
            "dataset.split='{train: 0.8, val: 0.1, test: 0.1}'."
        )
    return {name: split.get(name, 0) for name in SPLITS}


def split_counts(split: Mapping[str, float | int], n_identities: int) -> dict[str, int]:
    """How many identities each split gets.

    Integers are counts. A fraction of val or test takes at least two identities where the
    data set has two for every split (an intrinsic group varies identity, so a split with one
    identity cannot form one: the paper's 3% of 31 chairs rounds to a single chair), else at
    least one, so that a small data set still gets an evaluation set. When the fractions add
    up to 1, train takes whatever is left, so that rounding never drops an identity.
    """
    split = _check_split(split)
    floor = 2 if n_identities >= 2 * sum(1 for value in split.values() if value) else 1
    counts = {
        name: value if isinstance(value, int) else max(floor, round(value * n_identities))
        for name, value in split.items()
        if value
    }
    raised = [
        name
        for name, value in split.items()
        if isinstance(value, float) and value and round(value * n_identities) < floor
    ]
    if raised:
        log.info(
            "dataset.split=%s of %d identities: %s raised to %d identities each, so that every "
            "split can form a group that varies identity.",
            dict(split),
            n_identities,
            " and ".join(raised),
            floor,
        )
    fractions = [v for v in split.values() if isinstance(v, float)]
    if isinstance(split["train"], float) and math.isclose(sum(fractions), 1.0):
        counts["train"] = n_identities - counts.get("val", 0) - counts.get("test", 0)
    counts = {name: counts.get(name, 0) for name in SPLITS}
    if counts["train"] < 1 or sum(counts.values()) > n_identities:
        raise ConfigError(
            f"dataset.split={dict(split)} asks for {counts} identities, but the data set has "
            f"{n_identities}. Lower the val/test shares or add identities."
        )
    return counts


@dataclass(frozen=True)
class CacheContents:
    """What a data set writes into its cache, declared by the data set and written by the base.

    ``items(meta)`` yields ``(uint8 [v, C, H, W], codes [v, K])`` per identity or file (see
    :func:`~datamodules.cache.build_cache`) and may add counts to ``meta`` while it runs;
    ``capacity`` bounds the number of images; ``metadata`` is stored beside the factors and
    config; ``progress``/``progress_total`` label and size the progress bar; ``description``
    says in the log what is written.
    """

    description: str
    items: Callable[[dict[str, Any]], Iterable[tuple[np.ndarray, np.ndarray]]]
    capacity: int
    progress: str
    progress_total: int | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


class GroupedImages(Dataset):
    """Turns a batch spec into a batch with one fancy-indexed read of the memory-mapped cache.

    The image array stays a memory map: pickling (for spawned workers) stores its file name
    and the worker maps it again instead of copying the pixels.
    """

    def __init__(self, images: np.memmap, factors: np.ndarray, identities: np.ndarray) -> None:
        self.images = images
        self.factors = factors
        self.identities = identities

    def __getitem__(self, spec: BatchSpec) -> GroupedBatch:
        indices, group_type = spec
        return GroupedBatch.of(self.read(indices), torch.as_tensor(group_type, dtype=torch.int64))

    def read(self, rows: np.ndarray) -> LabelledImages:
        """Images, factor values and identities of ``rows`` (any shape), shaped like ``rows``."""
        rows = np.asarray(rows, dtype=np.int64)
        pixels = np.asarray(self.images[rows.reshape(-1)])
        images = torch.from_numpy(pixels).float().div_(255.0)
        return LabelledImages(
            images=images.view(*rows.shape, *pixels.shape[1:]),
            factors=torch.from_numpy(self.factors[rows]),
            identity=torch.from_numpy(self.identities[rows]),
        )

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "images": self.images.filename}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, images=np.load(state["images"], mmap_mode="r"))


class FixedBatches(Dataset):
    """A fixed list of batch specs as a map-style data set: item ``i`` is batch ``i``.

    With a ``gallery`` (evaluation sequences), each batch carries the true images of every
    identity of the split at each of its images' views.
    """

    def __init__(
        self, images: GroupedImages, specs: Sequence[BatchSpec], gallery: Gallery | None = None
    ) -> None:
        self.images = images
        self.specs = list(specs)
        self.gallery = gallery

    def __len__(self) -> int:
        return len(self.specs)

    def __getitem__(self, index: int) -> GroupedBatch:
        batch = self.images[self.specs[index]]
        if self.gallery is None:
            return batch
        return batch._replace(gallery=self.gallery.at(batch.factors))


class GroupedLoader(DataLoader):
    """A DataLoader over a :class:`GroupedBatchSampler` whose place in the epoch is saved.

    Lightning checkpoints any loader that has ``state_dict``/``load_state_dict`` and restores
    it on resume. The position counts batches this loader delivered, not specs the sampler
    drew (the sampler runs ahead by the workers' prefetch), and Lightning does not fetch ahead
    of a loader with a length, so a run resumed mid-epoch continues with exactly the batch
    after the last one trained on.
    """

    sampler: GroupedBatchSampler
    _delivered = 0

    def __iter__(self) -> Iterator[GroupedBatch]:
        self._delivered = self.sampler.resume_at
        for batch in super().__iter__():
            self._delivered += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        state = self.sampler.state_dict()
        # After set_epoch() and before the next __iter__ the sampler's count is the fresh one.
        state["batches_done"] = min(state["batches_done"], self._delivered)
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.sampler.load_state_dict(state)
        self._delivered = self.sampler.resume_at


@dataclass(frozen=True)
class Split:
    """One identity split: its identities, its rows of the data set, its group index, and
    its gallery (every identity at every view, for "identity kept")."""

    name: str
    identities: np.ndarray
    rows: np.ndarray
    index: GroupIndex
    gallery: Gallery


class GroupedDataModule(pl.LightningDataModule, ABC):
    """Serves a data set's cached images as factor-grouped batches (see the module docstring).

    ``factors`` are the data set's factors. ``layout`` is the latent layout (group name ->
    size, ``None`` for "the rest of the code"); ``None`` takes the data set's own
    :meth:`default_layout`. The model is built with :attr:`layout`, so the two always agree;
    here only its names and their order matter, as the group-type ids of batches.
    ``ratio`` says how often each layout group is drawn (absent or 0: never). ``split`` assigns
    identities to train/val/test, seeded by ``split_seed`` so that changing the training
    ``seed`` keeps the test set. ``batches_per_epoch`` is per DDP rank (``None``: one pass over
    the training images, shared by the ranks); ``val_batches`` fixed batches are drawn from
    the validation identities and as many from the test identities, spread over the ranks.
    ``num_workers`` loader processes read batches ahead; ``pin_memory`` page-locks them for
    faster copies to a GPU (ignored without one). ``val_fidelity`` gives validation batches
    the line-ups that SSIM and identity kept are scored on (test batches always have them).
    ``eval_group_size`` and ``eval_groups_per_batch`` shape the validation and test batches
    (``None``: the training shape), so that runs trained on different group shapes are scored
    on the same pairs of images (groups of 10, 4 a batch: the pairs on which every run saved
    before these options, trained on that shape, was scored).
    ``train_range`` keeps the training split to a sub-range of some factors' values
    (:mod:`datamodules.train_range`); validation and test keep every value.

    The loaders shard themselves over DDP ranks (rank and world size come from the attached
    trainer), so the trainer must run with ``use_distributed_sampler=False``.

    Subclasses implement :meth:`cache_config` and :meth:`write_cache`, and may set
    ``layout_sizes`` (their default layout; otherwise :meth:`default_layout` derives one from
    the factors) and ``default_ratio`` (weights used when ``ratio`` is not given; 1 for each
    layout group it does not name, 0 for a factor with a single value, which no group can
    vary).
    """

    layout_sizes: Mapping[str, int | None] | None = None
    default_ratio: Mapping[str, float] = MappingProxyType({})
    default_split: Mapping[str, float | int] = MappingProxyType(DEFAULT_SPLIT)
    # Whether render_truth can draw any identity at any view (the procedural data sets).
    can_render: bool = False

    def __init__(
        self,
        factors: Sequence[FactorSpec],
        *,
        image_size: int = 32,
        channels: int = 1,
        group_size: int = 10,
        groups_per_batch: int = 4,
        ratio: Mapping[str, float] | None = None,
        layout: Mapping[str, int | None] | None = None,
        split: Mapping[str, float | int] | None = None,
        cache_dir: str | os.PathLike | None = None,
        seed: int = 0,
        split_seed: int = 0,
        num_workers: int = 0,
        pin_memory: bool = False,
        batches_per_epoch: int | None = 250,
        val_batches: int = 48,
        val_fidelity: bool = False,
        eval_group_size: int | None = 10,
        eval_groups_per_batch: int | None = 4,
        train_range: Mapping[str, Sequence[float]] | None = None,
    ) -> None:
        super().__init__()
        self._factors = list(factors)
        self.train_range = parse_train_range(train_range, self._factors)
        names = [factor.name for factor in self._factors]
        varied = [factor.name for factor in self._factors if len(factor.values) > 1]
        self.layout = dict(self.default_layout() if layout is None else layout)
        layout_names = list(self.layout)
        foreign = [name for name in layout_names if name != INTRINSIC and name not in names]
        if foreign:
            raise ConfigError(
                f"model.layout has groups {foreign} that are not factors of this data set. Valid "
                f"group names are {[*names, INTRINSIC]} ('{INTRINSIC}' = identity varies); "
                "rename or drop those layout groups, or choose another dataset."
            )
        self._group_types = layout_names
        self.ratio = (
            {
                name: self.default_ratio.get(name, 1.0) if name in (*varied, INTRINSIC) else 0.0
                for name in layout_names
            }
            if ratio is None
            else dict(ratio)
        )
        # Checked here, when the config is read, not when the first loader is built.
        self.type_probabilities = ratio_probabilities(layout_names, self.ratio)
        check_group_shape(group_size, groups_per_batch)
        self.eval_group_size = group_size if eval_group_size is None else eval_group_size
        self.eval_groups_per_batch = (
            groups_per_batch if eval_groups_per_batch is None else eval_groups_per_batch
        )
        check_group_shape(self.eval_group_size, self.eval_groups_per_batch, prefix="eval_")
        for option, value, minimum in (
            ("image_size", image_size, 1),
            ("channels", channels, 1),
            ("seed", seed, 0),
            ("split_seed", split_seed, 0),
            ("num_workers", num_workers, 0),
            ("val_batches", val_batches, 0),
            ("batches_per_epoch", 1 if batches_per_epoch is None else batches_per_epoch, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ConfigError(
                    f"dataset.{option} must be an integer >= {minimum}, got {value!r}."
                )
        self.split = _check_split(self.default_split if split is None else split)
        self.image_size = image_size
        self.channels = channels
        self.group_size = group_size
        self.groups_per_batch = groups_per_batch
        self.cache_dir = resolve_cache_dir(cache_dir)
        self.seed = seed
        self.split_seed = split_seed
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.batches_per_epoch = batches_per_epoch
        self.val_batches = val_batches
        self.val_fidelity = bool(val_fidelity)
        self._dataset: GroupedImages | None = None
        self._splits: dict[str, Split] = {}
        self._train_loader: GroupedLoader | None = None
        self._train_state: dict[str, Any] | None = None

    def default_layout(self) -> dict[str, int | None]:
        """The data set's own latent layout: ``layout_sizes`` where the class declares it;
        otherwise one latent per factor that varies, two for a periodic one (a full turn is
        a circle, which one number cannot follow without a jump), and ``intrinsic`` for the
        rest of the code."""
        if self.layout_sizes is not None:
            return dict(self.layout_sizes)
        sizes: dict[str, int | None] = {
            factor.name: 2 if factor.periodic else 1
            for factor in self._factors
            if len(factor.values) > 1
        }
        return {**sizes, INTRINSIC: None}

    @property
    def factors(self) -> list[FactorSpec]:
        return list(self._factors)

    @property
    def factor_dicts(self) -> list[dict[str, Any]]:
        """The factors in plain form (``FactorSpec.to_dict()``), as models and configs take them."""
        return [factor.to_dict() for factor in self._factors]

    @property
    def training_factor_dicts(self) -> list[dict[str, Any]]:
        """The factors as the training split sees them: a factor of ``train_range`` takes only
        the values inside its range (what a model may know of its training data)."""
        kept = {r.factor.name: r.kept_values() for r in self.train_range}
        return [{**f.to_dict(), "values": kept.get(f.name, list(f.values))} for f in self._factors]

    @property
    def factor_names(self) -> list[str]:
        return [factor.name for factor in self._factors]

    @property
    def columns(self) -> tuple[str, ...]:
        """Column names of the code table: identity, then the factors."""
        return (IDENTITY, *self.factor_names)

    @property
    def group_types(self) -> list[str]:
        """Group names in layout order; a batch's ``group_type`` indexes this list."""
        return list(self._group_types)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.image_size, self.image_size)

    @property
    def cache_path(self) -> Path:
        return self.cache_dir / cache_key(self.cache_config())

    @abstractmethod
    def cache_config(self) -> dict[str, Any]:
        """Everything that changes the cached pixels or codes, and nothing else."""

    def cache_metadata(self, **extra: Any) -> dict[str, Any]:
        """What every cache's ``meta.json`` records (factors, columns, config), plus ``extra``.

        :meth:`setup` checks the columns against this data set's, so a cache is never read
        with a different meaning.
        """
        return {
            "factors": [factor.to_dict() for factor in self._factors],
            "columns": list(self.columns),
            "config": self.cache_config(),
            **extra,
        }

    @abstractmethod
    def cache_contents(self) -> CacheContents:
        """What :meth:`write_cache` renders or converts into the cache."""

    def write_cache(self, root: Path, key: str) -> None:
        """Render or convert the data set into ``root/key``, logging what and where."""
        contents = self.cache_contents()
        log.info("%s into %s", contents.description, root / key)
        meta = self.cache_metadata(**contents.metadata)
        build_cache(
            root,
            key,
            self.image_shape,
            contents.items(meta),
            contents.capacity,
            meta,
            desc=contents.progress,
            total=contents.progress_total,
        )

    def prepare_data(self) -> None:
        """Build the cache unless it exists (Lightning runs this on one process per node)."""
        path = self.cache_path
        if is_complete(path):
            log.info("Using the data cache %s", path)
            return
        self.write_cache(self.cache_dir, path.name)
        log.info("Wrote the data cache %s", path)

    def setup(self, stage: str | None = None) -> None:
        """Map the cache and split it by identity; every stage gets every split (cheap)."""
        if self._splits:
            return
        if not is_complete(self.cache_path):
            self.prepare_data()
        images, codes, meta = open_cache(self.cache_path)
        if tuple(meta.get("columns", ())) != self.columns or images.shape[1:] != self.image_shape:
            raise ConfigError(
                f"The data cache {self.cache_path} holds columns {meta.get('columns')} and images "
                f"{images.shape[1:]}, but this data set expects {list(self.columns)} and "
                f"{self.image_shape}. Delete that directory so that it is rebuilt."
            )
        self._dataset = GroupedImages(
            images, factor_values(self._factors, codes[:, 1:]), codes[:, 0].astype(np.int64)
        )
        assigned = self.split_identities(np.unique(codes[:, 0]), meta)
        for name in SPLITS:
            ids = np.sort(assigned[name])
            rows = np.flatnonzero(np.isin(codes[:, 0], ids))
            ranged = name == "train" and bool(self.train_range)
            if ranged:
                values = factor_values(self._factors, codes[rows, 1:])
                rows = rows[in_range(self.train_range, values, self.factor_names)]
            within = ", within dataset.train_range" if ranged else ""
            description = f"{name} split ({len(ids)} identities, {len(rows)} images{within})"
            index = GroupIndex.build(codes[rows], self.columns, rows, description)
            gallery = Gallery.build(self._factors, codes[rows], rows, ids, self._dataset)
            self._splits[name] = Split(name, ids, rows, index, gallery)
        self._check_groups()
        for factor_range in self.train_range:
            log.info("Training sees %s; validation and test see them all", factor_range)
        log.info(
            "Identities per split: %s",
            {name: len(s.identities) for name, s in self._splits.items()},
        )

    def split_identities(
        self, identities: np.ndarray, meta: Mapping[str, Any]
    ) -> dict[str, np.ndarray]:
        """The identities of each split (a key per name in ``SPLITS``), out of ``identities``.

        By default ``split`` draws them at random, seeded by ``split_seed``. A data set with an
        official split overrides this, reading which identities go where from its cache's
        ``meta`` (written by :meth:`write_cache`).
        """
        counts = split_counts(self.split, len(identities))
        # Test identities come first in the permutation, so that they stay the same when only
        # the train or val share changes.
        order = np.random.default_rng(self.split_seed).permutation(identities)
        first = {"test": 0, "val": counts["test"], "train": counts["test"] + counts["val"]}
        return {name: order[first[name] : first[name] + counts[name]] for name in SPLITS}

    def _check_groups(self) -> None:
        """Fail at setup, not at the first validation, if a split cannot form a drawn group."""
        for split in self._splits.values():
            if len(split.identities):
                for name, p in zip(self._group_types, self.type_probabilities, strict=True):
                    if p > 0:
                        split.index.candidates(name)

    def split_info(self, split: str) -> Split:
        """The identities, rows and group index of ``split`` (after :meth:`setup`)."""
        if not self._splits:
            raise RuntimeError("call setup() before asking for a split")
        if split not in self._splits:
            raise ConfigError(f"Unknown split '{split}'; the splits are {list(SPLITS)}.")
        return self._splits[split]

    def _rank_and_world(self) -> tuple[int, int]:
        if self.trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size

    def _sampler(
        self, split: str, shuffle: bool, batches: int | None = None, *, evaluation: bool = False
    ) -> GroupedBatchSampler:
        """This rank's sampler of ``split``: shuffled per epoch (training) or a fixed sequence,
        in the training batches' shape or, for ``evaluation``, in the evaluation batches'."""
        info = self.split_info(split)
        rank, world_size = self._rank_and_world()
        if batches is None and shuffle:
            per_batch = self.groups_per_batch * self.group_size
            batches = self.batches_per_epoch or max(1, len(info.rows) // (per_batch * world_size))
        elif batches is None:
            batches = max(1, math.ceil(self.val_batches / world_size))
        return GroupedBatchSampler(
            info.index,
            self._group_types,
            self.ratio,
            self.eval_group_size if evaluation else self.group_size,
            self.eval_groups_per_batch if evaluation else self.groups_per_batch,
            batches,
            seed=self.seed,
            rank=rank,
            world_size=world_size,
            shuffle=shuffle,
        )

    def _loader_options(self) -> dict[str, Any]:
        return {
            "batch_size": None,
            "num_workers": self.num_workers,
            "persistent_workers": self.num_workers > 0,
            "pin_memory": self.pin_memory and torch.cuda.is_available(),
        }

    def _fixed_loader(
        self, sampler: GroupedBatchSampler, gallery: Gallery | None = None
    ) -> DataLoader:
        """A fixed sequence of grouped batches read through a ``SequentialSampler``.

        That is what Lightning checks for under ``trainer.overfit_batches``; it would otherwise
        replace the grouped sampler with one over single images, which cannot form groups.
        """
        batches = FixedBatches(self._dataset, list(sampler), gallery)
        return DataLoader(batches, sampler=SequentialSampler(batches), **self._loader_options())

    def train_dataloader(self) -> GroupedLoader | DataLoader:
        overfit = getattr(self.trainer, "overfit_batches", 0)
        if overfit:
            # The same training batches, in the same order, every epoch.
            count = overfit if isinstance(overfit, int) else (self.batches_per_epoch or 1) * overfit
            return self._fixed_loader(self._sampler("train", False, max(1, math.ceil(count))))
        sampler = self._sampler("train", shuffle=True)
        loader = GroupedLoader(self._dataset, sampler=sampler, **self._loader_options())
        if self._train_state is not None:
            loader.load_state_dict(self._train_state)
            self._train_state = None
        self._train_loader = loader
        return loader

    def state_dict(self) -> dict[str, Any]:
        """The training loader's place in its epoch, saved with every checkpoint.

        Lightning restores a loader's own state only if the loader does not exist yet when the
        checkpoint is read; anything that asks for the number of training steps early (a
        learning-rate schedule calling ``estimated_stepping_batches``) creates it before that,
        and the run would silently restart the epoch. Saving the position here as well makes
        the restore independent of that order.
        """
        return {"train_loader": self._train_loader.state_dict()} if self._train_loader else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint's position, now or when the training loader is made."""
        position = state.get("train_loader")
        if position is None:
            return
        if self._train_loader is not None:
            self._train_loader.load_state_dict(position)
        else:
            self._train_state = dict(position)

    def batches_for_pairs(self, pairs: int) -> int:
        """Evaluation batches that give every drawn group type at least ``pairs`` distinct
        (a, b) pairs of different images.

        Counted in evaluation batches (``eval_group_size`` x ``eval_groups_per_batch``).
        A group of S images pairs each image with the next; a factor with fewer values than S
        repeats views, so its groups hold fewer distinct pairs
        (:func:`~datamodules.sampler.distinct_pairs_per_group`: the faces' 5 elevations give 5
        per group of 10), and evaluation counts each once. Evaluation sequences give the group
        types with a positive ratio equal turns, so the type with the fewest distinct pairs per
        group sets the number of groups.
        """
        if isinstance(pairs, bool) or not isinstance(pairs, int) or pairs < 1:
            raise ConfigError(f"pairs must be a positive integer, got {pairs!r}.")
        values = {factor.name: len(factor.values) for factor in self._factors}
        drawn = [name for name, weight in self.ratio.items() if weight > 0]
        size = self.eval_group_size
        fewest = min(distinct_pairs_per_group(values.get(name, size), size) for name in drawn)
        groups = len(drawn) * math.ceil(pairs / max(fewest, 1))
        return math.ceil(groups / self.eval_groups_per_batch)

    def evaluation_loader(self, split: str) -> DataLoader | list:
        """``val_batches`` fixed batches of ``split`` in which every group type takes turns.

        Test batches (and validation batches with ``val_fidelity``) carry the line-up of the
        split's identities at each image's view, on which the fidelity of re-rendered views is
        scored; reading and scoring it costs about as much as the validation itself, so the
        validations during training go without unless asked.
        """
        info = self.split_info(split)
        if not self.val_batches or not len(info.identities):
            return []
        lineups = split == "test" or self.val_fidelity
        return self._fixed_loader(
            self._sampler(split, shuffle=False, evaluation=True), info.gallery if lineups else None
        )

    def val_dataloader(self) -> DataLoader | list:
        return self.evaluation_loader("val")

    def test_dataloader(self) -> DataLoader | list:
        return self.evaluation_loader("test")

    def sample_images(self, split: str, n: int, seed: int = 0) -> LabelledImages:
        """``n`` fixed images of ``split`` (same ``seed``, same images), for pictures and metrics.

        Returns images ``[n, C, H, W]``, factors ``[n, F]`` and identities ``[n]``, ordered by row.
        """
        rows = self.split_info(split).rows
        if not 0 < n <= len(rows):
            raise ConfigError(
                f"Asked for {n} sample images of the {split} split, which has {len(rows)}. "
                "Ask for fewer images or give the split more identities."
            )
        chosen = np.sort(np.random.default_rng(seed).choice(rows, size=n, replace=False))
        return self._dataset.read(chosen)

    def sample_up_to(self, split: str, n: int, seed: int = 0) -> LabelledImages:
        """Up to ``n`` fixed images of ``split`` (all of them when it holds fewer)."""
        return self.sample_images(split, min(n, len(self.split_info(split).rows)), seed)

    def image_options(self) -> ImageOptions:
        """How an image file becomes this data set's input: renders are squares of the image
        size, gray repeated over the channels, not cropped, on black; a data set read from
        files converts as its files are converted."""
        return ImageOptions(size=self.image_size, channels=self.channels)

    def convert_image(self, source: str | Path | BinaryIO) -> torch.Tensor:
        """Any image file (a user's upload) as this data set's input ``[C, S, S]`` in [0, 1].

        Raises :class:`dcign.errors.UnreadableImageError` when it cannot be decoded.
        """
        return torch.from_numpy(convert_file(source, self.image_options())).float() / 255.0

    def render_truth(self, identity: int, values: Mapping[str, float]) -> torch.Tensor | None:
        """The true image ``[C, S, S]`` of ``identity`` at factor ``values`` (radians), for a
        data set whose renderer can draw any view; ``None`` for one that only holds images."""
        return None

    def reference_images(self, n: int, seed: int = 0) -> LabelledImages:
        """Up to ``n`` fixed images that maps are fitted on (a factor value -> latents, which
        latents vary most): validation identities, or training ones where the data set has no
        validation split; never the test images that scores and the report then show."""
        split = "val" if len(self.split_info("val").rows) else "train"
        return self.sample_up_to(split, n, seed)

    def scene_views(self, split: str, factor: str, n_scenes: int, seed: int = 0) -> LabelledImages:
        """Up to ``n_scenes`` fixed scenes of ``split``, each seen at all its values of ``factor``.

        A scene is one identity with every other factor held fixed; re-rendering it at other
        values of ``factor`` is what novel-view pictures compare against. Scenes are drawn (fixed
        by ``seed``) among those with the most views, so that all have the same number V of
        views, ordered by the factor's value index. Returns ``images [n, V, C, H, W]``,
        ``factors [n, V, F]`` and ``identity [n, V]``.
        """
        sets = self.split_info(split).index.candidates(factor)
        sizes = np.diff(sets.offsets)
        complete = np.flatnonzero(sizes == sizes.max())
        rng = np.random.default_rng(seed)
        chosen = np.sort(rng.choice(complete, size=min(n_scenes, len(complete)), replace=False))
        return self._dataset.read(np.stack([sets.members(i) for i in chosen]))
