"""Short garbage collections in the viewer's process while a training runs there.

A full (generation 2) collection walks every object the process tracks and holds the GIL all
the while; in napari's process that is about 0.4 s (benchmarks/bench_gui_latency.py caught one
of 443 ms in 20 s of training at the Train dock's defaults: the viewer froze for 549 ms). The
training thread allocates enough to trigger one every few tens of seconds. ``gc.freeze()`` moves
every object alive at Start out of the collector's sight, so the collections during the run
walk only what the run creates; ``gc.unfreeze()`` gives them back when the last run ends, and
Python's own schedule collects any garbage among them afterwards (unless something else in the
process had frozen the heap before: then it stays frozen, as that code left it).
"""

from __future__ import annotations

import gc
import threading

_lock = threading.Lock()
_holders = 0
_frozen_before = False  # another part of the process had called gc.freeze() first


class FrozenHeap:
    """One hold on the frozen heap; :meth:`release` (idempotent) ends it.

    The heap stays frozen while any hold is open (two docks training at once).
    """

    def __init__(self) -> None:
        global _holders, _frozen_before
        with _lock:
            if _holders == 0:
                _frozen_before = gc.get_freeze_count() > 0
                gc.freeze()
            _holders += 1
        self._open = True

    def release(self) -> None:
        global _holders
        with _lock:
            if not self._open:
                return
            self._open = False
            _holders -= 1
            if _holders == 0 and not _frozen_before:
                gc.unfreeze()


__all__ = ["FrozenHeap"]
