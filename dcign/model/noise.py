"""The reparameterisation noise of training, as a pure function of the step.

Exact resumption needs the noise of step ``k`` to be the same whether or not the run was killed
and restarted in between, and DDP equivalence needs ``W`` ranks with ``G`` groups each to draw
the same noise as one process with ``W * G`` groups. Both hold if the noise of a step is drawn
from a generator seeded by ``(seed, stream, step)`` - not from the global RNG, which callbacks,
validation and data loading also consume - for all ranks' groups together, each rank keeping
its own slice. Reseeding costs microseconds, and the extra noise for the other ranks' groups is
a few hundred kilobytes at most.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from dcign.errors import ConfigError


class TrainingNoise:
    """Draws standard-normal noise keyed by ``(seed, *key)``, sliced for one DDP rank."""

    def __init__(self, seed: int) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"model.noise_seed must be an integer >= 0, got {seed!r}.")
        self.seed = seed
        self._generators: dict[str, torch.Generator] = {}

    def draw(
        self,
        shape: Sequence[int],
        device: torch.device,
        key: Sequence[int],
        rank: int = 0,
        world_size: int = 1,
    ) -> torch.Tensor:
        """Noise of ``shape = [G, S, D]`` for ``rank``: rows ``rank*G ... rank*G + G - 1`` of the
        ``[world_size * G, S, D]`` draw that every rank makes for ``key``."""
        groups = shape[0]
        generator = self.generator(device, key)
        full = torch.randn((world_size * groups, *shape[1:]), generator=generator, device=device)
        return full[rank * groups : (rank + 1) * groups]

    def generator(self, device: torch.device, key: Sequence[int]) -> torch.Generator:
        """A generator on ``device`` seeded by ``(seed, *key)``: every draw made from it right
        after this call is a pure function of the key (it is reseeded on every call)."""
        name = str(device)
        if name not in self._generators:
            self._generators[name] = torch.Generator(device=device)
        generator = self._generators[name]
        generator.manual_seed(self._seed_of(key))
        return generator

    def _seed_of(self, key: Sequence[int]) -> int:
        """A well-mixed 63-bit seed for ``key`` (neighbouring steps get unrelated streams)."""
        state = np.random.SeedSequence([self.seed, *map(int, key)]).generate_state(2, np.uint32)
        return (int(state[0]) << 31) ^ int(state[1])
