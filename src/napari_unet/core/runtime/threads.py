"""Torch's intra-op thread count: set for a job and given back afterwards (it is process-wide)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch


class TorchThreads:
    """Sets torch's process-wide intra-op thread count and puts the old value back.

    ``torch.set_num_threads`` affects every thread of the process, so whoever sets it must
    restore it: :meth:`restore` is idempotent and safe to call from any thread.
    """

    def __init__(self, threads: int) -> None:
        self.threads = int(threads)
        self._before: int | None = None
        self._lock = threading.Lock()

    def apply(self) -> None:
        with self._lock:
            if self._before is None:
                self._before = torch.get_num_threads()
            torch.set_num_threads(self.threads)

    def restore(self) -> None:
        with self._lock:
            if self._before is not None:
                torch.set_num_threads(self._before)
                self._before = None


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Use ``n`` torch CPU threads inside the block and restore the previous count after."""
    if n is None:
        yield
        return
    threads = TorchThreads(n)
    threads.apply()
    try:
        yield
    finally:
        threads.restore()
