"""Jobs (generators of events) run in the main thread of one spawned process, kept for reuse.

The docks run their jobs in a worker thread of the napari process. For prediction that costs
time: glibc serves other threads from arenas that map and page-fault every big block again
(:mod:`.heap` keeps freed memory for the main thread only), 1.2-1.5x the main thread's time on
the same plane, and the labelling after the net (numpy, scipy) holds the GIL the viewer needs.
:class:`JobProcess` runs a job's generator in the main thread of a separate process instead and
hands its events back one at a time, as if the generator ran here:

- started with ``spawn`` (default) or ``forkserver``, never ``fork`` (the napari process runs
  Qt); ``preload`` names modules the process imports before it reports ready, so the first job
  does not pay for them;
- one job at a time, the process kept for the next one (torch and the model code imported
  once);
- :meth:`stop` makes the running job stop at its next event: the process closes the job's
  generator (its ``finally`` blocks run there) and goes on to the next job, which may be
  submitted at once;
- a job's exception is raised here again: the same exception when it can be pickled (with the
  process's traceback as a note), else a ``RuntimeError`` with its type and text; a process
  that dies (killed, out of memory) raises ``RuntimeError`` and the next job starts a new one;
- the process ignores the signals a terminal sends to the whole process group (Ctrl-C); when
  its parent is gone it stops its job at the next event, or exits within
  :data:`.spawning.PARENT_POLL_S` when idle; :meth:`close` (also on garbage collection and at
  interpreter exit: a daemon process) ends it.

Events and results travel pickled through a pipe: a job's arguments and results are copied
(an image, the labels), which costs far less than the prediction itself.
"""

from __future__ import annotations

import importlib
import itertools
import os
import pickle
import queue
import threading
import traceback
import weakref
from collections.abc import Callable, Generator, Iterable
from typing import Any

from .spawning import (
    PARENT_POLL_S,
    leave_group_signals_to_parent,
    main_script_left_out,
    spawn_context,
    started_with_group_signals_blocked,
)

_NO_JOB = -1


class JobProcess:
    """One spawned process that runs job generators for this process, one at a time.

    Parameters
    ----------
    preload : iterable of str
        Modules the process imports before it reports :attr:`ready`.
    start_method : {"spawn", "forkserver"}
    """

    def __init__(self, preload: Iterable[str] = (), start_method: str = "spawn") -> None:
        self._ctx = spawn_context(start_method)
        self._preload = tuple(preload)
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._proc: Any = None
        self._finalizer: Any = None
        self._running = _NO_JOB

    # -- the process -------------------------------------------------------------------------
    def start(self) -> None:
        """Start the process now (it imports ``preload`` in the background); no-op when it
        runs."""
        with self._lock:
            if self._proc is not None and self._proc.is_alive():
                return
            self._discard()
            self._tasks = self._ctx.Queue()
            self._tasks.cancel_join_thread()  # exiting never waits on a process that is gone
            self._results = self._ctx.Queue()
            self._ready = self._ctx.Event()
            self._stop_id = self._ctx.Value("q", _NO_JOB)
            self._running = _NO_JOB
            self._proc = self._ctx.Process(
                target=_child_main, name="napari-unet-jobs", daemon=True,
                args=(self._preload, self._tasks, self._results, self._ready, self._stop_id))
            with main_script_left_out(), started_with_group_signals_blocked():
                self._proc.start()
            self._finalizer = weakref.finalize(self, _shutdown, self._proc, self._tasks)

    @property
    def ready(self) -> bool:
        """Whether the process runs and has imported its ``preload`` modules."""
        return self._proc is not None and self._proc.is_alive() and self._ready.is_set()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def busy(self) -> bool:
        """Whether the process is taken by a job (from :meth:`run` until its last event or
        :meth:`stop`)."""
        return self._proc is not None and self._running != _NO_JOB

    def close(self) -> None:
        """End the process; a running job ends without an error (its generator here returns)
        and a later job starts a new process."""
        with self._lock:
            self._discard()

    def _discard(self) -> None:
        if self._finalizer is not None:
            self._finalizer()
        self._proc = self._finalizer = None

    # -- jobs --------------------------------------------------------------------------------
    def run(self, fn: Callable[..., Iterable[Any]], *args: Any, **kwargs: Any
            ) -> Generator[Any, None, None]:
        """Run ``fn(*args, **kwargs)``'s generator in the process; returns a generator of its
        events here.

        The process is taken for this job from this call on (:attr:`busy`); the job is sent
        when the returned generator is first iterated (so a worker thread, not the caller,
        pickles the arguments). ``fn`` must be importable by name (a module-level function)
        and its arguments and events picklable. Iterating raises ``ValueError`` when they are
        not (before anything runs), the job's own exception, or ``RuntimeError`` when the
        process died.
        """
        if self.busy:
            raise RuntimeError("the job process is running another job")
        self.start()
        job = next(self._ids)
        self._running = job
        return self._events(job, (self._proc, self._tasks, self._results), fn, args, kwargs)

    def _events(self, job: int, process: tuple, fn: Callable[..., Iterable[Any]],
                args: tuple, kwargs: dict) -> Generator[Any, None, None]:
        proc, tasks, results = process  # this job's, even if close() starts another later
        ended = False
        try:
            try:
                payload = pickle.dumps((fn, args, kwargs), protocol=pickle.HIGHEST_PROTOCOL)
            except (pickle.PicklingError, TypeError, AttributeError) as err:
                raise ValueError(f"this job cannot run in a separate process: {err}") from err
            tasks.put((job, payload))
            while True:
                kind, got, value = self._next_message(proc, results)
                if kind == "closed":  # close() ended the process: the job ends here too
                    ended = True
                    return
                if got != job:
                    continue  # what a stopped job sent after it was left
                if kind == "event":
                    yield pickle.loads(value)
                elif kind == "error":
                    ended = True
                    raise pickle.loads(value)
                else:  # "done" or "stopped"
                    ended = True
                    return
        finally:
            if self._running == job:
                self._running = _NO_JOB
            if not ended:  # left early (closed, or its consumer failed): stop it there
                self._stop_id.value = job

    def stop(self) -> None:
        """Make the running job stop at its next event there, and free the process for the
        next job at once (it starts when the stopped one has ended); no-op when idle."""
        job = self._running
        if self._proc is not None and job != _NO_JOB:
            self._stop_id.value = job
            self._running = _NO_JOB

    def _next_message(self, proc: Any, results: Any) -> tuple[str, int, Any]:
        while True:
            try:
                return results.get(timeout=PARENT_POLL_S)
            except queue.Empty:
                if proc.is_alive():
                    continue
                if self._proc is not proc:  # ended by close(), not by itself
                    return ("closed", _NO_JOB, None)
                code = proc.exitcode
                self.close()
                raise RuntimeError(
                    f"the job process ended unexpectedly (exit code {code}; out of memory?); "
                    "the next job starts a new one") from None


def _child_main(preload: tuple[str, ...], tasks: Any, results: Any, ready: Any,
                stop_id: Any) -> None:
    leave_group_signals_to_parent()  # the parent decides when we stop
    parent = os.getppid()
    results.cancel_join_thread()  # exiting never waits on a parent that stopped reading
    for name in preload:
        importlib.import_module(name)
    ready.set()
    while True:
        try:
            task = tasks.get(timeout=PARENT_POLL_S)
        except queue.Empty:
            if os.getppid() != parent:  # the parent is gone: nobody waits for results
                return
            continue
        if task is None:
            return
        job, payload = task
        try:
            fn, args, kwargs = pickle.loads(payload)
            events = fn(*args, **kwargs)
            kind = "done"
            for event in events:
                if stop_id.value == job or os.getppid() != parent:  # stopped, or orphaned
                    events.close()
                    kind = "stopped"
                    break
                # pickled here, not later by the queue's feeder thread: the event is sent as
                # it is now, and an event that cannot be pickled fails this job, not silently
                results.put(("event", job, pickle.dumps(event, pickle.HIGHEST_PROTOCOL)))
            results.put((kind, job, None))
        except BaseException as err:  # every failure goes back to the caller
            results.put(("error", job, pickle.dumps(_portable(err), pickle.HIGHEST_PROTOCOL)))


def _portable(err: BaseException) -> BaseException:
    """``err`` with this process's traceback as a note, or a RuntimeError saying what it was
    when it cannot be pickled."""
    trace = "".join(traceback.format_exception(err))
    try:
        err.add_note(f"in the job process:\n{trace}")
        pickle.loads(pickle.dumps(err))
        return err
    except Exception:  # whatever pickling or the exception's own __init__ raises: not portable
        portable = RuntimeError(f"{type(err).__name__}: {err}")
        portable.add_note(f"in the job process:\n{trace}")
        return portable


def _shutdown(proc: Any, tasks: Any) -> None:
    try:
        tasks.put(None)
    except (OSError, ValueError):
        pass
    proc.join(timeout=PARENT_POLL_S)
    if proc.is_alive():  # busy in a job, or stuck: nobody waits for it
        proc.kill()
        proc.join(timeout=5)


__all__ = ["JobProcess"]
