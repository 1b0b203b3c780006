"""What every spawned worker process of napari-unet shares: the start methods, the parent
check, the signals left to the parent, and starting without re-running the main script.

Used by :mod:`.batchworkers` (the training's batch workers) and :mod:`.jobprocess` (the docks'
job process).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

START_METHODS = ("spawn", "forkserver")
#: Seconds between a worker's checks that its parent is still alive (and the parent's that the
#: worker is).
PARENT_POLL_S = 0.5
#: Signals sent to a whole process group that workers leave to their parent.
GROUP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                      if hasattr(signal, name))


def spawn_context(start_method: str) -> Any:
    """The multiprocessing context for ``start_method``; ``fork`` is refused."""
    if start_method not in START_METHODS:
        raise ValueError(f"start_method must be one of {START_METHODS}, got "
                         f"{start_method!r} (fork is unsafe in a process running Qt)")
    return mp.get_context(start_method)


def leave_group_signals_to_parent() -> None:
    """In a worker: ignore Ctrl-C, a closed terminal and a cluster's limit sent to the whole
    process group; the parent handles them and ends its workers.

    The worker was started with these signals blocked (:func:`started_with_group_signals_blocked`),
    so one sent while it was still starting (importing numpy for seconds) is dropped here
    rather than killing it half-way, which the parent would take for a crash."""
    for sig in GROUP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, GROUP_SIGNALS)


@contextmanager
def started_with_group_signals_blocked() -> Iterator[None]:
    """Start processes in this block: they begin with the group signals blocked (a blocked
    mask is inherited through fork and exec), and a group signal that reaches this process
    meanwhile is held and delivered when the block ends, so a start is never cut half-way
    (which leaves a child that prints a traceback and a worker the parent did not record).
    Only in the main thread (where Python runs signal handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {sig: signal.getsignal(sig) for sig in GROUP_SIGNALS}
    for sig in GROUP_SIGNALS:
        signal.signal(sig, lambda signum, frame: held.append(signum))
    blocking = hasattr(signal, "pthread_sigmask")
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, GROUP_SIGNALS) if blocking else None
    try:
        yield
    finally:
        if blocking:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        for sig in dict.fromkeys(held):
            signal.raise_signal(sig)


def exit_with_parent(parent_pid: int, poll_s: float = PARENT_POLL_S) -> None:
    """In a worker: a daemon thread that ends this process at once when its parent is gone,
    also while the main thread is busy (a batch that takes minutes): no orphan outlives a
    parent that was killed or ended without closing it."""
    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(0)  # nothing here to save; the parent owns every output
            threading.Event().wait(poll_s)

    threading.Thread(target=watch, name="napari-unet-parent-watch", daemon=True).start()


@contextmanager
def main_script_left_out() -> Iterator[None]:
    """Processes started in this block (``spawn``/``forkserver``) do not run the parent's main
    script again.

    Python's ``spawn`` re-imports the main module in the child so that functions defined there
    can be unpickled; a napari script without an ``if __name__ == "__main__":`` guard (most
    are) would then open a second viewer in every worker. Our workers only run functions of
    importable modules, so the main module's file and spec are hidden while the child's
    start-up data is collected (``Process.start`` does that before it returns).
    """
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved = {name: main.__dict__[name] for name in ("__file__", "__spec__")
             if name in main.__dict__}
    main.__dict__.pop("__file__", None)
    main.__dict__["__spec__"] = None
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


__all__ = ["GROUP_SIGNALS", "PARENT_POLL_S", "START_METHODS", "exit_with_parent",
           "leave_group_signals_to_parent", "main_script_left_out", "spawn_context",
           "started_with_group_signals_blocked"]
