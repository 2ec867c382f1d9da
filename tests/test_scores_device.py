"""The scoring callback keeps its metrics on the model's device without moving them every step."""

from types import SimpleNamespace

import torch

from dcign.model.layout import LatentLayout
from dcign.scoring.network_scores import NetworkScores

FACTORS = [
    {"name": "azimuth", "periodic": False, "values": [0.0, 1.0, 2.0]},
    {"name": "light", "periodic": False, "values": [0.0, 1.0]},
]


def a_model(device: str) -> SimpleNamespace:
    """What :meth:`NetworkScores.attach` reads of a model: layout, networks, angles and device."""
    layout = LatentLayout.from_sizes({"azimuth": 1, "light": 1, "intrinsic": None}, 6)
    return SimpleNamespace(
        latent_layout=layout,
        entangled_networks=("baseline",),
        networks={"dcign": None, "baseline": None},
        angle_factors={},
        device=torch.device(device),
    )


def test_metrics_move_once_per_device_and_follow_the_model_to_another(monkeypatch):
    scores = NetworkScores(factors=FACTORS, scores_preset=None)
    model = a_model("cpu")
    metrics = scores.attach(model)
    moves = []
    original_to = metrics.to
    monkeypatch.setattr(metrics, "to", lambda device: moves.append(device) or original_to(device))

    for _ in range(5):  # the training hook attaches at every step
        assert scores.attach(model) is metrics
    assert moves == []

    model.device = torch.device("meta")
    scores.attach(model)
    assert moves == [torch.device("meta")]
    assert metrics["dcign"].active_masks.device.type == "meta"
    assert metrics["baseline"].selection.spread.total.device.type == "meta"
