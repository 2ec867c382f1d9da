"""What the explorer asks of a data set, as a Protocol: the explorer never imports a data
module, so the data sets can depend on dcign's vocabulary without dcign depending on them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import torch

from dcign.batch import LabelledImages


class ExplorerData(Protocol):
    """A set-up data module (``datamodules.grouped.GroupedDataModule`` is one)."""

    image_size: int
    # Whether render_truth can draw any identity at any view (procedural data sets).
    can_render: bool

    @property
    def factor_names(self) -> list[str]: ...

    @property
    def factors(self) -> Sequence[Any]: ...

    def reference_images(self, n: int, seed: int = 0) -> LabelledImages: ...

    def sample_up_to(self, split: str, n: int, seed: int = 0) -> LabelledImages: ...

    def split_info(self, split: str) -> Any: ...

    def convert_image(self, source: str | Path | BinaryIO) -> torch.Tensor: ...

    def render_truth(self, identity: int, values: Mapping[str, float]) -> torch.Tensor | None: ...
