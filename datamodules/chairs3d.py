"""The 3D chairs of Aubry et al. (CVPR 2014), the DC-IGN paper's chairs, read from their renders.

The archive ``rendered_chairs.tar`` unpacks to one folder per CAD model::

    rendered_chairs/<model folder>/renders/image_NNN_pPPP_tTTT_rRRR.png

with ``P`` the elevation (20 or 30 degrees), ``T`` the azimuth (31 values over the full turn,
000 to 348) and ``R`` the camera distance; 1393 chairs x 62 views, RGB 600x600 on white. The
angles are read from the name, never from the index ``NNN``, which does not follow the azimuth.
A chair is one identity (folders in sorted order); its views need not be complete, the sampler
groups whatever views exist.

``dataset=chairs`` serves both the real renders and the procedural stand-in: the config's
``_target_`` is :func:`chairs_datamodule`, which picks by whether ``dataset.root`` is set.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from datamodules.factors import FactorSpec
from datamodules.grouped import GroupedDataModule
from datamodules.image_files import FileTable, ImageFilesDataModule
from datamodules.procedural import ChairsDataModule
from datamodules.sources import BadFiles, existing_path
from dcign.errors import ConfigError

log = logging.getLogger(__name__)

NAME = re.compile(r"image_(\d+)_p(\d+)_t(\d+)_r(\d+)\.png")
EXPECTED = (
    "the 3D-chairs renders, <root>/<chair folder>/renders/image_NNN_pPPP_tTTT_rRRR.png "
    "(unpacked from https://www.di.ens.fr/willow/research/seeing3Dchairs/data/"
    "rendered_chairs.tar)"
)
EXAMPLE_FILE = "/data/rendered_chairs/<chair folder>/renders/image_000_p020_t000_r096.png"
EXAMPLE = "python train.py dataset=chairs dataset.root=/data/rendered_chairs"
# The paper's split, about 1200 train and 150 test of the 1393 chairs, as fractions so that a
# subset of the chairs gets the same proportions (0.86 / 0.03 / 0.11 of 1393: 1198 / 42 / 153).
PAPER_SPLIT = MappingProxyType({"train": 0.86, "val": 0.03, "test": 0.11})


@dataclass(frozen=True)
class ChairView:
    """One render: its chair (identity id), angles in whole degrees as named, and file."""

    chair: int
    elevation: int
    azimuth: int
    path: Path


def parse_name(name: str) -> tuple[int, int] | None:
    """``(elevation, azimuth)`` in degrees from a render's file name; None if it is not one."""
    match = NAME.fullmatch(name)
    return None if match is None else (int(match[2]), int(match[3]))


def scan_renders(root: Path, bad: BadFiles) -> tuple[list[str], list[ChairView]]:
    """The chair folders that hold renders (sorted) and all their views.

    Every ``.png`` in a ``renders`` folder must be named like a render: another name is a bad
    file (stop, or skip and count). Two files of one chair with the same angles are an error:
    they would be the same view twice (the loader expects one camera distance).
    """
    chairs: list[str] = []
    views: list[ChairView] = []
    for folder in sorted(p for p in root.iterdir() if (p / "renders").is_dir()):
        found: dict[tuple[int, int], Path] = {}
        for path in sorted((folder / "renders").glob("*.png")):
            angles = parse_name(path.name)
            if angles is None:
                bad.handle(path, ValueError("the name is not image_NNN_pPPP_tTTT_rRRR.png"))
            elif angles in found:
                raise ConfigError(
                    f"'{found[angles]}' and '{path}' are both views of elevation {angles[0]} "
                    f"and azimuth {angles[1]} degrees. Each chair must have one render per view; "
                    "delete one of them."
                )
            else:
                found[angles] = path
        if found:
            views += [ChairView(len(chairs), *angles, path) for angles, path in found.items()]
            chairs.append(folder.name)
    if not views:
        raise ConfigError(_no_renders_message(root))
    return chairs, views


def _no_renders_message(root: Path) -> str:
    """Why ``root`` holds no renders, with a hint when it is the folder above the data set."""
    nested = root / "rendered_chairs"
    hint = f" Did you mean dataset.root={nested}?" if nested.is_dir() else ""
    return (
        f"dataset.root='{root}' holds no 3D-chairs renders: no file matches "
        f"<root>/*/renders/image_*_p*_t*_r*.png. Expected {EXPECTED}, e.g. {EXAMPLE_FILE}."
        f"{hint} Example: {EXAMPLE}"
    )


def _angle_codes(degrees: Sequence[int]) -> tuple[tuple[float, ...], np.ndarray]:
    """Sorted unique values in radians, and each entry's index into them."""
    unique, codes = np.unique(np.asarray(degrees), return_inverse=True)
    return tuple(np.radians(unique.astype(np.float64))), codes.astype(np.int64)


class Chairs3DDataModule(ImageFilesDataModule):
    """The real 3D-chairs renders: identity = chair folder, factors azimuth and elevation.

    ``root`` is the ``rendered_chairs`` folder. ``crop`` cuts each chair to its box (the same for
    all its views), ``invert`` puts it on black (the renders are on white, the project's on
    black), ``background`` is the renders' background colour. ``split`` defaults to the paper's
    proportions (:data:`PAPER_SPLIT`), seeded by ``split_seed``. Only file names are read here;
    the images are converted once, into the cache.
    """

    format = "3d-chairs"
    layout_sizes = ChairsDataModule.layout_sizes
    default_ratio = ChairsDataModule.default_ratio
    default_split = PAPER_SPLIT

    def __init__(
        self,
        root: str | os.PathLike,
        crop: bool = True,
        invert: bool = True,
        background: Sequence[int] = (255, 255, 255),
        skip_bad_files: bool = False,
        **kwargs: Any,
    ) -> None:
        root = existing_path(root, "dataset.root", EXPECTED, EXAMPLE, is_dir=True)
        bad = BadFiles(skip_bad_files, "image")
        names, views = scan_renders(root, bad)
        azimuths, azimuth_codes = _angle_codes([view.azimuth for view in views])
        elevations, elevation_codes = _angle_codes([view.elevation for view in views])
        codes = np.column_stack([[view.chair for view in views], azimuth_codes, elevation_codes])
        super().__init__(
            [FactorSpec("azimuth", azimuths, periodic=True), FactorSpec("elevation", elevations)],
            root,
            FileTable([view.path for view in views], codes, names),
            bad,
            crop=crop,
            invert=invert,
            background=background,
            **kwargs,
        )


def _own_options(cls: type) -> dict[str, Any]:
    """The options ``cls`` takes beyond :class:`GroupedDataModule`'s, with their defaults."""
    shared = set(inspect.signature(GroupedDataModule.__init__).parameters) | {"root"}
    return {
        name: parameter.default
        for name, parameter in inspect.signature(cls.__init__).parameters.items()
        if name not in shared
        and parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
    }


def chairs_datamodule(root: str | os.PathLike | None = None, **options: Any) -> GroupedDataModule:
    """``dataset=chairs``: the real renders under ``root``, or the procedural chairs without it.

    One config serves both, so it carries the options of both; those of the other kind are
    ignored. Real-data options changed from their defaults while ``root`` is unset are
    probably a forgotten ``dataset.root``, so they are named in a warning.
    """
    if root is None:
        ignored = []
        for name, default in _own_options(Chairs3DDataModule).items():
            value = options.pop(name, default)
            if (tuple(value) if isinstance(value, list) else value) != default:
                ignored.append(name)
        if ignored:
            log.warning(
                "dataset.root is not set, so the procedural chairs are used and %s (options of "
                "the real 3D-chairs renders) are ignored. Set dataset.root to use the renders.",
                ", ".join(f"dataset.{name}" for name in ignored),
            )
        return ChairsDataModule(**options)
    for name in _own_options(ChairsDataModule):
        options.pop(name, None)
    return Chairs3DDataModule(root, **options)


# The config checker (dcign.run.config_check) validates dataset=chairs keys against both classes.
chairs_datamodule.config_classes = (ChairsDataModule, Chairs3DDataModule)  # type: ignore[attr-defined]
