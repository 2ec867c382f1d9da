"""When a training run computes its disentanglement scores: at the validations of every n-th
epoch and of the last one, and at every test; the other scores at every validation."""

import csv
from types import SimpleNamespace

import pytest

from dcign.errors import ConfigError
from dcign.run.training import train
from dcign.scoring.network_scores import NetworkScores


def epochs_scored(every: int, max_epochs: int, stage: str = "val") -> list[int]:
    """The epochs (of the run's, or of 12 of an endless run's) whose ``stage`` is scored."""
    scores = NetworkScores(factors=[], scores_preset="fast", every_n_epochs=every)
    return [
        epoch
        for epoch in range(max_epochs if max_epochs > 0 else 12)
        if scores._preset_now(SimpleNamespace(current_epoch=epoch, max_epochs=max_epochs), stage)
        == "fast"
    ]


@pytest.mark.parametrize(
    ("every", "max_epochs", "expected"),
    [
        (5, 15, [4, 9, 14]),
        (5, 7, [4, 6]),  # the last epoch is scored too
        (1, 15, list(range(15))),
        (4, -1, [3, 7, 11]),  # an endless run: every 4th
    ],
)
def test_validations_scored(every, max_epochs, expected):
    assert epochs_scored(every, max_epochs) == expected


def test_every_test_is_scored():
    assert epochs_scored(5, 15, stage="test") == list(range(15))


@pytest.mark.parametrize("value", ["0", "-2", "1.5", "true"])
def test_bad_interval_is_refused(compose_config, value):
    with pytest.raises(ConfigError, match="scores_every_n_epochs must be an integer >= 1"):
        train(compose_config("logger=none", f"scores_every_n_epochs={value}"))


def test_a_run_logs_disentanglement_only_at_the_scored_epochs(compose_config, tmp_path):
    train(
        compose_config(
            "logger=csv",
            "test=false",
            "trainer.max_epochs=3",
            "scores_every_n_epochs=2",
            "scores_preset=fast",
            "dataset.val_batches=10",  # the 50 observations the scores need
        )
    )
    with open(tmp_path / "run" / "csv" / "metrics.csv") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("val/code_use")]
    assert [int(row["epoch"]) for row in rows] == [0, 1, 2]
    assert [bool(row.get("val/mig")) for row in rows] == [False, True, True]
