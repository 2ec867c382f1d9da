"""The networks' disentanglement scores run side by side, one thread each, with the numbers
they have one after the other."""

from __future__ import annotations

import threading

import pytest
import torch

from dcign.batch import GroupedBatch
from dcign.model.layout import LatentLayout
from dcign.scoring.network_metrics import FactorInfo, NetworkMetrics
from dcign.scoring.network_scores import run_side_by_side
from tests.test_network_metrics import LinearNet

LAYOUT = LatentLayout.from_sizes({"azimuth": 1, "intrinsic": None}, 3)
AZIMUTHS = (0.1, 0.2, 0.3, 0.4, 0.5)
FACTORS = [FactorInfo("azimuth", 0, periodic=False, values=AZIMUTHS)]


@pytest.fixture
def torch_threads():
    """Set torch's thread count for one test and put it back after."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def azimuth_groups(seed: int) -> GroupedBatch:
    """30 azimuth groups of 3 views of one of 4 faces: pixel 0 is the azimuth, pixel 1 the
    face (90 observations; the scores need 50)."""
    generator = torch.Generator().manual_seed(seed)
    values = torch.tensor(AZIMUTHS)
    azimuth = values[torch.stack([torch.randperm(5, generator=generator)[:3] for _ in range(30)])]
    identity = torch.randint(0, 4, (30,), generator=generator)[:, None].expand(30, 3)
    face = 0.2 * (identity + 1).float()
    return GroupedBatch(
        images=torch.stack([azimuth, face], dim=-1).view(30, 3, 1, 1, 2),
        factors=azimuth[..., None],
        identity=identity,
        group_type=torch.zeros(30, dtype=torch.long),
    )


def fed_metrics(seed: int) -> NetworkMetrics:
    metrics = NetworkMetrics(LAYOUT, FACTORS)
    metrics.update(LinearNet(), azimuth_groups(seed))
    return metrics


def test_scores_side_by_side_are_the_scores_one_after_another(torch_threads):
    torch_threads(2)
    one_after_another = {
        name: fed_metrics(seed).compute("fast") for name, seed in (("dcign", 0), ("baseline", 1))
    }
    networks = {"dcign": fed_metrics(0), "baseline": fed_metrics(1)}
    scores = run_side_by_side({name: m.scoring("fast", seed=0) for name, m in networks.items()})
    for name, network in networks.items():
        assert {**network.measures(), **scores[name]} == one_after_another[name]
    # A code that is the factors themselves: every classifier reads them back without error,
    # and holding a factor fixed always singles out its own latent.
    assert scores["dcign"]["dci/informativeness"] == 1.0
    assert scores["dcign"]["factor_vae"] == 1.0


def test_the_calls_run_at_the_same_time(torch_threads):
    torch_threads(2)
    both_waiting = threading.Barrier(2, timeout=10)

    def meet(name: str) -> str:
        both_waiting.wait()  # broken after the timeout if the calls ran one after the other
        return name

    assert run_side_by_side({"a": lambda: meet("a"), "b": lambda: meet("b")}) == {
        "a": "a",
        "b": "b",
    }


def test_one_torch_thread_runs_the_calls_in_order_on_the_caller(torch_threads):
    torch_threads(1)
    seen: list[tuple[str, threading.Thread]] = []
    calls = {
        name: (lambda name=name: seen.append((name, threading.current_thread())) or name)
        for name in ("first", "second")
    }
    assert run_side_by_side(calls) == {"first": "first", "second": "second"}
    assert seen == [("first", threading.main_thread()), ("second", threading.main_thread())]


def test_an_error_in_one_call_is_raised_to_the_caller(torch_threads):
    torch_threads(2)

    def fails() -> None:
        raise ValueError("scores failed")

    with pytest.raises(ValueError, match="scores failed"):
        run_side_by_side({"fine": lambda: 1, "broken": fails})
