"""Keep freed tensor memory in the process instead of returning it to the OS after every step.

PyTorch's CPU tensors come from the C library's ``malloc``. With glibc's defaults, a block of
more than 128 KiB-32 MiB (the threshold adapts) is mapped fresh with ``mmap`` and unmapped when
freed, and the top of the heap is trimmed back to the OS once enough of it is free. A training
step frees all its activations and allocates them again in the next step, so every step pays
to fault in all its activation pages again: 3,000-5,000 page faults per step of the small
preset, up to a sixth of its step time on a 2-core machine (``benchmarks/allocator.py``).
Raising both thresholds makes the freed blocks stay in the heap, where the next step finds
them; the cost is that the process keeps its peak memory until it exits, which a training
process reaches every step anyway (the benchmark reports peak RSS for both settings).

Only glibc has the knobs (``mallopt``); elsewhere (macOS, musl) this does nothing and says so.
CUDA tensors are unaffected: they use PyTorch's own caching allocator.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

log = logging.getLogger(__name__)

# mallopt parameters from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

# mallopt takes an int; 1 GiB keeps every tensor of the shipped presets (the paper preset's
# largest activation is ~170 MB) in the heap.
RETAIN_BYTES = 1 << 30


def retain_freed_memory(threshold: int = RETAIN_BYTES) -> bool:
    """Stop glibc from unmapping freed blocks below ``threshold`` bytes; True if it took effect.

    Process-wide and permanent for this process (and processes forked from it, such as
    DataLoader workers); call it once at start-up.
    """
    if platform.libc_ver()[0] != "glibc":
        log.info("CPU allocator left as it is: needs glibc's mallopt (%s)", platform.system())
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    accepted = libc.mallopt(M_MMAP_THRESHOLD, threshold) == 1
    accepted = libc.mallopt(M_TRIM_THRESHOLD, threshold) == 1 and accepted
    if not accepted:
        log.warning("glibc refused the allocator thresholds (%d bytes); defaults kept", threshold)
    return accepted
