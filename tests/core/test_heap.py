"""core.heap: freed memory kept for reuse during a job (glibc, main thread)."""

from __future__ import annotations

import ctypes
import os
import platform
import resource
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from napari_unet.core import heap
from napari_unet.core.heap import reuse_freed_memory

glibc_only = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="mallopt is glibc's")

BIG = 96 * 2**20  # bytes: far above glibc's largest mmap threshold (32 MiB)


def filled_block() -> None:
    """malloc, fill and free one big block with the C library itself (torch and numpy may ask
    for huge pages, which fault 512 times less and would hide what glibc does)."""
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = (ctypes.c_size_t,)
    libc.free.argtypes = (ctypes.c_void_p,)
    ptr = libc.malloc(BIG)
    assert ptr
    ctypes.memset(ptr, 1, BIG)
    libc.free(ptr)


def faults_of_a_fresh_big_block() -> int:
    """Page faults of allocating and filling one big block (after one such was freed)."""
    filled_block()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    filled_block()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@glibc_only
def test_big_blocks_are_reused_inside_and_mapped_afresh_after(monkeypatch):
    monkeypatch.delenv(heap.THP_SWITCH, raising=False)  # the docks' package sets it
    pages = BIG // resource.getpagesize()
    assert faults_of_a_fresh_big_block() > pages // 2  # glibc's default: a fresh mmap
    with reuse_freed_memory() as applies:
        assert applies
        assert faults_of_a_fresh_big_block() < pages // 20  # the freed block came back
        with reuse_freed_memory():  # nested jobs: the inner one restores nothing
            pass
        assert faults_of_a_fresh_big_block() < pages // 20
    assert faults_of_a_fresh_big_block() > pages // 2  # defaults again


def test_other_threads_other_c_libraries_and_huge_pages_are_left_alone(monkeypatch):
    monkeypatch.setenv(heap.THP_SWITCH, "1")  # huge pages would fragment the kept heap
    with reuse_freed_memory() as applies:
        assert not applies
    monkeypatch.delenv(heap.THP_SWITCH)
    seen = []

    def in_worker():
        with reuse_freed_memory() as applies:
            seen.append(applies)

    worker = threading.Thread(target=in_worker)
    worker.start()
    worker.join()
    assert seen == [False]
    monkeypatch.setattr(heap.platform, "libc_ver", lambda: ("", ""))
    heap._glibc.cache_clear()  # the C library is looked up once per process
    try:
        with reuse_freed_memory() as applies:
            assert not applies
    finally:
        monkeypatch.undo()
        heap._glibc.cache_clear()


THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")
HUGE_PAGES_OF_A_TENSOR = """
import napari_unet._widgets  # the docks turn torch's switch on, unless the user said no
import torch
x = torch.ones(64 * 2**20 // 4)  # 64 MiB
for line in open("/proc/self/smaps_rollup"):
    if line.startswith("AnonHugePages:"):
        print(int(line.split()[1]))
"""


def huge_kib(env_value: str | None) -> int:
    env = {k: v for k, v in os.environ.items() if k != heap.THP_SWITCH}
    if env_value is not None:
        env[heap.THP_SWITCH] = env_value
    out = subprocess.run([sys.executable, "-c", HUGE_PAGES_OF_A_TENSOR], env=env, text=True,
                         capture_output=True, timeout=120, check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not THP_MODE.exists() or "[never]" in THP_MODE.read_text(),
                    reason="no transparent huge pages on this kernel")
def test_the_docks_give_torch_buffers_huge_pages_unless_the_user_says_no():
    assert huge_kib(None) >= 32 * 1024  # most of the 64 MiB tensor in 2 MiB pages
    if "[madvise]" in THP_MODE.read_text():  # "always": every big mapping gets them anyway
        assert huge_kib("0") < 4 * 1024  # the user's THP_MEM_ALLOC_ENABLE=0 is kept
