"""Which latents of a comparison network (the entangled baseline) stand for each factor.

A network trained without clamping has no latent named after a factor; the paper (4.1.1) picks,
per factor, the latents that vary most when only that factor varies. The pick is made on
groups of a split other than the one scored, so no score is of a choice made on its own data.
"""

from __future__ import annotations

from typing import Any

import torch

from dcign.model.interface import ScoredModel
from dcign.scoring.network_scores import NetworkScores


def observe_comparison_latents(
    scores: NetworkScores,
    model: ScoredModel,
    datamodule: Any,
    split: str,
    source: str | None = None,
) -> None:
    """Show ``scores`` groups of another split than ``split`` to choose each comparison
    network's latent(s) per factor from (the baseline's: paper 4.1.1); the choice is made
    when ``split`` is scored, or by :func:`choose_comparison_latents`.

    Test scores use latents chosen on the val split, val scores latents chosen on the train
    split: never on the groups being scored. ``source`` names another split to choose on (the
    training split, which alone keeps to ``dataset.train_range``, when views beyond it are
    scored: no held-out view is then seen in choosing).
    """
    source = source or ("val" if split == "test" else "train")
    if source == split:
        raise ValueError(f"the latents scored on the {split} split must be chosen on another")
    datamodule.setup("test")
    with torch.no_grad():
        for batch in datamodule.evaluation_loader(source):
            scores.observe_for_selection(model, batch)


def choose_comparison_latents(
    model: ScoredModel, datamodule: Any, split: str, source: str | None = None
) -> dict[str, torch.Tensor]:
    """Each comparison network's latents per group type ``[T, D]`` for scoring ``split``, as
    evaluation chooses them (on ``source``, if given); a network with none chosen is left out."""
    scores = NetworkScores(datamodule.factor_dicts, scores_preset=None)
    observe_comparison_latents(scores, model, datamodule, split, source)
    chosen = scores.choose_latents()
    return {
        name: latents
        for name, latents in chosen.items()
        if name in model.comparisons and latents is not None
    }
