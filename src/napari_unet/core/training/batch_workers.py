"""Batch preparation outside the training process: a few spawned worker processes.

Elastic warps and weight maps are numpy/scipy calls that hold the GIL; in a thread of the napari
process they stall the viewer. :class:`BatchWorkers` makes the batches in separate processes
instead:

- started with ``spawn`` (default) or ``forkserver``, never ``fork`` (forking a process that runs
  Qt is unsafe); a worker imports only numpy/scipy/skimage (:mod:`core.training.sampling`),
  not torch, so it starts quickly;
- start-up costs no time: until a worker reports ready (it imports numpy/scipy, which takes
  seconds on a busy laptop), the batches are made in the calling process, so the first step
  starts as soon as without workers;
- steps go round-robin to the ready workers; results come back on one queue and are handed out
  in step order. A batch depends only on ``(seed, step)`` and the labels, never on who made it,
  so training is deterministic whatever the timing;
- live labels: :meth:`BatchWorkers.get` compares the training set's ``version`` before sending
  new requests and, when it changed, sends every worker the new snapshot first (only the planes
  whose image it does not have yet carry their image), so labels painted during training reach
  the workers within ``prefetch`` steps;
- ending: :meth:`close` (also on garbage collection and at interpreter exit, as daemon
  processes) asks the workers to stop, then kills stragglers. Workers ignore the signals a
  terminal or a cluster sends to the whole process group (Ctrl-C, SIGTERM, SIGHUP): the parent
  stops, saves, and closes them (a second signal during the close still kills them). A
  worker started while such a signal arrives ignores it too (it starts with them blocked). A
  worker also exits on its own within a second when its parent process is gone (SIGKILL, a
  crash), even in the middle of a batch, so no orphan outlives the training.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import time
import traceback
import weakref
from typing import Any

import numpy as np

from ..runtime.spawning import (
    PARENT_POLL_S,
    exit_with_parent,
    leave_group_signals_to_parent,
    main_script_left_out,
    spawn_context,
    started_with_group_signals_blocked,
)
from .sampling import BatchSpec, Snapshot, make_batch, restore_images, strip_images

#: Nice increment of the worker processes (background work, below the GUI and the training).
WORKER_NICE = 10


def auto_workers() -> int:
    """Worker processes for ``workers="auto"``: one per spare core, at most 2, leaving the
    training (torch) and the GUI their cores; at least 1."""
    cores = os.cpu_count() or 1
    return int(min(2, max(1, cores - 2)))


class BatchWorkers:
    """Prepare the batches of steps ``start, start + 1, ...`` in ``n_workers`` processes.

    Parameters
    ----------
    samples : TrainingSet-like
        Has ``snapshot()`` and ``version`` (see :class:`napari_unet.core.training.trainingset.
        TrainingSet`).
    spec : BatchSpec
    start : int
        First step to prepare.
    n_workers : int >= 1
    prefetch : int >= 1
        Steps requested ahead of the one being consumed (per pool, not per worker).
    start_method : {"spawn", "forkserver"}
    """

    def __init__(self, samples: Any, spec: BatchSpec, start: int, n_workers: int,
                 prefetch: int = 2, start_method: str = "spawn") -> None:
        if int(n_workers) != n_workers or n_workers < 1:
            raise ValueError(f"n_workers must be an integer >= 1, got {n_workers!r}")
        self._samples = samples
        self._n = int(n_workers)
        self._depth = max(1, int(prefetch)) + self._n - 1
        self._next_request = int(start)
        self._spec = spec
        self._done: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._requested: set[int] = set()
        self._up: list[int] = []  # workers that reported ready
        self._turn = 0
        self._known: list[set] = [set() for _ in range(self._n)]
        ctx = spawn_context(start_method)
        self._results = ctx.Queue()
        self._tasks = [ctx.Queue() for _ in range(self._n)]
        snapshot = samples.snapshot()
        self._version = snapshot.version
        self._procs: list[Any] = []
        # registered first: a signal that interrupts the start-up still ends what started
        self._finalizer = weakref.finalize(self, _shutdown, self._procs, self._tasks,
                                           self._results)
        try:
            for k in range(self._n):
                shipped = strip_images(snapshot, self._known[k])
                proc = ctx.Process(target=_worker_main, name=f"napari-unet-batch-{k}",
                                   args=(k, spec, shipped, self._tasks[k], self._results),
                                   daemon=True)
                self._procs.append(proc)
                # a user's unguarded napari script is not re-run; a group signal sent while
                # the worker starts reaches this process only (it stops and closes the worker)
                with main_script_left_out(), started_with_group_signals_blocked():
                    proc.start()
        except BaseException:
            self.close()
            raise

    @property
    def pids(self) -> list[int]:
        """Process ids of the workers (for tests and diagnostics)."""
        return [p.pid for p in self._procs if p.pid is not None]

    def get(self, step: int, timeout: float | None = None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The batch of ``step`` (requesting further steps ahead); raises the worker's error
        as ``RuntimeError`` and ``RuntimeError`` when a worker died."""
        if not self._finalizer.alive:
            raise RuntimeError("the batch workers are closed")
        self._sync_labels()
        self._drain(block=False)
        self._next_request = max(self._next_request, step)
        if not self._up and step not in self._done:
            # No worker has started yet: make this batch here rather than wait.
            self._requested.discard(step)
            return make_batch(self._samples.snapshot(), self._spec, step)
        while self._up and self._next_request < step + self._depth:
            s = self._next_request
            worker = self._up[self._turn % len(self._up)]
            self._turn += 1
            self._tasks[worker].put(("batch", s, None))
            self._requested.add(s)
            self._next_request += 1
        deadline = None if timeout is None else time.monotonic() + timeout
        while step not in self._done:
            if not self._drain(block=True):
                dead = [p for p in self._procs if not p.is_alive()]
                if dead:
                    raise RuntimeError(f"batch worker {dead[0].name} ended unexpectedly "
                                       f"(exit code {dead[0].exitcode})")
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"no batch for step {step} within {timeout} s")
        self._requested.discard(step)
        # results of steps made here during start-up are dropped when they arrive
        return self._done.pop(step)

    def wait_ready(self, timeout: float = 60.0) -> bool:
        """Block until every worker has started (tests, diagnostics); False on timeout."""
        deadline = time.monotonic() + timeout
        while len(self._up) < self._n and time.monotonic() < deadline:
            self._drain(block=True)
        return len(self._up) == self._n

    @property
    def n_ready(self) -> int:
        """Workers that have started and take requests."""
        self._drain(block=False)
        return len(self._up)

    def _drain(self, block: bool) -> bool:
        """Read what the workers sent; False when nothing came within the poll interval."""
        got = False
        while True:
            try:
                kind, s, value = self._results.get(timeout=PARENT_POLL_S) if block and not got \
                    else self._results.get_nowait()
            except queue.Empty:
                return got
            got = True
            if kind == "ready":
                self._up.append(s)
            elif kind == "error":
                raise RuntimeError(f"preparing the batch of step {s} failed:\n{value}")
            elif s in self._requested:
                self._done[s] = value

    def close(self, timeout: float = 2.0) -> None:
        """Stop the workers (idempotent): a polite request, then kill after ``timeout``."""
        if self._finalizer.alive:
            self._finalizer.detach()
            _shutdown(self._procs, self._tasks, self._results, timeout)

    def _sync_labels(self) -> None:
        version = self._samples.version
        if version == self._version:
            return
        snapshot = self._samples.snapshot()
        self._version = snapshot.version
        for k in range(self._n):
            self._tasks[k].put(("snapshot", -1, strip_images(snapshot, self._known[k])))

    def __enter__(self) -> BatchWorkers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _shutdown(procs: list, tasks: list, results: Any, timeout: float = 2.0) -> None:
    """Ask the workers to stop, wait ``timeout``, then kill those left; the kill also runs
    when a second Ctrl-C or SIGTERM interrupts the polite part."""
    procs = [p for p in procs if p.pid is not None]  # started (start-up may have been cut)
    try:
        for q in tasks:
            try:
                q.put(("stop", -1, None))
            except (ValueError, OSError):  # queue already closed
                pass
        deadline = time.monotonic() + timeout
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
    finally:
        for p in procs:
            if p.is_alive():  # a worker ignores group signals and holds nothing to save
                p.kill()
        for p in procs:
            p.join(5.0)  # reaped: nothing of the run outlives close()
        for q in (*tasks, results):
            q.cancel_join_thread()  # never block on data a dead worker will not read
            q.close()


def _lower_priority() -> None:
    """Background work: let a viewer's GUI thread (and the training) win the CPU."""
    if hasattr(os, "nice"):
        try:
            os.nice(WORKER_NICE)
        except OSError:
            pass  # not allowed here: run at normal priority


def _worker_main(index: int, spec: BatchSpec, snapshot: Snapshot, tasks: Any,
                 results: Any) -> None:
    """Worker loop: answer ("batch", step) requests until told to stop or orphaned."""
    # Ctrl-C, a closed terminal or a cluster's limit reaches the whole process group: the
    # parent handles it (stopping between steps and saving) and closes us. Dying here first
    # would make the parent's next get() fail before it saw its own signal.
    leave_group_signals_to_parent()
    parent = mp.parent_process()
    if parent is not None:
        exit_with_parent(parent.pid)  # even in the middle of a long batch
    _lower_priority()
    cache: dict[tuple[int, int], np.ndarray] = {}
    snapshot = restore_images(snapshot, cache)
    results.put(("ready", index, None))
    while True:
        try:
            kind, step, value = tasks.get(timeout=PARENT_POLL_S)
        except queue.Empty:
            if parent is not None and not parent.is_alive():
                return
            continue
        except (EOFError, OSError, KeyboardInterrupt):
            return
        if kind == "stop":
            return
        if kind == "snapshot":
            snapshot = restore_images(value, cache)
            continue
        try:
            out = ("batch", step, make_batch(snapshot, spec, step))
        except Exception:  # noqa: BLE001 - any failure is reported to the trainer, which raises
            out = ("error", step, traceback.format_exc())
        try:
            results.put(out)
        except (EOFError, OSError, ValueError):
            return


__all__ = ["BatchWorkers", "auto_workers"]
