"""The factor-grouped batch sampler: group semantics, ratios, determinism, sharding, resume."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from datamodules.sampler import GroupedBatchSampler, GroupIndex
from dcign.errors import ConfigError

COLUMNS = ("identity", "azimuth", "elevation", "light")
GROUP_TYPES = ["light", "intrinsic", "azimuth", "elevation"]  # deliberately not column order
COLUMN_OF = {"intrinsic": 0, "azimuth": 1, "elevation": 2, "light": 3}


def dense_codes(sizes: tuple[int, ...] = (6, 5, 3, 4)) -> np.ndarray:
    return np.array(list(itertools.product(*(range(n) for n in sizes))), dtype=np.int64)


def make_sampler(codes: np.ndarray | None = None, **overrides) -> GroupedBatchSampler:
    codes = dense_codes() if codes is None else codes
    args = {
        "index": GroupIndex.build(codes, COLUMNS),
        "group_types": GROUP_TYPES,
        "ratio": {"azimuth": 1, "elevation": 1, "light": 1, "intrinsic": 1},
        "group_size": 4,
        "groups_per_batch": 3,
        "batches_per_epoch": 10,
        "seed": 7,
    }
    return GroupedBatchSampler(**{**args, **overrides})


def varying_columns(codes: np.ndarray, rows: np.ndarray) -> list[int]:
    return [c for c in range(codes.shape[1]) if len(np.unique(codes[rows, c])) > 1]


def as_tuples(batches: list) -> list[tuple]:
    return [(idx.tobytes(), types.tobytes()) for idx, types in batches]


def test_every_group_varies_exactly_the_factor_of_its_type():
    codes = dense_codes()
    batches = list(make_sampler(codes, batches_per_epoch=50))
    assert len(batches) == 50
    seen_types = set()
    for indices, types in batches:
        assert indices.dtype == np.int64 and indices.shape == (3, 4)
        assert types.dtype == np.int64 and types.shape == (3,)
        for rows, t in zip(indices, types, strict=True):
            seen_types.add(GROUP_TYPES[t])
            assert varying_columns(codes, rows) == [COLUMN_OF[GROUP_TYPES[t]]]
    assert seen_types == set(GROUP_TYPES)


def test_groups_of_one_batch_mix_types():
    batches = list(make_sampler(groups_per_batch=8, batches_per_epoch=20))
    assert any(len(set(types.tolist())) > 1 for _, types in batches)


def test_candidate_sets_with_missing_rows_match_a_brute_force_grouping():
    rng = np.random.default_rng(0)
    full = dense_codes((5, 4, 3, 3))
    codes = full[rng.random(len(full)) < 0.5]
    row_ids = np.arange(len(codes)) + 1000  # rows of a split keep their global ids
    index = GroupIndex.build(codes, COLUMNS, row_ids=row_ids)
    for group_type, vary in COLUMN_OF.items():
        expected: dict[tuple, list[int]] = {}
        for i, row in enumerate(codes):
            expected.setdefault(tuple(np.delete(row, vary)), []).append(1000 + i)
        expected_sets = {
            frozenset(rows)
            for rows in expected.values()
            if len({codes[r - 1000, vary] for r in rows}) >= 2
        }
        sets = index.candidates(group_type)
        found = {frozenset(sets.members(i).tolist()) for i in range(len(sets))}
        assert found == expected_sets, group_type
        assert len(found) > 0


def test_sampled_groups_from_sparse_data_still_vary_one_factor():
    rng = np.random.default_rng(1)
    full = dense_codes()
    codes = full[rng.random(len(full)) < 0.4]
    for indices, types in make_sampler(codes, batches_per_epoch=40):
        for rows, t in zip(indices, types, strict=True):
            assert varying_columns(codes, rows) == [COLUMN_OF[GROUP_TYPES[t]]]


def test_small_set_cycles_through_every_value_and_large_set_draws_without_replacement():
    codes = dense_codes((30, 5, 1, 1))
    sampler = make_sampler(
        codes,
        ratio={"azimuth": 1, "intrinsic": 1},
        group_size=12,
        batches_per_epoch=30,
    )
    for indices, types in sampler:
        for rows, t in zip(indices, types, strict=True):
            if GROUP_TYPES[t] == "azimuth":  # 5 values for 12 slots: each 2 or 3 times
                counts = np.bincount(codes[rows, 1], minlength=5)
                assert counts.min() >= 2 and counts.max() <= 3
            else:  # 30 identities for 12 slots: all distinct
                assert len(set(rows.tolist())) == 12


def test_ratio_frequencies_match_configuration():
    ratio = {"azimuth": 1, "elevation": 2, "intrinsic": 5, "light": 0}
    sampler = make_sampler(ratio=ratio, groups_per_batch=8, batches_per_epoch=500)
    counts = np.bincount(np.concatenate([types for _, types in sampler]), minlength=4)
    observed = {name: counts[i] for i, name in enumerate(GROUP_TYPES)}
    assert observed["light"] == 0
    total = counts.sum()
    chi2 = sum(
        (observed[name] - total * w / 8) ** 2 / (total * w / 8)
        for name, w in ratio.items()
        if w > 0
    )
    assert chi2 < 13.8  # chi-square, 2 degrees of freedom, p = 0.001


def test_layout_groups_without_ratio_are_never_drawn():
    sampler = make_sampler(ratio={"elevation": 3}, batches_per_epoch=20)
    assert {GROUP_TYPES[t] for _, types in sampler for t in types} == {"elevation"}


def test_same_seed_and_epoch_give_the_same_sequence():
    first, second = make_sampler(), make_sampler()
    first.set_epoch(3)
    second.set_epoch(3)
    assert as_tuples(list(first)) == as_tuples(list(second))
    other_epoch = make_sampler()
    other_epoch.set_epoch(4)
    assert as_tuples(list(other_epoch)) != as_tuples(list(first))
    assert as_tuples(list(make_sampler(seed=8))) != as_tuples(list(make_sampler()))


def test_fixed_sequence_ignores_the_epoch_and_repeats():
    sampler = make_sampler(shuffle=False)
    before = as_tuples(list(sampler))
    assert as_tuples(list(sampler)) == before
    sampler.set_epoch(5)
    assert as_tuples(list(sampler)) == before
    assert as_tuples(list(make_sampler())) != before


def test_fixed_sequence_scores_every_group_type_equally_often():
    # An intrinsic-heavy training ratio must not starve the extrinsic types of evaluation groups:
    # 8 batches x 3 groups over 4 types is exactly 6 groups of each, also when 2 ranks share it.
    ratio = {"azimuth": 1, "elevation": 1, "light": 1, "intrinsic": 10}
    whole = make_sampler(shuffle=False, ratio=ratio, batches_per_epoch=8)
    types = np.concatenate([t for _, t in whole])
    assert np.bincount(types, minlength=4).tolist() == [6, 6, 6, 6]
    shards = [
        make_sampler(shuffle=False, ratio=ratio, batches_per_epoch=4, rank=r, world_size=2)
        for r in range(2)
    ]
    shard_types = np.concatenate([t for shard in shards for _, t in shard])
    assert np.bincount(shard_types, minlength=4).tolist() == [6, 6, 6, 6]
    # A type without a positive ratio is never drawn, not even for evaluation.
    no_light = make_sampler(shuffle=False, ratio={**ratio, "light": 0}, batches_per_epoch=4)
    counts = np.bincount(np.concatenate([t for _, t in no_light]), minlength=4).tolist()
    assert counts == [0, 4, 4, 4]  # light is type 0 in GROUP_TYPES


def test_ddp_ranks_split_the_global_sequence():
    global_run = make_sampler(batches_per_epoch=12)
    global_run.set_epoch(2)
    expected = as_tuples(list(global_run))
    shards = []
    for rank in range(3):
        sampler = make_sampler(batches_per_epoch=4, rank=rank, world_size=3)
        sampler.set_epoch(2)
        shards.append(as_tuples(list(sampler)))
    assert [len(s) for s in shards] == [4, 4, 4]
    for a, b in itertools.combinations(shards, 2):
        assert not set(a) & set(b)
    interleaved = [batch for step in zip(*shards, strict=True) for batch in step]
    assert interleaved == expected


@pytest.mark.parametrize("done", [0, 3, 10])
def test_resume_yields_exactly_the_remaining_batches(done):
    uninterrupted = make_sampler(rank=1, world_size=2)
    uninterrupted.set_epoch(4)
    expected = as_tuples(list(uninterrupted))

    interrupted = make_sampler(rank=1, world_size=2)
    interrupted.set_epoch(4)
    consumed = list(itertools.islice(iter(interrupted), done))
    state = interrupted.state_dict()
    assert state["epoch"] == 4 and state["batches_done"] == done

    resumed = make_sampler(rank=1, world_size=2, seed=0)
    resumed.load_state_dict(state)
    resumed.set_epoch(4)  # Lightning re-announces the epoch it resumes
    assert as_tuples(consumed) + as_tuples(list(resumed)) == expected
    resumed.set_epoch(5)
    assert len(list(resumed)) == 10


def test_next_pass_after_a_resumed_one_is_complete():
    sampler = make_sampler()
    sampler.load_state_dict({"epoch": 0, "batches_done": 6, "seed": 7})
    assert len(list(sampler)) == 4
    assert len(list(sampler)) == 10


def bad_sampler_cases():
    single_light = dense_codes((4, 3, 2, 1))
    return [
        (
            {"group_types": ["azimuth", "pose"], "ratio": {"azimuth": 1}},
            "Unknown group type 'pose'",
        ),
        ({"ratio": {"azimuth": 1, "shape": 2}}, "shape"),
        ({"ratio": {"azimuth": -1, "intrinsic": 1}}, "non-negative"),
        ({"ratio": {"azimuth": 0}}, "positive total"),
        ({"group_size": 1}, "group_size"),
        ({"groups_per_batch": 0}, "groups_per_batch"),
        ({"batches_per_epoch": 0}, "batches_per_epoch"),
        ({"rank": 2, "world_size": 2}, "rank"),
        ({"codes": single_light, "ratio": {"light": 1}}, "Factor 'light' takes a single value"),
        ({"codes": dense_codes((1, 3, 2, 2)), "ratio": {"intrinsic": 1}}, "single identity"),
    ]


@pytest.mark.parametrize(("overrides", "message"), bad_sampler_cases())
def test_bad_inputs_raise_config_error_saying_what_is_wrong(overrides, message):
    with pytest.raises(ConfigError, match=message):
        make_sampler(**overrides)


def test_single_valued_factor_is_fine_while_it_is_not_drawn():
    codes = dense_codes((4, 3, 2, 1))
    sampler = make_sampler(codes, ratio={"azimuth": 1, "light": 0})
    assert len(list(sampler)) == 10


def test_factor_named_intrinsic_is_rejected():
    with pytest.raises(ConfigError, match="may not be called 'intrinsic'"):
        GroupIndex.build(dense_codes((2, 2)), ("identity", "intrinsic"))
