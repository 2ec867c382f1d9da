"""The checkpoint shipped with the package loads safely and scores what docs/explorer.md says."""

from __future__ import annotations

import re

import pytest
import torch
from hydra import compose, initialize_config_dir

from dcign.evaluate import evaluate
from dcign.run.restore import load_checkpoint
from dcign.ship import KEPT, SHIPPED
from tests.conftest import CONF, ROOT

DOCUMENTED = ROOT / "docs" / "explorer.md"


def documented_numbers() -> dict[tuple[str, str], float]:
    """``(network, metric) -> value`` from the table under "The shipped checkpoint"."""
    text = DOCUMENTED.read_text()
    numbers = {}
    for metric, dcign, baseline in re.findall(
        r"^\| `([a-z0-9_/]+)` \| ([0-9.]+) \| ([0-9.]+) \|", text, flags=re.MULTILINE
    ):
        numbers[("dcign", metric)] = float(dcign)
        numbers[("baseline", metric)] = float(baseline)
    return numbers


def test_the_shipped_checkpoint_is_small_and_holds_weights_only():
    assert SHIPPED.is_file(), "dcign/weights/faces.ckpt is missing: run python -m dcign.ship"
    assert SHIPPED.stat().st_size < 5e6
    checkpoint = torch.load(SHIPPED, map_location="cpu", weights_only=True)
    assert set(checkpoint) <= set(KEPT) and "optimizer_states" not in checkpoint
    model, run_config = load_checkpoint(str(SHIPPED))
    assert model.baseline is not None
    # Portable: no cache directory of the machine that trained it.
    assert run_config["dataset"]["cache_dir"] is None


def test_evaluate_reproduces_the_documented_numbers(cache_dir, tmp_path):
    numbers = documented_numbers()
    assert len(numbers) >= 12, f"no table of numbers found in {DOCUMENTED}"
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name="eval",
            overrides=["scores_preset=null", "figures=false", f"paths.cache_dir={cache_dir}"],
        )
    metrics = evaluate(cfg, tmp_path)
    for (network, metric), value in numbers.items():
        assert metrics[network][metric] == pytest.approx(value, abs=0.006), (network, metric)
