"""Views beyond the training range: training on a sub-range of a factor's values.

A renderer that knows 3D should draw a view it never saw in training; one that learns each view
as a picture cannot. ``dataset.train_range`` keeps the training split to a sub-range of some
factors' values (e.g. faces' azimuth within +-43 degrees: 7 of its 15 values) while validation
and test keep every value, so re-rendering to a held-out value measures extrapolation.
Angles (unit ``rad``) are given in degrees, other factors in their own unit; the bounds are
inclusive, and a periodic factor's range may wrap (``[270, 90]``: the front half of a turn).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from datamodules.factors import FactorSpec
from dcign.errors import ConfigError

# Values this close to a bound count as inside: degrees converted to radians are not exact.
_TOLERANCE = 1e-6


@dataclass(frozen=True)
class FactorRange:
    """Inclusive bounds ``[low, high]`` of one factor, in the factor's own unit."""

    factor: FactorSpec
    low: float
    high: float

    def contains(self, values: np.ndarray) -> np.ndarray:
        """Which ``values`` lie in the range (for a periodic factor, going up from ``low``)."""
        if self.factor.periodic:
            turn = 2 * math.pi if self.factor.unit == "rad" else 360.0
            if self.high - self.low >= turn - _TOLERANCE:  # a whole turn or more: every value
                return np.ones(np.shape(values), dtype=bool)
            width = (self.high - self.low) % turn
            return (values - self.low) % turn <= width + _TOLERANCE
        return (values >= self.low - _TOLERANCE) & (values <= self.high + _TOLERANCE)

    def kept_values(self) -> list[float]:
        return [v for v in self.factor.values if self.contains(np.array([v]))[0]]

    def __str__(self) -> str:
        """E.g. "7 of azimuth's 15 values (-42.9 ... 42.9 deg)"."""
        kept = self.kept_values()
        scale, unit = (180 / math.pi, " deg") if self.factor.unit == "rad" else (1.0, "")
        shown = " ".join(f"{v * scale:.3g}" for v in kept)
        return (
            f"{len(kept)} of {self.factor.name}'s {len(self.factor.values)} values ({shown}{unit})"
        )


def parse_train_range(
    spec: Mapping[str, Sequence[float]] | None, factors: Sequence[FactorSpec]
) -> list[FactorRange]:
    """The ranges of ``dataset.train_range``; a bad one is refused with the valid choices."""
    by_name = {factor.name: factor for factor in factors}
    ranges = []
    for name, bounds in (spec or {}).items():
        if name not in by_name:
            raise ConfigError(
                f"dataset.train_range names '{name}', which is not a factor of this data set; "
                f"its factors are {list(by_name)}."
            )
        if (
            not isinstance(bounds, Sequence)
            or isinstance(bounds, str)
            or len(bounds) != 2
            or not all(isinstance(b, int | float) and not isinstance(b, bool) for b in bounds)
        ):
            raise ConfigError(
                f"dataset.train_range.{name} must be two numbers [low, high], got {bounds!r}. "
                f"Example: dataset.train_range='{{{name}: [-43, 43]}}'."
            )
        factor = by_name[name]
        low, high = (math.radians(b) if factor.unit == "rad" else float(b) for b in bounds)
        if low > high and not factor.periodic:
            raise ConfigError(
                f"dataset.train_range.{name} = {list(bounds)} has low > high; only a periodic "
                "factor's range may wrap around."
            )
        factor_range = FactorRange(factor, low, high)
        if len(factor_range.kept_values()) < 2:
            raise ConfigError(
                f"dataset.train_range.{name} = {list(bounds)} keeps "
                f"{len(factor_range.kept_values())} of the factor's values; a group that varies "
                "it needs at least two. Widen the range."
            )
        ranges.append(factor_range)
    return ranges


def in_range(
    ranges: Sequence[FactorRange], values: np.ndarray, factor_names: Sequence[str]
) -> np.ndarray:
    """Boolean mask of the rows of factor ``values [N, F]`` (columns in ``factor_names``
    order) whose every ranged factor lies in its range."""
    keep = np.ones(len(values), dtype=bool)
    for factor_range in ranges:
        keep &= factor_range.contains(values[:, list(factor_names).index(factor_range.factor.name)])
    return keep
