"""One source of defaults: every option a constructor gives a default is the shipped config's.

A class built in Python (a notebook, a test) must be the class ``python train.py`` builds, so
each ``_target_`` of this project that ``conf/`` composes - data modules, the model and its
nodes, callbacks - is checked against the composed config: a parameter with a default is
either set to that default by the config or deliberately left out of it (:data:`NOT_OPTIONS`).
Presets that differ from the defaults on purpose (``model=paper``) must say so in their own
YAML.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import get_object, instantiate
from omegaconf import OmegaConf

from dcign.model.networks import Architecture, Decoder
from dcign.run.config_check import check_sections, parameters
from dcign.run.precision import register_resolver
from tests.conftest import CONF

register_resolver()  # ${best_precision:...} in the trainer configs
OURS = ("dcign.", "datamodules.", "callbacks.")
DATASETS = sorted(path.stem for path in (CONF / "dataset").glob("*.yaml"))
# One node per objective class; dcign_no_lineup is a preset of DCIGNObjective, checked by
# test_a_preset_without_the_line_up_term_takes_another_objective_whole.
OBJECTIVES = sorted(
    path.stem
    for path in (CONF / "model" / "objective").glob("*.yaml")
    if path.stem != "dcign_no_lineup"
)
# Parameters with a default that the config leaves out by design, and why.
NOT_OPTIONS = {
    # The run passes the data's factors to a model that takes them (dcign/run/training.py).
    "dcign.gqn.module.GQN": {"factors"},
    "dcign.model.module.DCIGN": {"factors"},
    # The size of the viewpoint vector follows from the data's factors (the module sets it).
    "dcign.gqn.networks.GQNArchitecture": {"viewpoint_dim"},
    # model.layout reaches the data set when it is set (build_data); null = the data's own.
    "*datamodules": {"layout"},
    # The lamp of a data set without a light factor: fixed by the data set, not an option.
    "datamodules.procedural.FacesDataModule": {"fixed_light"},
    "datamodules.chairs3d.chairs_datamodule": {"fixed_light"},
    "datamodules.mesh_folder.MeshFolderDataModule": {"fixed_light"},
    # Which file the preemption callback writes: last.ckpt, as the checkpoint callbacks.
    "callbacks.preemption.PreemptionCheckpoint": {"filename", "signals"},
}
# Where renders are cached belongs to the machine, not to the model: $DCIGN_CACHE either way,
# else the user's cache (Python) or the run's start directory (conf/paths/default.yaml).
ENVIRONMENT = {"cache_dir"}
# The detail weight experiment=chairs trains with, chosen on validation chairs.
CHAIRS_DETAIL = 4.0


def composed(*overrides: str) -> dict[str, Any]:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["paths.output_dir=/tmp/unused", *overrides])
    return OmegaConf.to_container(cfg, resolve=True)


def our_targets(node: Any, where: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every node of ``node`` (nested included) whose ``_target_`` is this project's."""
    if isinstance(node, Mapping):
        if str(node.get("_target_", "")).startswith(OURS):
            yield where, node
        for key, value in node.items():
            yield from our_targets(value, f"{where}.{key}")


def plain(value: Any) -> Any:
    """Tuples as lists and read-only mappings as dicts, as YAML gives them."""
    if isinstance(value, Mapping | MappingProxyType):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


def class_defaults(function: Any, name: str) -> list[Any]:
    """What a data module's ``ratio=None`` / ``split=None`` means: the data set's own
    (``default_ratio``, ``default_split``), for each class ``function`` may build."""
    attribute = {"ratio": "default_ratio", "split": "default_split"}.get(name)
    classes = getattr(function, "config_classes", None) or (function,)
    return [getattr(cls, attribute) for cls in classes if attribute and hasattr(cls, attribute)]


def agrees(function: Any, name: str, default: Any, value: Any) -> bool:
    if plain(default) == plain(value):
        return True
    if default is not None or value is None:
        return False
    own = class_defaults(function, name)
    if name == "ratio":
        return bool(own) and all(
            {key: ratio.get(key, 1.0) for key in value} == value for ratio in own
        )
    return bool(own) and all(plain(split) == value for split in own)


def disagreements(config: Mapping[str, Any]) -> list[str]:
    found = []
    for where, node in our_targets(config, "cfg"):
        target = node["_target_"]
        function = get_object(target)
        options, _ = parameters(function)
        left_out = NOT_OPTIONS.get(target, set())
        if target.startswith("datamodules."):
            left_out = left_out | NOT_OPTIONS["*datamodules"]
        for name, parameter in options.items():
            if parameter.default is inspect.Parameter.empty or name in ENVIRONMENT:
                continue
            if name not in node:
                if name not in left_out:
                    found.append(f"{where}.{name}: default {parameter.default!r}, not in config")
            elif not agrees(function, name, parameter.default, node[name]):
                found.append(
                    f"{where}.{name}: default {parameter.default!r}, config {node[name]!r}"
                )
    return found


@pytest.mark.parametrize("dataset", DATASETS)
def test_data_model_and_callback_defaults_are_the_shipped_config(dataset):
    assert disagreements(composed(f"dataset={dataset}")) == []


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_objective_defaults_are_the_shipped_config(objective):
    config = composed(f"model/objective={objective}")
    assert disagreements(config["model"]["objective"]) == []
    # Built from its YAML and from its defaults, each objective is the same object.
    node = config["model"]["objective"]
    assert instantiate(node) == get_object(node["_target_"])()


def test_the_paper_preset_differs_only_where_its_yaml_says():
    paper_yaml = OmegaConf.to_container(OmegaConf.load(CONF / "model" / "paper.yaml"))
    differing = {line.split(":")[0] for line in disagreements(composed("model=paper")["model"])}
    written = {
        f"cfg.{section}.{key}" for section in ("net", "objective") for key in paper_yaml[section]
    }
    assert differing and differing <= written


def test_the_gqn_defaults_are_its_config():
    assert disagreements(composed("model=gqn")["model"]) == []


def test_the_gqn_experiments_callbacks_defaults_are_its_config():
    assert disagreements(composed("experiment=gqn")["callbacks"]) == []


@pytest.mark.parametrize("dataset", ["faces", "chairs"])
def test_the_gqn_experiment_trains_on_scenes_with_room_for_every_context_size(dataset):
    """The faces train DC-IGN on groups of 4; a GQN scene of 4 views would cap the context at
    3 of its model.max_context=5 (module.py), so the experiment keeps scenes of ten."""
    cfg = composed("experiment=gqn", f"dataset={dataset}")
    assert cfg["dataset"]["group_size"] > cfg["model"]["max_context"]
    assert composed()["dataset"]["group_size"] <= cfg["model"]["max_context"]


@pytest.mark.parametrize(
    ("overrides", "shape"),
    [
        ((), (4, 3, 833)),
        (("experiment=faces64",), (4, 3, 833)),
        (("experiment=faces3d",), (4, 3, 833)),
        (("experiment=faces3d64",), (4, 3, 833)),
        (("experiment=gqn",), (10, 4, 250)),
        (("experiment=gqn", "dataset=chairs"), (10, 4, 250)),
        (("experiment=chairs",), (4, 10, 250)),
        (("experiment=chairs3d",), (4, 10, 250)),
    ],
)
def test_each_preset_trains_on_the_batches_its_numbers_were_measured_on(overrides, shape):
    """The faces train on three groups of four over 833 batches an epoch (at 64x64 and with
    the 3D decoder too); the presets measured on 40 images over 250 batches keep that, or a run
    of theirs would take 3.3 times the steps of the numbers docs/results.md gives for it."""
    dataset = composed(*overrides)["dataset"]
    keys = ("group_size", "groups_per_batch", "batches_per_epoch")
    assert tuple(dataset[key] for key in keys) == shape


@pytest.mark.parametrize(
    ("overrides", "weight"),
    [
        ((), 1.0),
        (("dataset=chairs",), 1.0),
        (("experiment=chairs",), CHAIRS_DETAIL),
        (("experiment=chairs3d",), CHAIRS_DETAIL),
        (("experiment=faces64",), 0.0),
        (("model=dcign3d",), 0.0),
        (("model=dcign3d_learnt",), 0.0),
        (("experiment=faces3d",), 1.0),
        (("experiment=faces3d", "model=dcign3d_learnt"), 1.0),
        (("experiment=faces3d64",), 1.0),
        (("model=paper",), 0.0),
        (("model/objective=mlvae",), 0.0),
    ],
)
def test_each_preset_trains_with_the_detail_weight_it_was_measured_with(overrides, weight):
    """DC-IGN's objective asks for the faces' detail (weight 1, chosen at 32x32), and so does
    the 3D decoder's in-range preset, re-run beside it; the chairs preset's weight was chosen
    on validation chairs; the presets whose numbers were measured without the term or worse
    with it (64x64, the 3D decoder beyond its training range, the paper's reading) pin it off,
    and the other objectives keep the shared default, off."""
    assert composed(*overrides)["model"]["objective"]["detail_weight"] == weight


# What a data module serves, beside what it renders (its cache_config).
DATA_ATTRIBUTES = (
    "layout",
    "ratio",
    "split",
    "image_size",
    "channels",
    "group_size",
    "groups_per_batch",
    "eval_group_size",
    "eval_groups_per_batch",
    "split_seed",
    "batches_per_epoch",
    "val_batches",
    "val_fidelity",
)


@pytest.mark.parametrize("dataset", ["faces", "chairs"])
def test_a_data_module_built_from_its_defaults_is_the_shipped_one(dataset):
    """The procedural data sets need no files, so they are built both ways and compared."""
    node = composed(f"dataset={dataset}")["dataset"]
    from_yaml = instantiate(node)
    from_defaults = instantiate({"_target_": node["_target_"], "cache_dir": node["cache_dir"]})
    for attribute in DATA_ATTRIBUTES:
        assert plain(getattr(from_yaml, attribute)) == plain(getattr(from_defaults, attribute))
    assert from_yaml.type_probabilities.tolist() == from_defaults.type_probabilities.tolist()
    assert from_yaml.cache_config() == from_defaults.cache_config()


@pytest.mark.parametrize(("overrides", "image_size"), [((), 32), (("experiment=faces64",), 64)])
def test_the_default_decoders_start_from_an_8x8_grid(overrides, image_size):
    """The small preset's two stages at 32x32 and faces64's three at 64x64 both give the
    decoder's linear layer an 8x8 grid to place detail on (docs/training.md)."""
    node = dict(composed(*overrides)["model"]["net"])
    node.pop("_target_")
    decoder = Decoder(Architecture(**node))
    assert decoder.start_size == 8
    assert decoder.project.out_features == 64 * 8 * 8
    image = decoder(torch.zeros(1, node["latent_dim"]))
    assert image.shape == (1, 1, image_size, image_size)


def without(config: dict[str, Any], *keys: str) -> dict[str, Any]:
    """``config`` less the dotted ``keys`` and what names a run rather than trains it (task
    name, output paths, Hydra's own node), so two presets compare by what they train."""
    for key in (*keys, "task_name", "paths", "hydra"):
        *parents, last = key.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        node.pop(last, None)
    return config


# The override docs/results.md and conf/experiment/faces64.yaml / faces3d.yaml / faces3d64.yaml /
# chairs3d.yaml give to co-train the baseline beside the presets that train DC-IGN alone,
# written out as a user types it.
BASELINE_OVERRIDE = "model.baseline={beta: 1.0, lr: 0.001, scheduled: false, detail_weight: 0.0}"


def test_the_faces3d_experiment_is_the_3d_decoder_trained_twice_as_long_alone():
    """`experiment=faces3d` is `model=dcign3d` at 30 epochs instead of 15, with the detail term
    and without the co-trained baseline, on the faces' own batch, and nothing else: the decoder
    switch stays one override, the preset only adds the length, the term and the budget it was
    chosen with; the documented override brings back `model=dcign3d`'s baseline exactly."""
    plain, experiment = composed("model=dcign3d"), composed("experiment=faces3d")
    assert plain["trainer"]["max_epochs"] == 15
    assert experiment["trainer"]["max_epochs"] == 30
    assert (
        plain["model"]["objective"]["detail_weight"],
        experiment["model"]["objective"]["detail_weight"],
    ) == (0.0, 1.0)
    assert plain["model"]["baseline"] is not None
    assert experiment["model"]["baseline"] is None
    restored = composed("experiment=faces3d", BASELINE_OVERRIDE)
    assert restored["model"]["baseline"] == plain["model"]["baseline"]
    assert experiment["model"]["net"]["decoder"] == "volume"
    assert experiment["model"]["pose"]["source"] == "told"
    chosen = ("trainer.max_epochs", "model.objective.detail_weight", "model.baseline")
    assert without(experiment, *chosen) == without(plain, *chosen)
    learnt = composed("experiment=faces3d", "model=dcign3d_learnt")
    assert (
        learnt["trainer"]["max_epochs"],
        learnt["model"]["baseline"],
        learnt["model"]["pose"]["source"],
    ) == (30, None, "learnt")


@pytest.mark.parametrize("preset", ["faces64", "faces3d", "faces3d64", "chairs3d"])
def test_the_presets_without_a_baseline_document_the_override_that_restores_it(preset):
    """The preset's yaml tells a user how to co-train the baseline; the tests here compose that
    override, so it must be the text the yaml gives, not a copy that could drift from it."""
    text = (CONF / "experiment" / f"{preset}.yaml").read_text()
    assert f"'{BASELINE_OVERRIDE}'" in " ".join(line.strip("# ") for line in text.splitlines())


def test_the_faces64_experiment_spends_its_budget_on_dc_ign_alone():
    """`experiment=faces64` trains DC-IGN alone for 40 epochs (the baseline's steps would halve
    them in its 20 minutes), where the default run keeps the baseline; the documented override
    brings back exactly the default run's baseline, and the preset differs from the 32x32
    default only in what makes it 64x64 and in that budget."""
    default, faces64 = composed(), composed("experiment=faces64")
    assert default["model"]["baseline"] is not None
    assert faces64["model"]["baseline"] is None
    assert faces64["trainer"]["max_epochs"] == 40 > default["trainer"]["max_epochs"]
    restored = composed("experiment=faces64", BASELINE_OVERRIDE)
    assert restored["model"]["baseline"] == default["model"]["baseline"]
    chosen = (
        "dataset.image_size",
        "model.net.image_size",
        "model.net.encoder_filters",
        "model.net.decoder_filters",
        "model.objective.detail_weight",
        "trainer.max_epochs",
        "model.baseline",
    )
    assert without(faces64, *chosen) == without(default, *chosen)


def test_the_faces3d64_experiment_is_faces3d_at_64x64_with_faces64_s_encoder():
    """`experiment=faces3d64` is `experiment=faces3d` at 64x64: the image size, faces64's
    three-stage networks (its encoder; its decoder for the baseline), the renderer's doubling
    to 64x64, and the budget spent as faces64 spends it, DC-IGN alone for 20 epochs; the
    documented override brings back `model=dcign3d`'s baseline exactly. Nothing else."""
    faces3d, faces64 = composed("experiment=faces3d"), composed("experiment=faces64")
    experiment = composed("experiment=faces3d64")
    assert experiment["dataset"]["image_size"] == faces64["dataset"]["image_size"] == 64
    for key in ("encoder_filters", "decoder_filters"):
        assert experiment["model"]["net"][key] == faces64["model"]["net"][key]
    assert experiment["model"]["net"]["volume_render_filters"] == [64, 32, 16]
    assert experiment["trainer"]["max_epochs"] == 20
    assert experiment["model"]["baseline"] is faces3d["model"]["baseline"] is None
    restored = composed("experiment=faces3d64", BASELINE_OVERRIDE)
    assert restored["model"]["baseline"] == composed("model=dcign3d")["model"]["baseline"]
    chosen = (
        "dataset.image_size",
        "model.net.image_size",  # ${dataset.image_size}
        "model.net.encoder_filters",
        "model.net.decoder_filters",
        "model.net.volume_render_filters",
        "trainer.max_epochs",
    )
    assert without(experiment, *chosen) == without(faces3d, *chosen)


def test_the_chairs_experiment_is_the_chairs_data_trained_six_times_as_long():
    """`experiment=chairs` changes the length of the run, the batch's shape (ten groups of
    four, the same 40 images a step), turns the faces' line-up term off and sets its own detail
    weight, and nothing else of `dataset=chairs`."""
    plain, experiment = composed("dataset=chairs"), composed("experiment=chairs")
    assert plain["trainer"]["max_epochs"] == 15
    assert experiment["trainer"]["max_epochs"] == 90
    assert experiment["dataset"]["_target_"] == "datamodules.chairs3d.chairs_datamodule"
    shape = ("group_size", "groups_per_batch")
    assert [plain["dataset"][key] for key in shape] == [10, 4]
    assert [experiment["dataset"][key] for key in shape] == [4, 10]
    assert (
        plain["model"]["objective"]["contrast_weight"],
        experiment["model"]["objective"]["contrast_weight"],
    ) == (10.0, 0.0)
    assert experiment["model"]["objective"]["detail_weight"] == CHAIRS_DETAIL
    changed = (
        "trainer.max_epochs",
        "model.objective.contrast_weight",
        "model.objective.detail_weight",
        *(f"dataset.{key}" for key in shape),
    )
    assert without(experiment, *changed) == without(plain, *changed)


@pytest.mark.parametrize("preset", ["model=dcign3d", "experiment=chairs"])
def test_a_preset_without_the_line_up_term_takes_another_objective_whole(preset):
    """The presets that train DC-IGN without its line-up term choose the objective node
    `dcign_no_lineup` (DC-IGN's, the term at 0) rather than pinning the key, so another
    objective on top of them (`model/objective=mlvae`) brings only its own options: a pinned
    `contrast_weight` would stop the run as an option ML-VAE does not read."""
    off = composed(preset)["model"]["objective"]
    on = composed(preset, "model/objective=dcign")["model"]["objective"]
    assert (off.pop("contrast_weight"), on.pop("contrast_weight")) == (0.0, 10.0)
    assert off == on
    model = composed(preset, "model/objective=mlvae")["model"]
    assert "contrast_weight" not in model["objective"]
    check_sections({"model": model}, ["model"])


def test_the_chairs3d_experiment_is_the_chairs_preset_with_the_volume_decoder_measured():
    """`experiment=chairs3d` is `experiment=chairs model=dcign3d` with what docs/results.md
    measured it with and nothing else: one doubling from an 8^3 start, 45 epochs, DC-IGN
    alone; the chairs' batch and detail weight stay the chairs preset's, and the documented
    override brings back the baseline `experiment=chairs model=dcign3d` co-trains."""
    plain = composed("experiment=chairs", "model=dcign3d")
    experiment = composed("experiment=chairs3d")
    assert (plain["model"]["net"]["volume_doublings"], plain["trainer"]["max_epochs"]) == (2, 90)
    assert experiment["model"]["net"]["volume_doublings"] == 1
    assert experiment["trainer"]["max_epochs"] == 45
    assert experiment["model"]["baseline"] is None
    assert (experiment["model"]["net"]["decoder"], experiment["model"]["pose"]["source"]) == (
        "volume",
        "told",
    )
    restored = composed("experiment=chairs3d", BASELINE_OVERRIDE)
    assert restored["model"]["baseline"] == plain["model"]["baseline"]
    chosen = ("model.net.volume_doublings", "trainer.max_epochs", "model.baseline")
    assert without(experiment, *chosen) == without(plain, *chosen)


@pytest.mark.parametrize("decoder", ["model=dcign3d", "model=dcign3d_learnt"])
def test_the_3d_decoder_is_one_override_that_changes_only_the_decoder_and_its_pose(decoder):
    """`model=dcign3d` (or `_learnt`) switches the decoder and nothing a user did not ask for:
    the same encoder, batches, trainer, clamped objective and baseline as the default run; what
    differs is the decoder's own options, how it is told its pose, and the two objective terms
    docs/volume.md says it trains without (the detail term, the line-up term)."""
    default, volume = composed(), composed(decoder)
    assert volume["model"]["net"]["decoder"] == "volume"
    assert volume["model"]["pose"]["source"] in ("told", "learnt")
    assert (
        volume["model"]["objective"]["detail_weight"],
        volume["model"]["objective"]["contrast_weight"],
    ) == (0.0, 0.0)
    own = [f"model.net.{key}" for key in default["model"]["net"] if key.startswith("volume_")]
    chosen = (
        "model.net.decoder",
        *own,
        "model.pose",
        "model.objective.detail_weight",
        "model.objective.contrast_weight",
    )
    assert without(volume, *chosen) == without(default, *chosen)
