"""The disentanglement scores of DC-IGN and its baseline, one network after the other against
side by side, as a scoring validation computes them.

A scoring validation (epochs 5, 10 and 15 of the default run, and every test) computes MIG,
DCI, SAP, beta-VAE and FactorVAE for both networks. scikit-learn's classifiers behind them run
on one thread, so ``NetworkScores`` gives each network's scores a thread of its own
(:func:`dcign.scoring.network_scores.run_side_by_side`). This script times both ways on the
same codes, rounds alternating in one process, and checks that they give the same numbers.

    python benchmarks/score_speed.py --out score_speed.json
    python benchmarks/score_speed.py --codes 4800 --preset default

The codes stand in for a validation's posterior means (``--codes``: the default run's 48
batches of 40 images): 32 latents, the faces' factors (15 azimuths, 5 elevations, 7 lights,
48 identities), each factor read by one latent with noise and the rest noise. The classifiers'
cost depends on the numbers of codes, latents and factor values, not on what the codes mean.
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable
from typing import Any

import common
import numpy as np

from dcign.scoring.network_metrics import score_codes
from dcign.scoring.network_scores import run_side_by_side

FACTOR_VALUES = {"azimuth": 15, "elevation": 5, "light": 7, "identity": 48}
LATENTS = 32
NETWORKS = ("dcign", "baseline")


def stand_in_codes(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` codes ``[N, 32]`` and their factor values ``[N, 4]``."""
    rng = np.random.default_rng(seed)
    labels = np.stack([rng.integers(0, n, count) for n in FACTOR_VALUES.values()], axis=1)
    read = labels / np.array(list(FACTOR_VALUES.values())) + rng.normal(0, 0.05, labels.shape)
    codes = np.concatenate([read, rng.normal(size=(count, LATENTS - labels.shape[1]))], axis=1)
    return codes, labels.astype(float)


def scoring_work(count: int, seed: int, preset: str) -> dict[str, Callable[[], dict]]:
    """Each network's scores as a call, on codes of its own (as two networks have)."""
    return {
        name: functools.partial(
            score_codes, *stand_in_codes(count, seed + offset), list(FACTOR_VALUES), preset, 0
        )
        for offset, name in enumerate(NETWORKS)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_arguments(parser)
    parser.add_argument(
        "--codes", type=int, default=1920, help="codes per network (default: 48 batches of 40)"
    )
    parser.add_argument("--preset", choices=("fast", "default"), default="fast")
    parser.add_argument("--rounds", type=int, default=None, help="alternating rounds (5)")
    args = parser.parse_args()
    common.start(args.threads, args.seed, args.allocator)
    count, rounds = (120, 1) if args.quick else (args.codes, args.rounds or 5)
    work = scoring_work(count, args.seed, args.preset)
    results: dict[str, list] = {"one after the other": [], "side by side": []}
    ways = {
        "one after the other": lambda: {name: call() for name, call in work.items()},
        "side by side": lambda: run_side_by_side(work),
    }
    seconds = common.alternate(
        {name: lambda name=name: _record(results[name], ways[name]) for name in ways}, rounds
    )
    same = all(
        after == beside
        for after, beside in zip(
            results["one after the other"], results["side by side"], strict=True
        )
    )
    ratio = common.paired_ratio(seconds["one after the other"], seconds["side by side"])
    common.print_table(
        f"disentanglement scores of {len(NETWORKS)} networks, {count} codes each, "
        f"{args.preset} preset, {args.threads} threads",
        ["way", "s (median)", "speed-up", "same numbers"],
        [
            [
                way,
                common.summary(seconds[way])["median"],
                ratio if way == "side by side" else 1.0,
                same,
            ]
            for way in ways
        ],
    )
    common.write_json(
        args.out,
        {
            "benchmark": "score_speed",
            "codes": count,
            "preset": args.preset,
            "rounds": rounds,
            "seconds": {way: common.summary(samples) for way, samples in seconds.items()},
            "speed_up": ratio,
            "same_numbers": same,
            "machine": common.machine_info(args.allocator),
        },
    )


def _record(into: list, way: Callable[[], Any]) -> float:
    """Time one way of scoring, keep what it computed, return the seconds."""
    began = time.perf_counter()
    into.append(way())
    return time.perf_counter() - began


if __name__ == "__main__":
    main()
