"""``retain_cpu_memory``: freed tensor memory stays in the process, so refilling it costs no
page faults.

Each case runs in a fresh interpreter, since the setting is process-wide and permanent. A 64 MiB
tensor spans 16,384 pages of 4 KiB; with glibc's defaults it is above the largest mmap threshold
(32 MiB), so every allocation maps fresh pages and writing it faults each one in again.
"""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from dcign.run.allocator import retain_freed_memory

PAGES = 64 * 2**20 // 4096
ROUNDS = 10

PROGRAM = f"""
import resource, sys, torch
from dcign.run.allocator import retain_freed_memory
if sys.argv[1] == "retain":
    assert retain_freed_memory()
def step():  # like an activation: allocated uninitialised, written by a kernel, freed
    torch.empty(16 * 2**20).fill_(1.0)  # 64 MiB
for _ in range(20):  # first uses: the heap grows to its steady size, faulting either way
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range({ROUNDS}):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

needs_glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")


def page_faults(setting: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, setting], capture_output=True, text=True, check=True
    )
    return int(done.stdout.strip().splitlines()[-1])


@needs_glibc
def test_glibc_defaults_fault_in_every_page_of_every_large_tensor():
    assert page_faults("default") >= 0.9 * ROUNDS * PAGES


@needs_glibc
def test_retained_memory_is_reused_without_page_faults():
    assert page_faults("retain") < 0.05 * ROUNDS * PAGES


def test_without_glibc_nothing_is_changed(monkeypatch):
    monkeypatch.setattr(platform, "libc_ver", lambda: ("", ""))
    assert retain_freed_memory() is False


@needs_glibc
def test_training_applies_it_by_default_and_can_be_switched_off(compose_config, monkeypatch):
    from dcign.run import training

    calls = []
    monkeypatch.setattr(training, "retain_freed_memory", lambda: calls.append(1) or True)
    monkeypatch.setattr(training, "fit", lambda *args, **kwargs: None)
    training.train(compose_config("test=false", "logger=csv"))
    training.train(compose_config("test=false", "logger=csv", "retain_cpu_memory=false"))
    assert calls == [1]
