"""Which latents of a comparison network (the entangled baseline) stand for each factor.

A network trained without clamping has no latent named after a factor; the paper (4.1.1) picks,
per factor, the latents that vary most when only that factor varies. The pick is made on
groups of a split other than the one scored, so no score is of a choice made on its own data.
"""

from __future__ import annotations

from typing import Any

import torch

from dcign.model.module import DCIGN


def choose_comparison_latents(model: DCIGN, datamodule: Any, split: str) -> None:
    """Each comparison network's latent(s) per factor (the baseline's: paper 4.1.1), chosen on
    groups of another split.

    Test scores use latents chosen on the val split, val scores latents chosen on the train
    split: never on the groups being scored.
    """
    model.build_metrics(datamodule.factor_dicts)
    datamodule.setup("test")
    source = "val" if split == "test" else "train"
    loader = datamodule.evaluation_loader(source)
    with torch.no_grad():
        for batch in loader:
            model.observe_for_selection(batch)
