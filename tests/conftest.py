"""Shared fixtures: tiny configurations of the real config tree, and a shared render cache."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, ListConfig, OmegaConf

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def as_overrides(config: DictConfig | ListConfig | object, prefix: str = "") -> list[str]:
    """``key.path=value`` overrides equivalent to a config node, so tests can drop or replace
    single entries (for example every ``dataset.`` one) of a shipped config."""
    if isinstance(config, DictConfig):
        return [
            override
            for key, value in config.items()
            for override in as_overrides(value, f"{prefix}{key}.")
        ]
    if isinstance(config, ListConfig):
        return [f"{prefix[:-1]}=[{','.join(str(item) for item in config)}]"]
    return [f"{prefix[:-1]}={'null' if config is None else config}"]


# Small enough for a 2-core machine: the shipped `debug=tiny` at 16x16, without progress output.
TINY_BASE = [
    *as_overrides(OmegaConf.load(CONF / "debug" / "tiny.yaml")),
    *as_overrides(OmegaConf.load(CONF / "debug" / "data" / "tiny_faces.yaml"), "dataset."),
    "dataset.image_size=16",
    # fp32 whatever the machine (the default picks bf16 where it is native), so equivalence
    # tests keep float32 tolerances; bf16 has tests of its own.
    "trainer.precision=32-true",
    "trainer.enable_model_summary=false",
    "trainer.enable_progress_bar=false",
]
# The shipped tiny sizes of each model (conf/debug/model/tiny_<model>.yaml; paper = small).
TINY_MODELS = {
    name: as_overrides(OmegaConf.load(CONF / "debug" / "model" / f"tiny_{name}.yaml"), "model.")
    for name in ("small", "gqn")
}


# The tiny overrides of a DC-IGN run.
TINY = [*TINY_BASE, *TINY_MODELS["small"]]


def tiny_volume(model: str = "dcign3d") -> list[str]:
    """A 3D-decoder preset at the tiny sizes: an 8^3 volume of 2 features, and the tiny
    decoder's widths in its 2D renderer."""
    return [
        f"model={model}",
        "model.net.volume_size=8",
        "model.net.volume_channels=2",
        "model.net.volume_render_filters=null",
    ]


def tiny(overrides: tuple[str, ...] | list[str] = ()) -> list[str]:
    """The tiny overrides with the tiny sizes of the model that ``overrides`` choose."""
    chosen = [o.split("=", 1)[1] for o in overrides if o.startswith(("model=", "experiment="))]
    model = chosen[-1] if chosen and chosen[-1] in TINY_MODELS else "small"
    return [*TINY_BASE, *TINY_MODELS[model]]


def compose_train(cache_dir: Path, *overrides: str) -> DictConfig:
    """``conf/train.yaml`` with ``overrides`` alone (no tiny sizes), rendering into
    ``cache_dir``: for a data set or preset the tiny faces' overrides do not fit."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=[f"paths.cache_dir={cache_dir}", *overrides])


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One render cache for the whole session, so each tiny data set is rendered once."""
    path = tmp_path_factory.mktemp("render-cache")
    os.environ["DCIGN_CACHE"] = str(path)
    return path


@pytest.fixture
def compose_config(cache_dir, tmp_path):
    """Compose ``conf/train.yaml`` with the tiny overrides plus the test's own."""

    def _compose(*overrides: str):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose(
                config_name="train",
                overrides=[
                    *tiny(overrides),
                    f"paths.output_dir={tmp_path / 'run'}",
                    f"paths.cache_dir={cache_dir}",
                    *overrides,
                ],
            )

    return _compose


def ready(datamodule):
    """A data module with its cache written and its splits made, as Lightning leaves it."""
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def group_types_seen(datamodule, batches: int = 20) -> set[str]:
    """Group types in the first training batches; fails unless every group varies exactly
    its own factor (identity for ``intrinsic``) and holds every other one fixed."""
    seen = set()
    for batch in itertools.islice(datamodule.train_dataloader(), batches):
        for group_type, identity, factors in zip(
            batch.group_type, batch.identity, batch.factors, strict=True
        ):
            name = datamodule.group_types[group_type]
            seen.add(name)
            columns = {"intrinsic": identity} | {
                factor: factors[:, column] for column, factor in enumerate(datamodule.factor_names)
            }
            varied = {key: len(set(values.tolist())) > 1 for key, values in columns.items()}
            assert varied == {key: key == name for key in columns}, (name, varied)
    return seen
