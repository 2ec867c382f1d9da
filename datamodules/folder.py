"""Any folder of images, described by a CSV manifest with one row per image.

::

    path,identity,azimuth,light
    renders/cup_a_000.png,cup_a,0,left
    renders/cup_a_030.png,cup_a,30,left
    ...

``path`` is relative to the CSV's folder (or absolute), ``identity`` any text, and each factor
declared in ``dataset.factors`` has a column. A factor's unit says how to read it: ``deg`` and
``rad`` are angles (degrees are turned into radians, the unit of every angle in the code),
``none`` is a plain quantity or, when its column holds text, a category (numbered in sorted
order). The values of a factor are the sorted distinct values of its column; identities need not
have every combination.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.factors import FactorSpec
from datamodules.grouped import IDENTITY
from datamodules.image_files import FileTable, ImageFilesDataModule
from datamodules.sources import BadFiles, existing_path
from dcign.errors import ConfigError
from dcign.model.layout import INTRINSIC

UNITS = ("deg", "rad", "none")
EXPECTED = (
    "a CSV file with one row per image: a path column (relative to the CSV's folder), an "
    "identity column and one column per factor of dataset.factors"
)
EXAMPLE = (
    "python train.py dataset=folder dataset.manifest=/data/cups/factors.csv "
    "dataset.factors='{azimuth: {unit: deg, periodic: true}}'"
)
FACTORS_EXAMPLE = "dataset.factors='{azimuth: {unit: deg, periodic: true}, light: {unit: none}}'"


@dataclass(frozen=True)
class FactorColumn:
    """A declared factor: its column name, unit (``deg``, ``rad``, ``none``) and periodicity."""

    name: str
    unit: str
    periodic: bool


def factor_columns(
    factors: Mapping[str, Any] | None, reserved: Sequence[str]
) -> list[FactorColumn]:
    """Validate ``dataset.factors`` (name -> {unit, periodic}); ``reserved`` are the path and
    identity columns, which a factor may not share."""
    if not factors or not isinstance(factors, Mapping):
        raise ConfigError(
            f"dataset.factors must name the manifest's factor columns with their units, got "
            f"{factors!r}. Example: {FACTORS_EXAMPLE}."
        )
    columns = []
    for name, spec in factors.items():
        if name in (*reserved, IDENTITY, INTRINSIC):
            raise ConfigError(
                f"dataset.factors may not name '{name}': it is the path or identity column or a "
                f"reserved group name ('{IDENTITY}', '{INTRINSIC}'). Rename the factor column."
            )
        spec = spec if isinstance(spec, Mapping) else {}
        unknown = sorted(set(spec) - {"unit", "periodic"})
        unit, periodic = spec.get("unit"), spec.get("periodic", False)
        if unknown or unit not in UNITS or not isinstance(periodic, bool):
            raise ConfigError(
                f"dataset.factors.{name} must be {{unit: deg|rad|none, periodic: true|false}} "
                f"(periodic is optional, default false), got {factors[name]!r}. "
                f"Example: {FACTORS_EXAMPLE}."
            )
        if periodic and unit == "none":
            raise ConfigError(
                f"dataset.factors.{name} is periodic but has unit none; only an angle (unit deg "
                f"or rad) can wrap around. Example: dataset.factors.{name}.unit=deg."
            )
        columns.append(FactorColumn(str(name), unit, periodic))
    return columns


def read_manifest(path: Path, columns: Sequence[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``(line numbers [N], {column: str [N]})`` of the manifest's rows, for ``columns``.

    Every named column must exist and every row must have a value in each of them.
    """
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = list(reader.fieldnames or [])
            _check_header(path, header, columns)
            lines, rows = [], []
            for row in reader:
                lines.append(reader.line_num)
                rows.append([row.get(column) for column in columns])
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ConfigError(
            f"Cannot read the manifest '{path}' as a UTF-8 CSV file ({error}). It must be "
            f"{EXPECTED}."
        ) from error
    if not rows:
        raise ConfigError(f"The manifest '{path}' has a header but no rows; add one per image.")
    for line, row in zip(lines, rows, strict=True):
        for column, cell in zip(columns, row, strict=True):
            if cell is None or not cell.strip():
                raise ConfigError(
                    f"Line {line} of the manifest '{path}' has no value in column '{column}'. "
                    "Every row needs a path, an identity and a value for each factor."
                )
    cells = {c: np.array([row[j].strip() for row in rows]) for j, c in enumerate(columns)}
    return np.asarray(lines), cells


def _check_header(path: Path, header: Sequence[str], columns: Sequence[str]) -> None:
    if not header:
        raise ConfigError(
            f"The manifest '{path}' is empty. Its first line must name the columns, e.g. "
            f"{','.join(columns)}."
        )
    missing = [column for column in columns if column not in header]
    if missing:
        raise ConfigError(
            f"The manifest '{path}' has no column {missing}; its columns are {list(header)}. "
            "Rename the CSV columns, or set dataset.path_column / dataset.identity_column / "
            "dataset.factors to the names it uses."
        )


def factor_spec(
    column: FactorColumn, cells: np.ndarray, lines: np.ndarray, manifest: Path
) -> tuple[FactorSpec, np.ndarray, list[str] | None]:
    """The factor's spec (sorted distinct values), each row's index into them, and the category
    labels (``None`` unless a unit-less column holds text)."""
    numbers = [_number(cell) for cell in cells]
    if column.unit == "none" and None in numbers:
        labels, codes = np.unique(cells, return_inverse=True)
        spec = FactorSpec(column.name, tuple(range(len(labels))), unit="none")
        return spec, codes.astype(np.int64), labels.tolist()
    if None in numbers:
        row = numbers.index(None)
        raise ConfigError(
            f"Line {lines[row]} of the manifest '{manifest}' has '{cells[row]}' in column "
            f"'{column.name}', which is not a number; factor '{column.name}' has unit "
            f"{column.unit}, so every value must be a finite number (e.g. 30 or 0.52)."
        )
    values = np.radians(numbers) if column.unit == "deg" else np.asarray(numbers)
    unique, codes = np.unique(values, return_inverse=True)
    unit = "none" if column.unit == "none" else "rad"
    spec = FactorSpec(column.name, tuple(unique), periodic=column.periodic, unit=unit)
    return spec, codes.astype(np.int64), None


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


class FolderDataModule(ImageFilesDataModule):
    """Images listed by a CSV ``manifest``, with the factors declared in ``factors``.

    ``factors`` maps each factor column to ``{unit: deg|rad|none, periodic: bool}``;
    ``path_column`` and ``identity_column`` name the other two columns. A row whose image does
    not exist stops with its line number, or is left out with ``skip_bad_files``. The model's
    latent layout must use these factor names (``model.layout``). ``crop``, ``invert`` and
    ``background`` are as in :class:`datamodules.image_files.ImageOptions` (off, off, black).
    """

    format = "folder"

    def __init__(
        self,
        manifest: str | os.PathLike | None = None,
        factors: Mapping[str, Any] | None = None,
        path_column: str = "path",
        identity_column: str = "identity",
        crop: bool = False,
        invert: bool = False,
        background: Sequence[int] = (0, 0, 0),
        skip_bad_files: bool = False,
        **kwargs: Any,
    ) -> None:
        manifest = existing_path(manifest, "dataset.manifest", EXPECTED, EXAMPLE, is_dir=False)
        declared = factor_columns(factors, (path_column, identity_column))
        bad = BadFiles(skip_bad_files, "image")
        lines, cells = read_manifest(
            manifest, [path_column, identity_column, *(c.name for c in declared)]
        )
        paths = [manifest.parent / text for text in cells[path_column]]
        exists = self._check_files(manifest, paths, lines, cells[path_column], bad)
        lines, cells = lines[exists], {name: column[exists] for name, column in cells.items()}
        identities, identity_codes = np.unique(cells[identity_column], return_inverse=True)
        specs, codes, labels = [], [identity_codes], {}
        for column in declared:
            spec, column_codes, names = factor_spec(column, cells[column.name], lines, manifest)
            specs.append(spec)
            codes.append(column_codes)
            if names is not None:
                labels[column.name] = names
        super().__init__(
            specs,
            manifest,
            FileTable(
                [path for path, kept in zip(paths, exists, strict=True) if kept],
                np.column_stack(codes).astype(np.int64),
                identities.tolist(),
            ),
            bad,
            crop=crop,
            invert=invert,
            background=background,
            **kwargs,
        )
        self.labels = labels

    @staticmethod
    def _check_files(
        manifest: Path, paths: Sequence[Path], lines: np.ndarray, texts: np.ndarray, bad: BadFiles
    ) -> np.ndarray:
        """Which rows' images exist; a missing one stops with its line unless ``bad`` skips."""
        exists = np.array([path.is_file() for path in paths])
        missing = np.flatnonzero(~exists)
        if len(missing) and not bad.skip:
            first = missing[0]
            raise ConfigError(
                f"{len(missing)} of the {len(paths)} images named in the manifest '{manifest}' "
                f"do not exist; the first is '{texts[first]}' on line {lines[first]} (looked "
                f"for '{paths[first]}'). Paths are relative to the manifest's folder. Fix them, "
                "or set dataset.skip_bad_files=true to leave those rows out."
            )
        for row in missing:
            bad.handle(paths[row], FileNotFoundError(f"no such file (line {lines[row]})"))
        if len(missing) == len(paths):
            raise ConfigError(f"None of the images named in the manifest '{manifest}' exists.")
        return exists

    def source_metadata(self) -> dict[str, Any]:
        return {**super().source_metadata(), "labels": self.labels}
