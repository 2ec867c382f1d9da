"""FiLM (Perez et al. 2018): a code scales and shifts every hidden channel of a 2D network.

A decoder that reads the whole code through one linear layer mixes the latents only by adding
their contributions before a ReLU, so drawing one face at many views must be learnt view by
view. A per-channel scale is a product of two latents' effects (HoloGAN styles its 2D stages
this way): the image decoder offers it (``model.net.decoder_film``), and the volume decoder
styles its renderer with the pose-free latents (``model.net.volume_film``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn


class FiLM(nn.Linear):
    """Code ``[N, codes]`` -> a (scale, shift) pair ``[N, width, 1, 1]`` per styled stage.

    A linear layer (its weights are saved as one), zero-initialised so that training starts
    from the unstyled network and a style only grows where it lowers the loss.
    """

    def __init__(self, codes: int, widths: Sequence[int]) -> None:
        widths = [int(width) for width in widths]
        super().__init__(codes, 2 * sum(widths))
        self.widths = widths
        nn.init.zeros_(self.weight)
        nn.init.zeros_(self.bias)

    def styles(self, code: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The stages' (scale, shift) pairs, in the order the network's ReLUs come."""
        parts = self(code)[:, :, None, None].split(
            [width for width in self.widths for _ in range(2)], dim=1
        )
        return zip(parts[::2], parts[1::2], strict=True)


def modulate(h: torch.Tensor, style: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """``h * (1 + scale) + shift``: a zero style leaves ``h`` as it is."""
    scale, shift = style
    return h * (1.0 + scale) + shift


def styled(
    network: nn.Sequential, h: torch.Tensor, styles: Iterator[tuple[torch.Tensor, torch.Tensor]]
) -> torch.Tensor:
    """Run ``network`` on ``h``, each hidden stage modulated just before its ReLU."""
    for layer in network:
        if isinstance(layer, nn.ReLU):
            h = modulate(h, next(styles))
        h = layer(h)
    return h
