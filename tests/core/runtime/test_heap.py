"""core.heap: freed memory kept for reuse during a job (glibc, main thread)."""

from __future__ import annotations

import gc
import platform
import resource
import threading

import pytest
import torch

from napari_unet.core.runtime import heap
from napari_unet.core.runtime.heap import reuse_freed_memory

glibc_only = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="mallopt is glibc's")

BIG = 96 * 2**20  # bytes: far above glibc's largest mmap threshold (32 MiB)


def faults_of_a_fresh_big_block() -> int:
    """Page faults of allocating and filling one big tensor (after one such was freed).
    (A tensor, not a numpy array: numpy asks for huge pages, which fault 512 times less.)"""
    torch.ones(BIG // 4).sum()  # allocated, touched, freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(BIG // 4).sum()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def fewest_faults(tries: int = 2) -> int:
    """The fewest of a few measurements: a finaliser or another library trimming the heap
    between the two allocations (the full suite once saw all pages fault) is not the case
    under test; a heap that never reuses the block fails every try."""
    return min(faults_of_a_fresh_big_block() for _ in range(tries))


@glibc_only
def test_big_blocks_are_reused_inside_and_mapped_afresh_after():
    pages = BIG // resource.getpagesize()
    gc.collect()  # jobs of earlier tests left suspended end now, not in the middle of this one
    assert faults_of_a_fresh_big_block() > pages // 2  # glibc's default: a fresh mmap
    with reuse_freed_memory() as applies:
        assert applies
        assert fewest_faults() < pages // 20  # the freed block came back
        with reuse_freed_memory():  # nested jobs: the inner one restores nothing
            pass
        assert fewest_faults() < pages // 20
    assert faults_of_a_fresh_big_block() > pages // 2  # defaults again


def test_other_threads_and_other_c_libraries_are_left_alone(monkeypatch):
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
