"""The evaluation report: ``metrics.json`` for machines and ``report.md`` for people.

The JSON holds every number with the checkpoint and configuration it came from, so a value in a
paper table can be traced to its run; the Markdown page puts DC-IGN and the baseline side by
side with the figures below.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dcign.scoring.fidelity import CHANGE_BINS

DESCRIPTIONS = {
    "recon_mse": "reconstruction MSE per pixel in [0,1] (lower is better)",
    "novel_view_mse": "MSE of the re-rendered view (lower is better)",
    "novel_view_oracle": "bound: reconstruction of the true view",
    "novel_view_nochange": "bound: unchanged source",
    "novel_view_gain": "(nochange - model) / (nochange - oracle) (1 is best)",
    "novel_view_ssim": "SSIM of the re-rendered view against the true view (1 is best)",
    "novel_view_ssim_oracle": "reference: SSIM of the reconstruction of the true view",
    "novel_view_detail": "share of the true view's fine detail the re-render draws (1 is best)",
    "novel_view_detail_oracle": "reference: the same for the reconstruction of the true view",
    "identity_kept": "share of re-rendered views whose nearest true image is the same identity",
    "identity_kept_oracle": "reference: the same for the reconstruction of the true view",
    "identity_kept_source": "reference: the same for the unchanged source image",
    "identity_kept_other_face": "the same when the new view is read from another face's image",
    "identity_kept_chance": "chance: one over the line-up's size",
    "identity_kept_lineup": "identities in the line-up at the target's view",
    **{
        f"identity_kept_change{q}": f"identity kept over changes in share {q} of {CHANGE_BINS} "
        "of the factor's largest change"
        for q in range(1, CHANGE_BINS + 1)
    },
    "equivariance": "R^2 of the factor from its latent(s) (1 is best)",
    "invariance": "within-group / total variance of the other latents (0 is best)",
}


def split_metrics(metrics: Mapping[str, float], stage: str) -> dict[str, dict[str, float]]:
    """``{"dcign": {...}, "baseline": {...}}`` from flat logged keys like ``test/baseline/x``."""
    result: dict[str, dict[str, float]] = {"dcign": {}, "baseline": {}}
    for key, value in metrics.items():
        if not key.startswith(f"{stage}/"):
            continue
        name = key[len(stage) + 1 :]
        if name.startswith("baseline/"):
            result["baseline"][name[len("baseline/") :]] = value
        else:
            result["dcign"][name] = value
    return result


def write_json(path: Path, metrics: Mapping[str, Any], checkpoint: str, config: Any) -> Path:
    payload = {"checkpoint": checkpoint, "metrics": metrics, "config": config}
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=_jsonable))
    return path


def _jsonable(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else str(value)


def _cell(value: float | None) -> str:
    if value is None:
        return "-"
    return "nan" if math.isnan(value) else f"{value:.4f}"


def markdown_table(metrics: Mapping[str, Mapping[str, float]]) -> str:
    """One row per metric; columns DC-IGN and baseline; a short meaning per row."""
    keys = sorted(set(metrics["dcign"]) | set(metrics.get("baseline", {})))
    lines = ["| metric | DC-IGN | baseline | meaning |", "|---|---|---|---|"]
    for key in keys:
        meaning = DESCRIPTIONS.get(key.split("/")[0], "")
        dcign = metrics["dcign"].get(key)
        baseline = metrics.get("baseline", {}).get(key)
        lines.append(f"| `{key}` | {_cell(dcign)} | {_cell(baseline)} | {meaning} |")
    return "\n".join(lines)


def write_markdown(
    path: Path,
    metrics: Mapping[str, Mapping[str, float]],
    checkpoint: str,
    split: str,
    figures: Sequence[Path],
) -> Path:
    parts = [
        "# DC-IGN evaluation",
        "",
        f"Checkpoint: `{checkpoint}`  ",
        f"Split: `{split}` (identities never seen in training), posterior means.",
        "",
        markdown_table(metrics),
        "",
    ]
    for figure in figures:
        parts += [
            f"## {figure.stem}",
            "",
            f"![{figure.stem}]({figure.relative_to(path.parent)})",
            "",
        ]
    path.write_text("\n".join(parts))
    return path
