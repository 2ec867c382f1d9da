"""Every identity of a split at a given view: the line-up that "identity kept" is judged against.

A re-rendered view keeps the identity when, among the true images of all the split's
identities at exactly the target's factor values, the nearest one (pixel MSE) is the target's
own identity. That needs, for any factor values, the row of each identity at those values: a
rendered grid (faces, chairs, meshes, smallNORB) holds every identity at every point, a photo
set behind a CSV manifest may hold only some. Where an identity lacks that view it is left out
of that line-up (identity ``-1``), and evaluation says how many candidates remained.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from datamodules.factors import FactorSpec
from dcign.batch import LabelledImages

MISSING = -1


class RowReader(Protocol):
    """Reads rows of a data set as labelled images, shaped like the rows."""

    def read(self, rows: np.ndarray) -> LabelledImages: ...


@dataclass(frozen=True)
class Gallery:
    """The rows of one split's identities at every view (cell) the split holds.

    ``keys`` are the sorted cell keys (factor value indices raveled into one integer),
    ``table [cells, K]`` the row of identity ``identities[k]`` at each cell, ``MISSING`` where
    the data lacks it. ``reader`` turns rows into labelled images (the data set's cache).
    """

    factors: tuple[FactorSpec, ...]
    identities: np.ndarray
    keys: np.ndarray
    table: np.ndarray
    reader: RowReader

    @classmethod
    def build(
        cls,
        factors: Sequence[FactorSpec],
        codes: np.ndarray,
        rows: np.ndarray,
        identities: np.ndarray,
        reader: RowReader,
    ) -> Gallery:
        """From the split's code table rows ``codes [N, 1 + F]`` (identity, then the factors'
        value indices) at data set rows ``rows [N]``; ``identities`` are the split's."""
        factors = tuple(factors)
        keys = _cell_keys(codes[:, 1:], factors)
        cells, cell_of = np.unique(keys, return_inverse=True)
        column = np.searchsorted(identities, codes[:, 0])
        table = np.full((len(cells), len(identities)), MISSING, dtype=np.int64)
        table[cell_of.reshape(-1), column] = rows
        return cls(factors, np.asarray(identities), cells, table, reader)

    @property
    def complete(self) -> bool:
        """Whether every identity is held at every view of the split."""
        return bool((self.table != MISSING).all())

    def rows_at(self, values: np.ndarray) -> np.ndarray:
        """Rows ``[..., K]`` of every identity at factor values ``[..., F]`` (``MISSING`` where
        an identity or the whole view is not in the split)."""
        values = np.asarray(values, dtype=np.float64)
        codes = np.stack(
            [
                np.abs(values[..., j, None] - np.asarray(f.values)).argmin(axis=-1)
                for j, f in enumerate(self.factors)
            ],
            axis=-1,
        )
        keys = _cell_keys(codes.reshape(-1, len(self.factors)), self.factors)
        position = np.searchsorted(self.keys, keys).clip(max=len(self.keys) - 1)
        found = self.keys[position] == keys
        rows = np.where(found[:, None], self.table[position], MISSING)
        return rows.reshape(*values.shape[:-1], len(self.identities))

    def at(self, values: torch.Tensor) -> LabelledImages:
        """True images of every identity at ``values [..., F]``: ``images [..., K, C, H, W]``,
        ``factors [..., K, F]``, ``identity [..., K]`` (``-1`` and a blank image where missing)."""
        return self.read_rows(self.rows_at(values.detach().cpu().numpy()))

    def read_rows(self, rows: np.ndarray) -> LabelledImages:
        """True images at data set rows ``rows [...]`` (e.g. a row of :attr:`table`), shaped
        like ``rows``; a blank image of identity ``-1`` where a row is ``MISSING``."""
        present = torch.from_numpy(rows != MISSING)
        views = self.reader.read(np.where(rows == MISSING, self.table.max(), rows))
        images = views.images * present[..., None, None, None]
        identity = views.identity.masked_fill(~present, MISSING)
        return LabelledImages(images, views.factors, identity)


def _cell_keys(value_codes: np.ndarray, factors: Sequence[FactorSpec]) -> np.ndarray:
    """One integer per row of factor value indices ``[N, F]`` (0 for a data set without factors)."""
    if not factors:
        return np.zeros(len(value_codes), dtype=np.int64)
    sizes = [len(f.values) for f in factors]
    return np.ravel_multi_index(tuple(np.asarray(value_codes, dtype=np.int64).T), sizes)
