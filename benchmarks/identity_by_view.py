"""Where does an edit of one factor lose the identity? Identity kept by how far the edit moves.

    python benchmarks/identity_by_view.py --out ibv.json            # shipped weights, azimuth
    python benchmarks/identity_by_view.py --ckpt outputs/train/<run>/checkpoints/last.ckpt \\
        --factor light --split val --settings 3

``identity_kept/<f>`` (docs/evaluation.md) is one number over pairs drawn from groups, so it
cannot say whether an edit keeps the face over a small turn and loses it over a large one, or
whether the code itself already differs between the views of one face. This script scores every
ordered pair (a, b) of distinct values of factor f, for every identity of the split and for a
few settings of the other factors (the middle one and ``--settings`` random ones), and reports
by how many value steps a and b lie apart, and by how much nearer to the middle value one lies
than the other (for a view factor such as azimuth: frontal against profile), and by a's value
and by b's (is the face read badly from some views, or drawn badly at some?). Five images are
judged in the line-up of the true images of every identity of the split at b's factor values
(:func:`~dcign.scoring.fidelity.nearest_identity`, as ``identity_kept`` judges them):

* ``edit``: a's posterior-mean code with f's latent group taken from b's (``identity_kept/f``);
* ``other_face``: the same edit with f's group read from another identity's image at b's
  values (``identity_kept_other_face/f``): a face that leaks into f's latents does not come
  back through them here;
* ``oracle``: b's own code, its reconstruction (what the edit could at best keep);
* ``source``: the true image a, unchanged (what not editing keeps);
* ``multi_view``: f's group from b, every other latent averaged over the codes of that face at
  every value of f (what a code that does not change with the view would keep).

Beside them, ``held_distance``: how far apart the latents f's edit keeps (every group but f's)
are between a and b of the same face, relative to the mean distance between different faces at
one view of the same setting. At 0 the held code does not depend on the view; at 1 a face at
another view is as far from itself as from another face.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import machine_info, print_table, start, write_json
from omegaconf import OmegaConf

from datamodules.factors import FactorSpec
from datamodules.gallery import Gallery
from dcign.errors import ConfigError
from dcign.model.editing import transfer
from dcign.model.interface import Renderer
from dcign.model.layout import LatentLayout
from dcign.run.restore import data_config, load_checkpoint
from dcign.run.training import build, run_or_explain
from dcign.scoring.fidelity import nearest_identity, rival_in_lineup
from dcign.ship import SHIPPED

log = logging.getLogger("benchmarks.identity_by_view")

# The images judged in the line-up, in table order.
DECODES = ("edit", "other_face", "oracle", "source", "multi_view")
# Settings of the other factors: factor name -> value index.
Setting = dict[str, int]


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--ckpt", type=Path, default=SHIPPED, help="checkpoint (default: the shipped weights)"
    )
    parser.add_argument("--factor", default="azimuth", help="factor whose edit is scored")
    return parse_view_arguments(parser, argv, settings=7)


def parse_view_arguments(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None, settings: int
) -> argparse.Namespace:
    """The options of a script that scores every identity of a split at every value of one
    factor over a few settings of the others (this one, ``angle_reading.py``), then parse."""
    parser.add_argument("--split", choices=("test", "val"), default="test")
    parser.add_argument(
        "--settings",
        type=int,
        default=settings,
        help=f"random settings of the other factors, besides the middle one (default {settings})",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random settings")
    parser.add_argument(
        "--batch", type=int, default=512, help="images per encoder/decoder call (memory bound)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch.set_num_threads (default 1: a diagnostic that runs beside training jobs)",
    )
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.settings < 0 or args.batch < 1 or args.threads < 1:
        parser.error("--settings must be at least 0, --batch and --threads at least 1")
    return args


def run_view_script(
    parse: Callable[[Sequence[str] | None], argparse.Namespace],
    measure_with: Callable[[argparse.Namespace], dict[str, Any]],
    argv: Sequence[str] | None = None,
) -> None:
    """Parse, fix threads and seed, measure (a user error ends with its message), write."""
    args = parse(argv)
    start(args.threads, args.seed, "retain")
    write_json(args.out, run_or_explain(measure_with, args))


# ----------------------------------------------------------------------------- choices


def check_factor(factors: Sequence[FactorSpec], layout: LatentLayout, name: str) -> int:
    """Position of factor ``name`` among the data's factors, when its edit can be scored.

    An edit swaps the factor's latent group, and its pairs need two values of the factor, so a
    name the data or the layout lacks, or a factor held at one value, cannot be scored.
    """
    editable = [f.name for f in factors if f.name in layout.names and len(f.values) > 1]
    names = [f.name for f in factors]
    if name not in names or name not in layout.names:
        raise ConfigError(
            f"Unknown factor {name!r}: --factor must name a factor of the data with a latent "
            f"group; the data's factors are {names}, the layout's groups {layout.names}, so "
            f"choose one of {editable}."
        )
    index = names.index(name)
    if len(factors[index].values) < 2:
        raise ConfigError(
            f"Factor {name!r} takes a single value in this data set, so no pair of its values "
            f"can be edited into each other; choose one of {editable}."
        )
    return index


def choose_settings(
    factors: Sequence[FactorSpec], index: int, count: int, seed: int
) -> list[Setting]:
    """The middle setting of the factors other than ``factors[index]``, then ``count`` other
    settings drawn with ``seed`` (each factor's value index in factor order, distinct).

    The middle (every other factor at its middle value: frontal, lit from the front) is where
    a model does best, so it is always scored; the random ones say how far that holds.
    """
    others = [f for j, f in enumerate(factors) if j != index]
    middle = tuple(len(f.values) // 2 for f in others)
    available = int(np.prod([len(f.values) for f in others]))
    if count > available - 1:
        log.warning(
            "Asked for %d random settings; the other factors have %d besides the middle one",
            count,
            available - 1,
        )
        count = available - 1
    chosen = [middle]
    rng = np.random.default_rng(seed)
    while len(chosen) < 1 + count:
        drawn = tuple(int(rng.integers(len(f.values))) for f in others)
        if drawn not in chosen:
            chosen.append(drawn)
    return [{f.name: i for f, i in zip(others, setting, strict=True)} for setting in chosen]


def setting_values(factors: Sequence[FactorSpec], index: int, setting: Setting) -> np.ndarray:
    """Factor values ``[V, F]`` of the views of one setting: every value of ``factors[index]``,
    the others at the setting's values."""
    varied = np.asarray(factors[index].values)
    columns = [
        varied if j == index else np.full(len(varied), f.values[setting[f.name]])
        for j, f in enumerate(factors)
    ]
    return np.stack(columns, axis=1)


# ----------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class SettingScores:
    """One setting's pairs, indexed ``[a, b, k]``: source value a, target value b, identity k.

    ``kept`` (decode name -> bool) says whether that image is nearest to identity k in the
    line-up at b; ``scored`` marks the pairs that count (a != b, k held at both, a line-up of
    at least two); ``held_distance`` is the relative distance of the held latents (nan where
    k lacks a or b); ``lineup [V]`` the line-up's size at each b; ``between`` the mean distance
    of the held latents between different identities, which ``held_distance`` is relative to.
    """

    kept: dict[str, np.ndarray]
    scored: np.ndarray
    held_distance: np.ndarray
    lineup: np.ndarray
    between: float


def in_batches(
    function: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor, batch: int
) -> torch.Tensor:
    """``function`` over the rows of ``inputs [N, ...]`` in chunks of ``batch``, concatenated:
    one call per chunk keeps the networks' activations of a large setting within memory."""
    return torch.cat([function(chunk) for chunk in inputs.split(batch)])


def score_setting(
    renderer: Renderer,
    layout: LatentLayout,
    gallery: Gallery,
    index: int,
    setting: Setting,
    batch: int = 512,
) -> SettingScores:
    """Every ordered pair of values of ``gallery.factors[index]`` for every identity of the
    gallery, at one setting of the other factors (see the module docstring)."""
    factor = gallery.factors[index]
    values = torch.from_numpy(setting_values(gallery.factors, index, setting))
    views = gallery.at(values)  # images [V, K, C, H, W], identity [V, K] (-1: missing)
    count, size = views.identity.shape
    present = views.identity >= 0
    targets = torch.as_tensor(gallery.identities, dtype=views.identity.dtype)
    swapped = torch.zeros(layout.latent_dim, dtype=torch.bool)
    swapped[layout.indices(factor.name)] = True

    def encode(images: torch.Tensor) -> torch.Tensor:
        return renderer.encode(images)[0].float()

    def decode(codes: torch.Tensor) -> torch.Tensor:
        """Codes ``[V, K, D]`` -> images ``[V, K, C, H, W]``."""
        return in_batches(renderer.decode, codes.flatten(0, 1), batch).float().view_as(views.images)

    def kept(candidates: torch.Tensor) -> np.ndarray:
        """bool ``[V, K]``: candidate ``[b, k]`` is nearest to identity k in the line-up at b."""
        found = nearest_identity(candidates, views.images, views.identity)
        return (found == targets).numpy()

    codes = in_batches(encode, views.images.flatten(0, 1), batch).view(count, size, -1)
    # The blank stand-ins of missing views enter no average (their codes may be anything).
    held_at = present[..., None]
    mean = codes.where(held_at, 0.0).sum(dim=0) / held_at.sum(dim=0).clamp_min(1)  # [K, D]
    oracle = kept(decode(codes))
    # Another face at each target's view (every scored line-up holds one: it has >= 2 members).
    rival = rival_in_lineup(views.identity[:, None, :].expand(count, size, size), views.identity)
    donors = codes.gather(1, rival.clamp_min(0)[..., None].expand_as(codes))
    multi_view = kept(decode(transfer(mean.expand_as(codes), codes, swapped)))
    # The oracle and the multi-view code do not depend on the source a: one row serves every a.
    result = {
        "edit": np.stack(
            [
                kept(decode(transfer(codes[a].expand_as(codes), codes, swapped)))
                for a in range(count)
            ]
        ),
        "other_face": np.stack(
            [
                kept(decode(transfer(codes[a].expand_as(codes), donors, swapped)))
                for a in range(count)
            ]
        ),
        "source": np.stack([kept(views.images[a].expand_as(views.images)) for a in range(count)]),
        "oracle": np.broadcast_to(oracle, (count, count, size)),
        "multi_view": np.broadcast_to(multi_view, (count, count, size)),
    }
    lineup = present.sum(dim=1).numpy()
    both = (present[:, None] & present[None, :]).numpy()  # [a, b, k]
    scored = both & ~np.eye(count, dtype=bool)[..., None] & (lineup >= 2)[None, :, None]
    held = codes[..., ~swapped]
    between = mean_between_identities(held, present)
    same = (held[:, None] - held[None, :]).norm(dim=-1).numpy()  # [a, b, k]
    relative = np.where(both, same / between, np.nan) if between > 0 else np.full_like(same, np.nan)
    return SettingScores(result, scored, relative, lineup, between)


def mean_between_identities(held: torch.Tensor, present: torch.Tensor) -> float:
    """Mean distance of the held latents ``[V, K, H]`` between two different identities at the
    same view, over the views and the ordered pairs of identities held there."""
    distances = torch.cdist(held, held)  # [V, K, K]
    pairs = present[:, :, None] & present[:, None, :] & ~torch.eye(held.shape[1], dtype=torch.bool)
    total = int(pairs.sum())
    return float(distances[pairs].sum() / total) if total else float("nan")


# ----------------------------------------------------------------------------- reporting


def steps_apart(count: int, periodic: bool) -> np.ndarray:
    """``[V, V]``: value steps between a and b; round the circle for a full-turn factor."""
    positions = np.arange(count)
    steps = np.abs(positions[:, None] - positions[None, :])
    return np.minimum(steps, count - steps) if periodic else steps


def middle_gap(count: int) -> np.ndarray:
    """``[V, V]``: ``| |a - mid| - |b - mid| |`` with ``mid = (V - 1) / 2``. For a view factor
    symmetric about its middle (azimuth -90..90 degrees) a pair's mirror images lie at gap 0:
    what separates frontal from profile views is this gap, not the steps between them."""
    offset = np.abs(np.arange(count) - (count - 1) / 2)
    return np.rint(np.abs(offset[:, None] - offset[None, :])).astype(int)


def source_value(count: int) -> np.ndarray:
    """``[V, V]``: a's value index, to bin the pairs by the view the face is read from."""
    return np.repeat(np.arange(count)[:, None], count, axis=1)


def target_value(count: int) -> np.ndarray:
    """``[V, V]``: b's value index, to bin the pairs by the view the face is drawn at."""
    return source_value(count).T


def summary(
    scores: Sequence[SettingScores], where: np.ndarray | None = None
) -> dict[str, float | int]:
    """Means over the scored pairs of ``scores`` (restricted to ``where [V, V]``), their count,
    and chance (one over the line-up's size) and the line-up's size of those pairs."""
    scored = np.stack([s.scored for s in scores])  # [S, V, V, K]
    if where is not None:
        scored = scored & where[None, :, :, None]
    pairs = int(scored.sum())
    means: dict[str, float | int] = {"pairs": pairs}
    for name in DECODES:
        kept = np.stack([s.kept[name] for s in scores])
        means[name] = float(kept[scored].mean()) if pairs else float("nan")
    held = np.stack([s.held_distance for s in scores])[scored]
    means["held_distance"] = float(np.nanmean(held)) if np.isfinite(held).any() else float("nan")
    lineup = np.stack([np.broadcast_to(s.lineup[None, :, None], s.scored.shape) for s in scores])
    means["lineup"] = float(lineup[scored].mean()) if pairs else float("nan")
    means["chance"] = float((1.0 / lineup[scored]).mean()) if pairs else float("nan")
    return means


def by_bin(scores: Sequence[SettingScores], bins: np.ndarray) -> dict[int, dict[str, Any]]:
    """:func:`summary` for each bin ``[V, V]`` value that holds a pair of distinct values."""
    off = ~np.eye(len(bins), dtype=bool)
    return {int(b): summary(scores, (bins == b) & off) for b in np.unique(bins[off])}


def describe(factors: Sequence[FactorSpec], setting: Setting) -> dict[str, dict[str, Any]]:
    """A setting as the JSON reads it: each other factor's value index and value."""
    values = {f.name: f.values for f in factors}
    return {name: {"index": i, "value": values[name][i]} for name, i in setting.items()}


HEADERS = ["pairs", *DECODES, "held distance"]


def table_rows(bins: Mapping[int, Mapping[str, Any]], overall: Mapping[str, Any]) -> list[list]:
    """One row per bin, then the overall means."""
    rows = [
        [str(b), *(entry[k] for k in ("pairs", *DECODES, "held_distance"))]
        for b, entry in bins.items()
    ]
    rows.append(["all", *(overall[k] for k in ("pairs", *DECODES, "held_distance"))])
    return rows


# ----------------------------------------------------------------------------- main


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Load the checkpoint and its data, score every chosen setting, print and return the
    report."""
    began = time.perf_counter()
    model, run_config = load_checkpoint(str(args.ckpt))
    model.eval()
    layout = model.latent_layout
    # The data set is built, not read, here: a bad --factor is named before anything renders.
    datamodule = build(data_config(OmegaConf.create({}), run_config), layout=model.hparams.layout)
    index = check_factor(datamodule.factors, layout, args.factor)
    factor = datamodule.factors[index]
    datamodule.prepare_data()
    datamodule.setup("test")
    gallery = datamodule.split_info(args.split).gallery
    if len(gallery.identities) < 2:
        raise ConfigError(
            f"The {args.split} split holds {len(gallery.identities)} identities; a line-up "
            "needs at least two."
        )
    settings = choose_settings(datamodule.factors, index, args.settings, args.seed)
    scores = []
    with torch.inference_mode():
        for number, setting in enumerate(settings):
            scores.append(score_setting(model, layout, gallery, index, setting, args.batch))
            log.info(
                "setting %d/%d %s: edit kept %.3f (%.0f s)",
                number + 1,
                len(settings),
                setting,
                summary(scores[-1:])["edit"],
                time.perf_counter() - began,
            )
    overall = summary(scores)
    if not overall["pairs"]:
        raise ConfigError(
            f"No pair was scored: the {args.split} split holds no identity at two values of "
            f"{factor.name} at the chosen settings of the other factors."
        )
    steps = by_bin(scores, steps_apart(len(factor.values), factor.periodic))
    gaps = by_bin(scores, middle_gap(len(factor.values)))
    sources = by_bin(scores, source_value(len(factor.values)))
    targets = by_bin(scores, target_value(len(factor.values)))
    weights = "the shipped weights" if args.ckpt == SHIPPED else str(args.ckpt)
    title = (
        f"identity kept after editing {factor.name} ({weights}, {args.split} split, "
        f"{len(gallery.identities)} identities, {len(settings)} settings)"
    )
    print_table(f"{title}, by value steps apart", ["steps", *HEADERS], table_rows(steps, overall))
    print_table(
        f"{title}, by gap in distance from the middle value",
        ["gap", *HEADERS],
        table_rows(gaps, overall),
    )
    print_table(f"{title}, by the source's value", ["a", *HEADERS], table_rows(sources, overall))
    print_table(f"{title}, by the target's value", ["b", *HEADERS], table_rows(targets, overall))
    seconds = time.perf_counter() - began
    log.info("wall time %.0f s on %d thread(s)", seconds, torch.get_num_threads())
    return {
        "benchmark": "identity_by_view",
        "checkpoint": str(args.ckpt),
        "factor": factor.name,
        "values": list(factor.values),
        "unit": factor.unit,
        "periodic": factor.periodic,
        "split": args.split,
        "identities": len(gallery.identities),
        "layout": layout.as_dict(),
        "held_groups": [name for name in layout.names if name != factor.name],
        "seed": args.seed,
        "settings": [describe(datamodule.factors, setting) for setting in settings],
        "overall": overall,
        "by_steps": steps,
        "by_middle_gap": gaps,
        "by_source": sources,
        "by_target": targets,
        "per_setting": [
            {"setting": setting, "between_identities": s.between, **summary([s])}
            for setting, s in zip(settings, scores, strict=True)
        ],
        "seconds": seconds,
        "machine": machine_info("retain"),
    }


def main(argv: Sequence[str] | None = None) -> None:
    run_view_script(parse_arguments, measure, argv)


if __name__ == "__main__":
    main()
