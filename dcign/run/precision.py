"""The default numeric precision: bf16 autocast where the hardware computes in bf16, else fp32.

bf16-mixed (fp32 weights and optimizer, convolutions and matmuls in bf16) trained the small
preset 1.6x faster per step on a CPU with native BF16 instructions and reached the
time-to-quality target at the same epoch as fp32, in half the time (``docs/performance.md``).
On a CPU without them oneDNN emulates bf16, which is usually slower than fp32, so the choice
depends on the machine: the trainer configs' ``precision: ${best_precision:auto}`` (``:cpu``
in the CPU presets) resolves to ``bf16-mixed`` on a GPU with bf16 support or a CPU with
AVX-512 BF16 / AMX, and to ``32-true`` elsewhere.
``trainer.precision=32-true`` (or any Lightning precision) overrides it; the resolved value is
what the run config records.
"""

from __future__ import annotations

import torch
from omegaconf import OmegaConf

RESOLVER = "best_precision"


def cpu_has_native_bf16() -> bool:
    """AVX-512 BF16 or AMX tiles, by PyTorch's own CPU feature detection (False if unknown)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def best_precision(device: str = "auto") -> str:
    """``bf16-mixed`` where bf16 is computed natively on the device a run will use, else
    ``32-true``. ``device`` is the trainer's accelerator: ``auto`` uses a visible CUDA device
    (what Lightning's ``accelerator: auto`` picks), ``cpu`` only looks at the CPU."""
    if device not in ("auto", "cpu"):
        raise ValueError(f"best_precision takes 'auto' or 'cpu', got {device!r}")
    if device == "auto" and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true"
    return "bf16-mixed" if cpu_has_native_bf16() else "32-true"


def register_resolver() -> None:
    """Make ``${best_precision:auto|cpu}`` available to configs (idempotent)."""
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, best_precision)
