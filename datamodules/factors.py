"""Factors of variation: the named, ground-truth generating variables of a data set's images.

A data set declares its factors (azimuth, elevation, light, ...) once; everything downstream
uses that declaration: the code table stores each image's factor values as integer indices into
``FactorSpec.values`` (so groups can be found by exact equality, which floats would not
allow), batches carry the values themselves, and evaluation needs ``periodic`` to know that a
full-turn azimuth wraps around.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dcign.errors import ConfigError


@dataclass(frozen=True)
class FactorSpec:
    """One factor: its name, the values it takes in the data, and how to read them.

    ``values`` are in ``unit`` (radians for angles, as everywhere in the code). ``periodic`` marks
    a factor that covers a full turn, where the first and last value are neighbours.
    """

    name: str
    values: tuple[float, ...]
    periodic: bool = False
    unit: str = "rad"

    def __post_init__(self) -> None:
        values = tuple(float(v) for v in self.values)
        if not values:
            raise ConfigError(
                f"Factor '{self.name}' has no values. A factor needs at least one value; check "
                "the number of grid points configured for it."
            )
        object.__setattr__(self, "values", values)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form, for cache metadata and cache keys."""
        return {
            "name": self.name,
            "values": list(self.values),
            "periodic": self.periodic,
            "unit": self.unit,
        }


def evenly_spaced(low: float, high: float, n: int, option: str) -> tuple[float, ...]:
    """``n`` values from ``low`` to ``high`` inclusive; one value sits in the middle of the range.

    Both ends are included because a bounded range (a face turning from one profile to the
    other) is only fully covered if its extremes are rendered. ``option`` names the setting
    that chose ``n``, for the error message.
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ConfigError(
            f"{option} must be a positive integer (the number of grid values), got {n!r}. "
            f"Use {option}=1 to hold the factor fixed."
        )
    if n == 1:
        return (0.5 * (low + high),)
    return tuple(float(v) for v in np.linspace(low, high, int(n)))


def grid_codes(factors: Sequence[FactorSpec]) -> np.ndarray:
    """Value indices of every point of the full factor grid, ``int64 [prod(sizes), F]``.

    Rows follow ``itertools.product`` order (last factor fastest), which is the order views
    are rendered and stored in.
    """
    sizes = [len(factor.values) for factor in factors]
    return np.indices(sizes, dtype=np.int64).reshape(len(sizes), -1).T.copy()


def factor_values(factors: Sequence[FactorSpec], value_codes: np.ndarray) -> np.ndarray:
    """Turn value indices ``[N, F]`` into the factors' ground-truth values, ``float32 [N, F]``."""
    columns = [
        np.asarray(factor.values, dtype=np.float32)[value_codes[:, j]]
        for j, factor in enumerate(factors)
    ]
    return np.stack(columns, axis=1) if columns else np.zeros((len(value_codes), 0), np.float32)
