"""Factor-grouped batch sampling: the data side of DC-IGN's training procedure.

DC-IGN learns which latent means what only because every group it trains on varies exactly
one factor (paper, section 3.1): a group of ``group_size`` images of one face turning, or of
one light sweeping, or - for the ``intrinsic`` group - of different identities seen under one
pose and light. This module finds such groups in an integer code table and draws them.

The code table ``codes [N, K]`` holds one row per image: column 0 is the identity id, columns
1.. are indices into each factor's values. Groups are found by exact agreement of rows, so the
same code works for a dense rendered grid and for real data with missing views.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch.utils.data import Sampler

from dcign.errors import ConfigError
from dcign.model.layout import INTRINSIC

BatchSpec = tuple[np.ndarray, np.ndarray]
"""One batch to load: row indices ``int64 [G, S]`` and group-type ids ``int64 [G]``."""

# Tags that keep the random streams of training and of fixed (evaluation) sequences apart.
_SHUFFLED_STREAM = 0
_FIXED_STREAM = 1


@dataclass(frozen=True)
class CandidateSets:
    """Sets of rows that may form a group of one type, stored flat for cheap random access.

    Set ``i`` is ``rows[offsets[i]:offsets[i + 1]]``; every set holds at least two distinct
    values of the varying column and one value of every other column.
    """

    rows: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def members(self, i: int) -> np.ndarray:
        return self.rows[self.offsets[i] : self.offsets[i + 1]]


@dataclass(frozen=True)
class GroupIndex:
    """The candidate sets of every group type of one code table (for example, one split).

    Group types are ``intrinsic`` (identity varies) and the factor names (that factor varies).
    ``distinct`` counts the values each group type's column takes, so errors can tell a factor
    that never varies from one whose views are too sparse to form a group.
    """

    columns: tuple[str, ...]
    sets: Mapping[str, CandidateSets]
    distinct: Mapping[str, int]
    description: str

    @classmethod
    def build(
        cls,
        codes: np.ndarray,
        columns: Sequence[str],
        row_ids: np.ndarray | None = None,
        description: str = "data",
    ) -> GroupIndex:
        """Index ``codes [N, K]`` whose columns are named ``columns`` (identity first).

        ``row_ids`` are the ids the sampler hands out for the rows (default ``0..N-1``); a split
        passes the rows' positions in the full data set. ``description`` names the table in
        error messages (after "the").
        """
        codes = np.asarray(codes)
        columns = tuple(columns)
        if codes.ndim != 2 or codes.shape[1] != len(columns) or not columns:
            raise ValueError(
                f"codes must have shape [N, {len(columns)}] to match columns {columns}, "
                f"got {codes.shape}"
            )
        if not np.issubdtype(codes.dtype, np.integer):
            raise ValueError(f"codes must be integers, got dtype {codes.dtype}")
        if INTRINSIC in columns[1:]:
            raise ConfigError(
                f"A factor may not be called '{INTRINSIC}': that name means 'identity varies' "
                "in group types and latent layouts. Rename the factor."
            )
        rows = np.arange(len(codes)) if row_ids is None else np.asarray(row_ids)
        if rows.shape != (len(codes),):
            raise ValueError(f"row_ids must have shape ({len(codes)},), got {rows.shape}")
        types = (INTRINSIC, *columns[1:])
        return cls(
            columns=columns,
            sets={t: _candidate_sets(codes, v, rows.astype(np.int64)) for v, t in enumerate(types)},
            distinct={t: len(np.unique(codes[:, v])) for v, t in enumerate(types)},
            description=description,
        )

    @property
    def group_types(self) -> tuple[str, ...]:
        return tuple(self.sets)

    def check_known(self, group_type: str) -> None:
        """A ConfigError unless ``group_type`` is ``intrinsic`` or a factor of this table."""
        if group_type not in self.sets:
            raise ConfigError(
                f"Unknown group type '{group_type}'. The group types of the {self.description} "
                f"are {list(self.group_types)}: '{INTRINSIC}' (identity varies) or a factor "
                "name. Fix the names in dataset.ratio / model.layout."
            )

    def candidates(self, group_type: str) -> CandidateSets:
        """The candidate sets of ``group_type``; a ConfigError if it cannot form any group."""
        self.check_known(group_type)
        sets = self.sets[group_type]
        if len(sets):
            return sets
        if group_type == INTRINSIC and self.distinct[group_type] < 2:
            raise ConfigError(
                f"The {self.description} holds a single identity, so no '{INTRINSIC}' group can "
                "vary identity. Give it at least two identities (dataset.split or "
                f"dataset.n_identities) or set dataset.ratio.{INTRINSIC}=0."
            )
        if self.distinct[group_type] < 2:
            raise ConfigError(
                f"Factor '{group_type}' takes a single value in the {self.description}, so it is "
                f"not a group type: no group can vary it. Set dataset.ratio.{group_type}=0 or "
                "give the factor more values."
            )
        raise ConfigError(
            f"No two rows of the {self.description} differ only in '{group_type}', so no group "
            f"can vary it (views are missing). Set dataset.ratio.{group_type}=0 or provide "
            "complete view sweeps."
        )


def _candidate_sets(codes: np.ndarray, vary: int, row_ids: np.ndarray) -> CandidateSets:
    """Rows that agree on every column but ``vary``, kept where ``vary`` takes >= 2 values.

    One lexsort puts each set's rows next to each other (sorted by the varying column), so set
    boundaries and distinct-value counts are array differences, with no loop over rows.
    """
    if not len(codes):
        return CandidateSets(rows=np.zeros(0, np.int64), offsets=np.zeros(1, np.int64))
    others = [c for c in range(codes.shape[1]) if c != vary]
    order = np.lexsort([codes[:, vary], *(codes[:, c] for c in others)])
    ordered = codes[order]
    new_set = np.any(ordered[1:, others] != ordered[:-1, others], axis=1)
    new_value = (ordered[1:, vary] != ordered[:-1, vary]) & ~new_set
    starts = np.flatnonzero(np.concatenate([[True], new_set]))
    distinct = 1 + np.add.reduceat(np.concatenate([[0], new_value]), starts)
    lengths = np.diff(np.append(starts, len(ordered)))
    keep = distinct >= 2
    rows = row_ids[order][np.repeat(keep, lengths)]
    offsets = np.concatenate([[0], np.cumsum(lengths[keep])]).astype(np.int64)
    return CandidateSets(rows=rows, offsets=offsets)


def check_group_shape(group_size: int, groups_per_batch: int, prefix: str = "") -> None:
    """Reject batch shapes that cannot hold a group (a group needs two images to vary);
    ``prefix`` names the options in the message (``eval_`` for the evaluation batches)."""
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 2:
        raise ConfigError(
            f"dataset.{prefix}group_size must be an integer >= 2 (a group needs at least two "
            f"images for a factor to vary), got {group_size!r}. "
            "The paper uses dataset.group_size=20."
        )
    if (
        isinstance(groups_per_batch, bool)
        or not isinstance(groups_per_batch, int)
        or groups_per_batch < 1
    ):
        raise ConfigError(
            f"dataset.{prefix}groups_per_batch must be a positive integer, got "
            f"{groups_per_batch!r}. The paper trains on one group per step "
            "(dataset.groups_per_batch=1)."
        )


def ratio_probabilities(group_types: Sequence[str], ratio: Mapping[str, float]) -> np.ndarray:
    """How often each of ``group_types`` is drawn: ``ratio`` normalised, 0 where it is absent."""
    unknown = [name for name in ratio if name not in group_types]
    if unknown:
        raise ConfigError(
            f"dataset.ratio names {unknown}, which are not groups of the latent layout "
            f"{list(group_types)}. Every ratio key must be a layout group name; fix "
            "dataset.ratio or model.layout."
        )
    weights = np.array([float(ratio.get(name, 0.0)) for name in group_types])
    if not np.all(np.isfinite(weights)) or np.any(weights < 0) or not weights.sum() > 0:
        raise ConfigError(
            f"dataset.ratio must give non-negative, finite weights with a positive total, got "
            f"{dict(ratio)}. Example (paper, faces): "
            "dataset.ratio='{azimuth: 1, elevation: 1, light: 1, intrinsic: 10}'."
        )
    return weights / weights.sum()


def _check_count(value: int, name: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}.")


def draw_members(members: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` rows of one candidate set.

    With enough rows they are drawn without replacement. A set smaller than ``size`` (say 15
    azimuths for a group of 20) cycles through one random permutation of the set instead, so
    every value appears at least once and value counts differ by at most one.
    """
    if len(members) >= size:
        return rng.choice(members, size=size, replace=False)
    return np.resize(rng.permutation(members), size)


def distinct_pairs_per_group(values: int, size: int) -> int:
    """Pairs (s, s + 1 mod S) of two different images that a group of ``size`` drawn by
    :func:`draw_members` from a set of ``values`` rows holds, each counted once.

    A set with fewer rows than the group cycles through them, so some pairs come twice (and
    with ``size mod values == 1`` the last image is paired with itself): five elevations in a
    group of 10 give 5 distinct pairs, seven lights 8.
    """
    cycle = np.resize(np.arange(values), size) if values < size else np.arange(size)
    return len({(a, b) for a, b in zip(cycle, np.roll(cycle, -1), strict=True) if a != b})


class GroupedBatchSampler(Sampler[BatchSpec]):
    """Yields batch specs ``(indices int64 [G, S], group_type int64 [G])`` for a map dataset.

    Use with ``DataLoader(dataset, sampler=..., batch_size=None)``. Group-type ids are positions
    in ``group_types`` (the latent layout's group names); each group of a batch draws its type
    from ``ratio`` independently, and a layout group without a positive ratio is never drawn.

    Batch ``b`` of the global sequence depends only on ``(seed, epoch, b)`` - its random
    numbers come from a generator seeded by ``SeedSequence([seed, stream, epoch, b])`` - so
    the sequence is deterministic, sharding needs no communication (rank ``r`` of ``world_size``
    takes global batches ``r, r + world_size, ...``, the same number on every rank), and
    skipping already-consumed batches on resume costs nothing. With ``shuffle=False`` the
    sequence ignores the epoch: a fixed set of groups for validation and testing, in which the
    group types with a positive ratio take turns (group ``p`` of the whole sequence, counted
    over all ranks, has type ``p mod T``). Every factor is then scored on the same number of
    groups whatever the training ratio: drawn with an intrinsic-heavy ratio, 32 validation
    groups hold one or two of each extrinsic type, and their metrics are noise.
    """

    def __init__(
        self,
        index: GroupIndex,
        group_types: Sequence[str],
        ratio: Mapping[str, float],
        group_size: int,
        groups_per_batch: int,
        batches_per_epoch: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
    ) -> None:
        super().__init__()
        check_group_shape(group_size, groups_per_batch)
        _check_count(batches_per_epoch, "batches_per_epoch", 1)
        _check_count(seed, "seed", 0)
        _check_count(world_size, "world_size", 1)
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank must lie in [0, {world_size}), got {rank!r}.")
        if len(set(group_types)) != len(group_types):
            raise ConfigError(f"Group types must be unique, got {list(group_types)}.")
        for name in group_types:
            index.check_known(name)
        probabilities = ratio_probabilities(group_types, ratio)
        self._active = np.flatnonzero(probabilities > 0)
        self._p = probabilities[self._active]
        self._sets = {int(t): index.candidates(group_types[t]) for t in self._active}
        self.group_types = tuple(group_types)
        self.group_size = group_size
        self.groups_per_batch = groups_per_batch
        self.batches_per_epoch = int(batches_per_epoch)
        self.seed = int(seed)
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.epoch = 0
        self.batches_done = 0
        self._resume_at = 0

    def __len__(self) -> int:
        return self.batches_per_epoch

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's sequence; a new epoch starts from its first batch."""
        if epoch != self.epoch:
            self.epoch = int(epoch)
            self.batches_done = 0
            self._resume_at = 0

    def state_dict(self) -> dict[str, Any]:
        """Where this rank stands: batches yielded so far in ``epoch``."""
        return {"epoch": self.epoch, "batches_done": self.batches_done, "seed": self.seed}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue a saved run: the next ``__iter__`` starts after the batches already done."""
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])
        self.batches_done = self._resume_at = int(state["batches_done"])

    @property
    def resume_at(self) -> int:
        """The batch of the epoch that the next ``__iter__`` starts from."""
        return self._resume_at

    def __iter__(self) -> Iterator[BatchSpec]:
        start, self._resume_at = self._resume_at, 0
        self.batches_done = start
        for k in range(start, self.batches_per_epoch):
            self.batches_done = k + 1
            yield self.batch(k * self.world_size + self.rank)

    def batch(self, global_index: int) -> BatchSpec:
        """Global batch ``global_index`` of the current epoch's sequence (all ranks together)."""
        stream = (
            [self.seed, _SHUFFLED_STREAM, self.epoch, global_index]
            if self.shuffle
            else [self.seed, _FIXED_STREAM, global_index]
        )
        rng = np.random.default_rng(np.random.SeedSequence(stream))
        if self.shuffle:
            drawn = rng.choice(len(self._active), size=self.groups_per_batch, p=self._p)
        else:
            first = global_index * self.groups_per_batch
            drawn = np.arange(first, first + self.groups_per_batch) % len(self._active)
        types = self._active[drawn]
        indices = np.empty((self.groups_per_batch, self.group_size), dtype=np.int64)
        for g, group_type in enumerate(types):
            sets = self._sets[int(group_type)]
            indices[g] = draw_members(sets.members(rng.integers(len(sets))), self.group_size, rng)
        return indices, types.astype(np.int64)
