"""Keep freed memory for reuse during a prediction (glibc, main thread): big tiles cost no more.

glibc's ``malloc`` serves every block above its mmap threshold (at most 32 MiB) with a fresh
``mmap`` and gives it back to the system on ``free``. One forward pass of a 1152² tile of the
shipped net allocates about 1 GB in such blocks (16 channels x 1152² float32 is 85 MB), so every
pass page-faults and zero-fills that memory again: ~250,000 page faults per pass, which made
large tiles ~30 % dearer per pixel than 256² ones (measured: 764-783 against 551-561 ns per
pixel at 1152², 2 threads; docs/tiling.md). PyTorch's CPU performance guide recommends
jemalloc or tcmalloc for the same reason; a plugin cannot preload an allocator, but it can ask
glibc (``mallopt``) to serve big blocks from its heap and keep freed memory there while the
net's passes over one plane run, then restore the settings and give the free memory back
(``malloc_trim``). The labelling that follows allocates as usual, so memory kept for the
passes does not stay fragmented under it.

Only the main thread gains: glibc serves other threads from their own arenas, which fall back
to ``mmap`` for blocks above 64 MiB whatever ``mallopt`` says. So this applies to the command
line, scripts, and the Predict dock, whose jobs run in the main thread of the docks' job
process (:mod:`.jobprocess`); a job in a worker thread runs as before. Even a plane of one pass
gains: the pass frees maps that its later layers allocate again. Other C libraries (macOS, Windows,
musl): nothing is changed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# mallopt parameters (malloc.h) and glibc's defaults for them
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_DEFAULT_TRIM_THRESHOLD = 128 * 1024
_DEFAULT_MMAP_MAX = 65536
_KEEP_FREED = 2**31 - 1  # bytes of free heap top before glibc trims it: never, in practice


@functools.cache  # find_library runs ldconfig: ~2 ms, once per plane otherwise
def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        libc.malloc_trim.argtypes = (ctypes.c_size_t,)
    except (OSError, AttributeError):
        return None
    return libc


_depth = 0  # nested jobs (e.g. the diameter estimate inside a prediction) restore once


@contextmanager
def reuse_freed_memory() -> Iterator[bool]:
    """While the block runs in the main thread on glibc, big blocks come from the heap and
    freed memory stays there for the next forward pass; afterwards glibc's defaults are set
    again and the free memory is returned to the system. Yields whether it applies."""
    global _depth
    libc = _glibc()
    if libc is None or threading.current_thread() is not threading.main_thread():
        yield False
        return
    if _depth == 0:
        libc.mallopt(_M_MMAP_MAX, 0)
        libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_FREED)
    _depth += 1
    try:
        yield True
    finally:
        _depth -= 1
        if _depth == 0:
            libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
            libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
            libc.malloc_trim(0)


__all__ = ["reuse_freed_memory"]
