"""Novel views from M context views: DC-IGN, the entangled baseline and a GQN on the same pairs.

    python benchmarks/novel_view.py                          # 3 seeds, both models trained
    python benchmarks/novel_view.py --jobs 2 --out nv.json --plot docs/images/novel_view.png
    python benchmarks/novel_view.py --gqn-override model.net.stochastic=false   # deterministic
    python benchmarks/novel_view.py --split val --reuse --gqn-name gqn_pool \
        --gqn-override model.net.representation=pool       # a GQN variant, chosen on validation

For each seed it trains the default DC-IGN run (with its co-trained baseline) and a GQN
(``experiment=gqn``) as a user would (``python train.py``), timing each. Then, on the test
identities, every model renders the same target views from the same context views: for each
view factor, scenes of one identity in which only that factor varies, a fixed target view and
a fixed order of the other views, of which the first M are the context (M = 1, 2, 3, 5, capped
at the scene's views minus one). DC-IGN with M views averages the M codes and takes the
target's extrinsic latents from its factor values through the equivariance fit
(:mod:`dcign.scoring.multi_view`); the baseline does the same with M = 1 through its latents
chosen on validation data; the GQN renders the mean of ``--samples`` draws from its prior.
Scores per model, M and factor: novel-view MSE (per pixel), PSNR (of that MSE) and the
reduction of the no-change error, ``1 - MSE / MSE(context view 1, target)`` (0: no better
than showing the first context view; 1: the true view). The table and a plot of MSE against M
are printed / drawn, and logged to an offline W&B run (``wandb sync`` it later).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import ROOT, compose_config, machine_info, print_table, start, write_json
from PIL import Image, ImageDraw, ImageFont
from quality import prepare_data, seed_list, spread, train_run

from datamodules.train_range import FactorRange, in_range
from dcign.batch import LabelledImages
from dcign.errors import ConfigError
from dcign.gqn.module import GQN
from dcign.model.layout import INTRINSIC
from dcign.run.restore import load_checkpoint
from dcign.run.training import build_data
from dcign.scoring.comparison_latents import choose_comparison_latents
from dcign.scoring.fidelity import detail_drawn, nearest_identity, ssim_per_image
from dcign.scoring.multi_view import CodeRenderer

log = logging.getLogger("novel_view")

QUICK = ("debug=tiny",)
CONTEXTS = (1, 2, 3, 5)
COLOURS = {"DC-IGN": (31, 119, 180), "GQN": (214, 39, 40), "baseline": (255, 127, 14)}


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per run")
    parser.add_argument("--scenes", type=int, default=64, help="scenes per factor")
    parser.add_argument(
        "--split",
        choices=("val", "test"),
        default="test",
        help="identities scored: val to choose a configuration, test to report it (default)",
    )
    parser.add_argument("--samples", type=int, default=4, help="GQN prior draws per view")
    parser.add_argument(
        "--contexts", default=",".join(map(str, CONTEXTS)), help="context sizes M, e.g. 1,2,3,5"
    )
    parser.add_argument("--override", action="append", default=[], help="both models' runs")
    parser.add_argument("--dcign-override", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--gqn-override", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--workdir", type=Path, default=None, help="where runs are written")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--plot", type=Path, default=None, help="draw MSE against M here (PNG)")
    parser.add_argument("--no-wandb", action="store_true", help="do not log to an offline run")
    parser.add_argument(
        "--reuse", action="store_true", help="take runs already trained in --workdir"
    )
    parser.add_argument("--gqn-name", default="gqn", help="run folder prefix of the GQN runs")
    parser.add_argument(
        "--dcign-name", default="dcign", help="run folder prefix of the DC-IGN runs"
    )
    parser.add_argument(
        "--beyond",
        action="store_true",
        help="targets outside dataset.train_range (set it with --override), context inside",
    )
    parser.add_argument("--quick", action="store_true", help="debug=tiny: checks the script")
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------- training
def train(
    model: str, seed: int, overrides: Sequence[str], workdir: Path, threads: int, reuse: bool
) -> dict:
    """One model, one seed, as ``python train.py`` trains it; its final checkpoint and time.

    With ``reuse``, a run of an earlier call in the same ``workdir`` (its checkpoint and the
    training time it recorded) is taken instead of training again, so that another GQN variant
    can be scored against the same DC-IGN runs.
    """
    run = workdir / f"{model}_seed{seed}"
    checkpoint, timing = run / "checkpoints" / "last.ckpt", run / "train_seconds.txt"
    if reuse and checkpoint.is_file() and timing.is_file():
        seconds = float(timing.read_text())
        log.info("%s seed %d: reusing %s (trained in %.0f s)", model, seed, run, seconds)
    else:
        seconds = train_run(overrides, seed, run, threads)
        timing.write_text(f"{seconds}\n")
        log.info("%s seed %d trained in %.0f s", model, seed, seconds)
    return {"checkpoint": checkpoint, "train_seconds": seconds}


# ----------------------------------------------------------------------------- pairs
def split_scenes(
    datamodule: Any,
    split: str,
    factor: str,
    count: int,
    most: int,
    beyond: FactorRange | None = None,
) -> dict[str, Any]:
    """Scenes of ``split`` varying ``factor``: a target view and up to ``most`` context views
    each, in a fixed random order (the same for every model and M). With ``beyond`` (the
    factor's training range), the target is a value outside the range and the context views
    are inside it."""
    scenes = datamodule.scene_views(split, factor, count, seed=0)
    views = scenes.images.shape[1]
    rng = np.random.default_rng(0)
    if beyond is None:
        orders = [rng.permutation(views) for _ in range(len(scenes.images))]
    else:
        column = datamodule.factor_names.index(factor)
        orders = [
            held_out_first(beyond.contains(values[:, column].numpy()), rng)
            for values in scenes.factors
        ]
    order = torch.as_tensor(np.stack(orders))
    rows = torch.arange(len(order))[:, None]
    take = min(most, order.shape[1] - 1)

    def pick(columns: torch.Tensor) -> LabelledImages:
        return LabelledImages(
            scenes.images[rows, columns],
            scenes.factors[rows, columns],
            scenes.identity[rows, columns],
        )

    return {"target": pick(order[:, :1]), "context": pick(order[:, 1 : 1 + take]), "views": views}


def held_out_first(inside: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One view outside the training range (the target), then the views inside it in a random
    order (the context)."""
    outside = np.flatnonzero(~inside)
    if not len(outside):
        raise ConfigError("--beyond needs views outside the training range; the scenes have none.")
    return np.concatenate([[rng.choice(outside)], rng.permutation(np.flatnonzero(inside))])


def mse_per_scene(rendered: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (rendered.float() - target.float()).square().flatten(1).mean(1)


def view_scores(
    rendered: torch.Tensor, target: LabelledImages, lineup: LabelledImages
) -> dict[str, float]:
    """Absolute per-pixel MSE, PSNR, SSIM and detail drawn against the true views, and the share
    of scenes whose nearest true image at the target view (among every test identity) is the
    scene's own."""
    mse = float(mse_per_scene(rendered, target.images).mean())
    found = nearest_identity(rendered, lineup.images, lineup.identity)
    return {
        "mse": mse,
        "psnr": 10 * math.log10(1.0 / max(mse, 1e-12)),
        "ssim": float(ssim_per_image(rendered, target.images).mean()),
        "detail": detail_drawn(rendered, target.images),
        "kept": float((found == target.identity).float().mean()),
    }


def scores(
    rendered: torch.Tensor, target: LabelledImages, lineup: LabelledImages, nochange: float
) -> dict[str, float]:
    """:func:`view_scores` and the reduction of the no-change error."""
    result = view_scores(rendered, target, lineup)
    return {**result, "reduction": 1.0 - result["mse"] / nochange}


Render = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def evaluate_seed(
    renderers: Mapping[str, tuple[Render, Sequence[int]]],
    datamodule: Any,
    factors: Sequence[str],
    contexts: Sequence[int],
    count: int,
    split: str = "test",
    beyond: Mapping[str, FactorRange] | None = None,
) -> dict[str, Any]:
    """Scores of every renderer at each of its context sizes, per factor, on ``split``;
    with ``beyond`` (factor -> training range), targets outside the range from context
    views inside it.

    Beside them, per factor: the first context view shown unchanged (``nochange``), chance
    (one over the number of the split's identities in the line-up) and, per model, its render of the
    target view given that very view as its only context (``own_view``: what the model keeps
    when nothing has to be re-rendered, the reference of identity kept).
    """
    gallery = datamodule.split_info(split).gallery
    results: dict[str, Any] = {}
    for factor in factors:
        pairs = split_scenes(
            datamodule, split, factor, count, max(contexts), (beyond or {}).get(factor)
        )
        target, context = pairs["target"], pairs["context"]
        truth = LabelledImages(target.images[:, 0], target.factors[:, 0], target.identity[:, 0])
        lineup = gallery.at(truth.factors)
        unchanged = view_scores(context.images[:, 0], truth, lineup)
        results[factor] = {
            "views": pairs["views"],
            "nochange": unchanged["mse"],
            "nochange_scores": unchanged,
            "chance": float((1.0 / (lineup.identity >= 0).sum(dim=1)).mean()),
            "own_view": {},
        }
        for name, (render, sizes) in renderers.items():
            with torch.no_grad():
                own = render(target.images, target.factors, target.factors)
            results[factor]["own_view"][name] = view_scores(own[:, 0], truth, lineup)
            for m in sizes:
                used = min(m, context.images.shape[1])
                with torch.no_grad():
                    image = render(
                        context.images[:, :used], context.factors[:, :used], target.factors
                    )
                results[factor].setdefault(name, {})[str(m)] = {
                    **scores(image[:, 0], truth, lineup, unchanged["mse"]),
                    "context_used": used,
                }
    return results


def renderers_of(
    dcign_path: Path,
    gqn_path: Path,
    datamodule: Any,
    contexts: Sequence[int],
    samples: int,
    split: str = "test",
    beyond: Sequence[FactorRange] = (),
) -> dict[str, tuple[Render, Sequence[int]]]:
    """DC-IGN (every M), the baseline (M = 1) and the GQN (every M), ready to render views of
    ``split``. With ``beyond`` (training ranges), the value -> latents maps are fitted on
    reference images inside the ranges only and extrapolated along their line beyond them, and
    the baseline's latents are chosen on the training split's groups: no image at a held-out
    value is seen, in training, in fitting or in choosing."""
    model, _ = load_checkpoint(str(dcign_path))
    model.eval()
    # The value -> latents maps are fitted on identities other than the scored ones: validation
    # identities when test is scored, training identities when validation is.
    reference = (
        datamodule.reference_images(512)
        if split == "test"
        else datamodule.sample_up_to("train", 512, 0)
    )
    if beyond:
        keep = in_range(beyond, reference.factors.numpy(), datamodule.factor_names)
        reference = LabelledImages(*(field[torch.as_tensor(keep)] for field in reference))
    factors, extrapolate = datamodule.factor_dicts, bool(beyond)
    dcign = CodeRenderer.for_dcign(model, reference, factors, extrapolate)
    renderers: dict[str, tuple[Render, Sequence[int]]] = {"DC-IGN": (dcign.render_views, contexts)}
    if "baseline" in model.comparisons:
        # Beyond the range, chosen on the training split's groups, which keep to the range.
        source = "train" if beyond else None
        chosen = choose_comparison_latents(model, datamodule, split, source).get("baseline")
        baseline = CodeRenderer.for_entangled(
            model.comparisons["baseline"],
            chosen,
            datamodule.group_types,
            reference,
            factors,
            extrapolate,
        )
        renderers["baseline"] = (baseline.render_views, [1])
    gqn = GQN.load_from_checkpoint(gqn_path, map_location="cpu", weights_only=True).eval()
    renderers["GQN"] = (
        lambda images, known, query: gqn.render_views(images, known, query, samples=samples),
        contexts,
    )
    return renderers


# ----------------------------------------------------------------------------- reporting
MODELS = ("DC-IGN", "baseline", "GQN")
SCORES = {
    "mse": "max",
    "psnr": "min",
    "ssim": "min",
    "detail": "min",
    "kept": "min",
    "reduction": "min",
}


def _spreads(runs: Sequence[Mapping[str, float]]) -> dict[str, Any]:
    """Mean, sd and worst seed of every score the runs have (worst: highest MSE, else lowest)."""
    return {
        key: spread([r[key] for r in runs], worst=worst)
        for key, worst in SCORES.items()
        if key in runs[0]
    }


def summarise(seeds: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean, sd and worst seed of each score, per factor, model and M, with the references."""
    first = seeds[0]["scores"]
    summary: dict[str, Any] = {}
    for factor, entry in first.items():
        per_seed = [s["scores"][factor] for s in seeds]
        summary[factor] = {
            "nochange": spread([s["nochange"] for s in per_seed]),
            "nochange_scores": _spreads([s["nochange_scores"] for s in per_seed]),
            "chance": spread([s["chance"] for s in per_seed]),
            "own_view": {
                model: _spreads([s["own_view"][model] for s in per_seed])
                for model in entry["own_view"]
            },
        }
        for model in (name for name in MODELS if name in entry):
            for m in entry[model]:
                runs = [s[model][m] for s in per_seed]
                summary[factor].setdefault(model, {})[m] = {
                    **_spreads(runs),
                    "context_used": runs[0]["context_used"],
                }
    return summary


HEADERS = [
    "factor",
    "model",
    "M",
    "MSE mean +- sd",
    "PSNR dB",
    "SSIM",
    "detail",
    "identity kept (worst)",
    "reduction (worst)",
]


def _cells(stats: Mapping[str, Any]) -> list[str]:
    """MSE, PSNR, SSIM, detail drawn and identity kept of one row."""
    return [
        f"{stats['mse']['mean']:.4f} +- {stats['mse']['std']:.4f}",
        f"{stats['psnr']['mean']:.1f}",
        f"{stats['ssim']['mean']:.3f}",
        f"{stats['detail']['mean']:.2f}",
        f"{stats['kept']['mean']:.2f} ({stats['kept']['worst']:.2f})",
    ]


def table_rows(summary: Mapping[str, Any]) -> list[list[Any]]:
    """Every model at every M, then its render of the true view given as context, the
    unchanged first context view and chance."""
    rows = []
    for factor, entry in summary.items():
        for model in MODELS:
            for m, stats in entry.get(model, {}).items():
                used = stats["context_used"]
                label = m if int(m) == used else f"{m} ({used})"
                reduction = stats["reduction"]
                rows.append(
                    [
                        factor,
                        model,
                        label,
                        *_cells(stats),
                        f"{reduction['mean']:.2f} ({reduction['worst']:.2f})",
                    ]
                )
        for model, stats in entry["own_view"].items():
            rows.append([factor, f"{model}, given the true view", "-", *_cells(stats), ""])
        rows.append([factor, "no change", "-", *_cells(entry["nochange_scores"]), "0"])
        chance = entry["chance"]["mean"]
        rows.append([factor, "chance", "-", "", "", "", "", f"{chance:.2f}", ""])
    return rows


@dataclass(frozen=True)
class Axes:
    """Pixel positions of (M, MSE) points in one panel."""

    ms: tuple[int, ...]
    ceiling: float
    width: int = 300
    height: int = 240
    left: int = 48
    top: int = 28
    bottom: int = 36

    def at(self, m: float, y: float) -> tuple[float, float]:
        span = max(self.ms[-1] - self.ms[0], 1)
        x = self.left + (m - self.ms[0]) / span * (self.width - self.left - 16)
        return x, self.top + (1 - y / self.ceiling) * (self.height - self.top - self.bottom)


def panel(factor: str, entry: Mapping[str, Any]) -> np.ndarray:
    """Novel-view MSE against M for one factor: a line per model, no change dashed."""
    font = ImageFont.load_default()
    lines = {
        model: [(int(m), stats["mse"]["mean"]) for m, stats in entry[model].items()]
        for model in COLOURS
        if model in entry
    }
    highest = max(entry["nochange"]["mean"], *(y for pts in lines.values() for _, y in pts))
    axes = Axes(tuple(sorted({m for pts in lines.values() for m, _ in pts})), 1.1 * highest)
    image = Image.new("RGB", (axes.width, axes.height), "white")
    draw = ImageDraw.Draw(image)
    right, floor = axes.width - 16, axes.height - axes.bottom
    draw.rectangle([axes.left, axes.top, right, floor], outline="black")
    for m in axes.ms:
        draw.text((axes.at(m, 0)[0], floor + 4), str(m), fill="black", font=font)
    draw.text((axes.left, axes.height - 14), "context views M", fill="black", font=font)
    draw.text((axes.left, 4), f"{factor}: novel-view MSE", fill="black", font=font)
    draw.text((2, axes.top), f"{axes.ceiling:.3f}", fill="black", font=font)
    nochange = axes.at(axes.ms[0], entry["nochange"]["mean"])[1]
    for x in range(axes.left, right, 8):
        draw.line([(x, nochange), (x + 4, nochange)], fill=(120, 120, 120))
    for row, (model, points) in enumerate(lines.items()):
        xy = [axes.at(m, y) for m, y in points]
        if len(xy) > 1:
            draw.line(xy, fill=COLOURS[model], width=2)
        for x, y in xy:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=COLOURS[model])
        draw.text((axes.left + 56 * row, 15), model, fill=COLOURS[model], font=font)
    draw.text((axes.left + 56 * len(lines), 15), "no change", fill=(120, 120, 120), font=font)
    return np.asarray(image)


def plot(summary: Mapping[str, Any], path: Path) -> Path:
    """The panels of every factor side by side, as a PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    panels = [panel(factor, entry) for factor, entry in summary.items()]
    Image.fromarray(np.concatenate(panels, axis=1)).save(path)
    return path


def log_to_wandb(
    rows: Sequence[Sequence[Any]], headers: Sequence[str], figure: Path, workdir: Path
) -> str | None:
    """The table and the plot in an offline W&B run; a logging failure is only a warning."""
    try:
        import wandb

        run = wandb.init(
            project="dcign",
            job_type="benchmark",
            name="novel_view",
            dir=str(workdir),
            mode=os.environ.get("WANDB_MODE", "offline"),
        )
        run.log(
            {
                "novel_view/table": wandb.Table(
                    columns=list(headers), data=[list(map(str, r)) for r in rows]
                ),
                "novel_view/mse_against_context": wandb.Image(str(figure)),
            }
        )
        run.finish()
        return run.dir
    except Exception as error:  # noqa: BLE001 - the measurement itself is done and written
        log.warning("Could not log the benchmark to W&B: %s", error)
        return None


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_arguments(argv)
    threads = args.threads or max(1, len(os.sched_getaffinity(0)) // max(1, args.jobs))
    start(threads=threads, seed=args.seed, allocator="retain")
    seeds = seed_list(args)
    contexts = [int(m) for m in args.contexts.split(",")]
    shared = [*QUICK, *args.override] if args.quick else list(args.override)
    workdir = args.workdir or ROOT / "outputs" / "novel_view" / time.strftime("%Y-%m-%d_%H-%M-%S")
    data_seconds = prepare_data(shared, workdir)
    jobs = [
        (name, seed, overrides)
        for seed in seeds
        for name, overrides in (
            (args.dcign_name, [*shared, *args.dcign_override]),
            (args.gqn_name, ["experiment=gqn", *shared, *args.gqn_override]),
        )
    ]
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        trained = list(pool.map(lambda job: train(*job, workdir, threads, args.reuse), jobs))
    runs = {(name, seed): result for (name, seed, _), result in zip(jobs, trained, strict=True)}
    cfg = compose_config(shared, workdir)
    datamodule = build_data(cfg)
    datamodule.prepare_data()
    datamodule.setup("test")
    factors = [name for name in datamodule.group_types if name != INTRINSIC]
    beyond = {r.factor.name: r for r in datamodule.train_range} if args.beyond else {}
    if args.beyond:
        if not beyond:
            raise ConfigError(
                "--beyond scores views outside the training range; train with one, e.g. "
                "--override dataset.train_range='{azimuth: [-43, 43]}'."
            )
        factors = [name for name in factors if name in beyond]
    per_seed = []
    for seed in seeds:
        renderers = renderers_of(
            runs[(args.dcign_name, seed)]["checkpoint"],
            runs[(args.gqn_name, seed)]["checkpoint"],
            datamodule,
            contexts,
            args.samples,
            args.split,
            list(beyond.values()),
        )
        per_seed.append(
            {
                "seed": seed,
                "train_seconds": {
                    name: runs[(folder, seed)]["train_seconds"]
                    for name, folder in (("dcign", args.dcign_name), ("gqn", args.gqn_name))
                },
                "scores": evaluate_seed(
                    renderers, datamodule, factors, contexts, args.scenes, args.split, beyond
                ),
            }
        )
    summary = summarise(per_seed)
    headers = HEADERS
    rows = table_rows(summary)
    print_table(
        f"novel views on the {args.split} identities, {len(seeds)} seeds, {args.scenes} scenes per "
        f"factor, GQN: mean of {args.samples} prior draws",
        headers,
        rows,
    )
    minutes = {
        name: spread([s["train_seconds"][name] / 60 for s in per_seed], worst="max")
        for name in ("dcign", "gqn")
    }
    print(
        f"train minutes per seed: the DC-IGN run (its baseline included, unless off) "
        f"{minutes['dcign']['mean']:.1f}, "
        f"GQN {minutes['gqn']['mean']:.1f}; data cache {data_seconds:.0f} s"
    )
    figure = plot(summary, args.plot or workdir / "novel_view.png")
    wandb_dir = None if args.no_wandb else log_to_wandb(rows, headers, figure, workdir)
    write_json(
        args.out,
        {
            "benchmark": "novel_view",
            "overrides": {"shared": shared, "dcign": args.dcign_override, "gqn": args.gqn_override},
            "seeds": seeds,
            "split": args.split,
            "beyond": {name: str(r) for name, r in beyond.items()},
            "contexts": contexts,
            "scenes": args.scenes,
            "samples": args.samples,
            "train_minutes": minutes,
            "summary": summary,
            "runs": per_seed,
            "plot": str(figure),
            "wandb_dir": wandb_dir,
            "machine": machine_info("retain"),
        },
    )


if __name__ == "__main__":
    main()
