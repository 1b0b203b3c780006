"""Running a core job (a generator of events) from a dock without freezing napari.

Public API (used by the Predict, Batch and Train docks):

``JobRunner(on_event, on_finished=None, controls=(), stop_button=None, *, label="napari-unet",
progress_bar=None, activity=True, deferred_bar=False)``
    ``start(factory, on_stop=None)`` calls ``factory()`` *in a worker thread* (so building/loading
    a model there is fine) and iterates the generator it returns in a worker; every yielded
    event is handed to ``on_event(event)`` in the GUI thread. ``on_stop`` is called (GUI
    thread) when the job is asked to stop, for jobs that run elsewhere
    (:meth:`DockProcess.background`). While the job runs the ``controls`` are
    disabled and ``stop_button`` is enabled. ``stop()`` asks the worker to quit at its next
    yield (the generator is not closed, so a job must be consistent at every yield). When the
    job ends, ``on_finished(status)`` runs in the GUI thread with ``status`` one of ``"done"``,
    ``"stopped"`` or ``"failed"``: put clean-up (auto-save, freeing memory) there.
    Each job shows an entry called ``label`` in napari's activity panel (``napari.utils.progress``)
    for as long as it runs, unless ``activity`` is False; ``core.events.Progress`` events move
    that entry and ``progress_bar`` (a dock's QProgressBar, optional) before reaching
    ``on_event``. Nothing animates while a job runs: the bar stays at 0 until the first
    ``Progress`` (no "busy" bar), and long jobs with a bar of their own (training) leave the
    activity panel out, whose spinner plays while any entry is open. Each animation frame
    repaints the window around napari's OpenGL canvas: under software OpenGL (remote desktops,
    virtual machines, Xvfb) that is ~15-20 ms of the GUI thread, 50 times a second
    (benchmarks/bench_gui_latency.py; docs/performance.md). Any other repaint of a dock costs
    the same window composition (30-50 ms there), so a dock that repaints several things
    per event passes ``deferred_bar=True`` and calls ``flush_progress()`` when it repaints
    the rest (the Train dock: every 2 s and with each preview); the bar still shows the
    end state when the job finishes.
    A failing job is reported ONCE, by :func:`notify_error` (one clear line; the traceback goes
    to the log): the worker is built without napari's own error relay and re-raise.
    ``running`` tells whether a job is in flight; ``worker`` is the worker (tests wait on it).
    ``stop_on_destroy(widget)`` stops the job when ``widget`` is destroyed (dock closed).

``DockProcess`` / ``dock_process()``
    The docks' job process (``core.runtime.processes.JobProcess``, one for all docks, started when a
    dock that uses it opens): prediction runs in its main thread, where glibc keeps freed
    memory for the net's passes (``core.runtime.heap``; a thread of the napari process pays for
    fresh
    pages on every pass) and the labelling does not hold the viewer's GIL.
    ``background(fn, *args)`` returns ``(factory, on_stop)`` for :meth:`JobRunner.start`: the
    process when it is ready and idle, else ``fn`` in the worker thread as before (the process
    is starting: a dock never waits for it), and inputs too big to copy stay in the thread.

``notify_error(err_or_text)``, ``notify_warning(text)``, ``notify_info(text)``
    napari notifications; ``user_message(err)`` turns an exception into that one line.
``set_enabled(widgets, enabled)``
    Enable/disable Qt and magicgui widgets alike.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from napari.qt.threading import create_worker
from napari.utils import notifications, progress
from superqt.utils import GeneratorWorker

from ..core.events import Progress

log = logging.getLogger(__name__)

STATUSES = ("done", "stopped", "failed")


def user_message(err: BaseException | str) -> str:
    """The text to show a user for ``err``: our ValueErrors are written for users; anything
    else gets its type name in front so a bug is still recognisable (never a traceback)."""
    if isinstance(err, str):
        return err
    text = str(err).strip() or type(err).__name__
    if isinstance(err, (ValueError, MemoryError, FileNotFoundError, PermissionError)):
        return text
    return f"{type(err).__name__}: {text}"


#: What a person's input can cause (the command line's exit status 2): said in one line, with
#: no traceback anywhere. Anything else is a bug, whose traceback goes to the log file.
USER_MISTAKES = (ValueError, TypeError, OSError, MemoryError)
#: The log file of bugs' tracebacks (its folder is created when the first bug is logged).
LOG_FILE_ENV = "NAPARI_UNET_LOG"


def log_file() -> Path:
    """Where napari-unet writes the tracebacks of bugs (``$NAPARI_UNET_LOG``, else
    ``napari-unet/napari-unet.log`` in the user's cache folder)."""
    if os.environ.get(LOG_FILE_ENV):
        return Path(os.environ[LOG_FILE_ENV])
    from qtpy.QtCore import QStandardPaths

    base = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.GenericCacheLocation)
    return Path(base or Path.home() / ".cache") / "napari-unet" / "napari-unet.log"


def _log_to_file() -> Path:
    """Attach the log file to this package's logger (once): with a handler of its own, Python
    prints nothing of it on the terminal."""
    path = log_file()
    root = logging.getLogger("napari_unet")
    for handler in root.handlers:
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename) == path:
            return path
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    return path


def notify_error(err: BaseException | str) -> None:
    """Show ``err`` as one napari error notification. A mistake in the input is said in one
    line (and one log line, no traceback); a bug's traceback goes to the log file, which the
    notification names."""
    if isinstance(err, BaseException) and not isinstance(err, USER_MISTAKES):
        try:
            where = f" (a bug; the details are in {_log_to_file()})"
        except OSError:  # no log folder: the notification still says what went wrong
            where = " (a bug)"
        log.error("napari-unet job failed: %s", user_message(err), exc_info=err)
        notifications.show_error(user_message(err) + where)
        return
    if isinstance(err, BaseException):
        log.info("napari-unet: %s", user_message(err))
    notifications.show_error(user_message(err))


def notify_warning(text: str) -> None:
    notifications.show_warning(text)


def notify_info(text: str) -> None:
    notifications.show_info(text)


def set_enabled(widgets: Iterable[Any], enabled: bool) -> None:
    """Enable/disable Qt or magicgui widgets alike."""
    for widget in widgets:
        if hasattr(widget, "setEnabled"):
            widget.setEnabled(enabled)
        else:
            widget.enabled = enabled


def _iterate(factory: Callable[[], Iterator[Any]]) -> Iterator[Any]:
    yield from factory()


class JobRunner:
    """One job at a time for one dock; see the module docstring."""

    def __init__(
        self,
        on_event: Callable[[Any], None],
        on_finished: Callable[[str], None] | None = None,
        controls: Iterable[Any] = (),
        stop_button: Any = None,
        *,
        label: str = "napari-unet",
        progress_bar: Any = None,
        activity: bool = True,
        deferred_bar: bool = False,
    ) -> None:
        self.on_event = on_event
        self.on_finished = on_finished
        self.controls = list(controls)
        self.stop_button = stop_button
        self.label = label
        self.progress_bar = progress_bar
        self.show_activity = activity
        self.deferred_bar = deferred_bar
        self._pending: Progress | None = None
        self._pace = Pace(time.monotonic())
        self.worker: Any = None
        self.activity: progress | None = None
        self._status = "done"
        self._on_stop: Callable[[], None] | None = None
        if stop_button is not None:
            set_enabled([stop_button], False)

    @property
    def running(self) -> bool:
        return self.worker is not None

    def start(self, factory: Callable[[], Iterator[Any]],
              on_stop: Callable[[], None] | None = None) -> Any:
        """Run ``factory()``'s generator in a worker; returns the (started) worker.
        ``on_stop`` is called when the job is asked to stop (a job running elsewhere)."""
        if self.running:
            raise ValueError("a job is already running; stop it first")
        self._status = "done"
        self._on_stop = on_stop
        # superqt's plain GeneratorWorker: napari's subclass would also relay every error to a
        # notification of its own, and create_worker re-raises unless "errored" is connected,
        # so one failure would toast two or three times.
        worker = create_worker(_iterate, factory, _worker_class=GeneratorWorker,
                               _connect={"errored": self._on_errored}, _start_thread=False)
        worker.yielded.connect(self._on_yielded)
        worker.aborted.connect(self._on_aborted)
        worker.warned.connect(self._on_warned)
        worker.finished.connect(self._on_worker_finished)
        self.worker = worker
        if self.show_activity:
            self.activity = progress(total=0, desc=self.label)
        if self.progress_bar is not None:  # empty until the first Progress; never "busy"
            set_bar(self.progress_bar, 0, 1)
            self.progress_bar.setFormat("%p%")
        self._pace = Pace(time.monotonic())
        set_enabled(self.controls, False)
        if self.stop_button is not None:
            set_enabled([self.stop_button], True)
        worker.start()
        return worker

    def stop(self) -> None:
        """Ask the running job to stop at its next yield (no-op when idle)."""
        if self.worker is not None:
            self._status = "stopped"
            self.worker.quit()
            if self._on_stop is not None:
                self._on_stop()

    def stop_on_destroy(self, widget: Any) -> None:
        """Stop the job when ``widget`` (a QWidget, e.g. the dock) is destroyed."""
        qwidget = getattr(widget, "native", widget)
        qwidget.destroyed.connect(lambda *_: self.stop())

    def _dock_gone(self) -> bool:
        """Whether the dock's widgets are deleted (the dock was closed while its job ran)."""
        return self.progress_bar is not None and is_deleted(self.progress_bar)

    # -- worker signals (GUI thread) --------------------------------------------------------
    def _show_progress(self, event: Progress) -> None:
        total = max(1, int(event.total))
        if self.activity is not None:
            if self.activity.total != total:
                self.activity.total = total
            self.activity.n = min(int(event.step), total)
            self.activity.update(0)  # emits the value event the activity panel listens to
        self._pending = event
        if not self.deferred_bar:
            self.flush_progress()

    def flush_progress(self) -> None:
        """Show the latest ``Progress`` on the bar (each event does this itself unless the bar
        is deferred), with the time left (the job's estimate, or the pace so far)."""
        event, self._pending = self._pending, None
        if event is not None and self.progress_bar is not None:
            total = max(1, int(event.total))
            step = min(int(event.step), total)
            set_bar(self.progress_bar, step, total)
            if not is_deleted(self.progress_bar):
                left = self._pace.time_left(event, time.monotonic())
                self.progress_bar.setFormat("%p%" if left is None else f"%p%, {left}")

    def _on_yielded(self, event: Any) -> None:
        if self._status == "stopped":
            return  # events already in the queue when Stop was pressed
        if self._dock_gone():  # closed while the job ran: stop it, quietly
            self.stop()
            return
        try:
            if isinstance(event, Progress):
                self._show_progress(event)
            self.on_event(event)
        except Exception as err:  # a rendering bug must not leave the dock disabled
            self.stop()
            if self._dock_gone():  # deleted during the handler (napari processes events)
                return
            notify_error(err)
            self._status = "failed"

    def _on_errored(self, err: BaseException) -> None:
        self._status = "failed"
        notify_error(err)

    def _on_warned(self, args: tuple) -> None:
        # Python warnings raised inside the job (library deprecations...): log, do not toast.
        log.warning("warning in a napari-unet job: %s", args[0] if args else args)

    def _on_aborted(self) -> None:
        if self._status != "failed":
            self._status = "stopped"

    def _on_worker_finished(self) -> None:
        self.worker = None
        self._on_stop = None
        self._pending = None
        if self.activity is not None:
            self.activity.close()
            self.activity = None
        if self._dock_gone():  # nothing left to show the end on
            return
        if self.progress_bar is not None:
            # a finished job fills the bar; a stopped or failed one stays where it got to (a
            # stopped training keeps its steps: 0 % read as "nothing kept")
            if self._status == "done":
                set_bar(self.progress_bar, 1, 1)
            self.progress_bar.setFormat("stopped at %p%" if self._status == "stopped"
                                        else "%p%")
        set_enabled(self.controls, True)
        if self.stop_button is not None:
            set_enabled([self.stop_button], False)
        if self.on_finished is not None:
            try:
                self.on_finished(self._status)
            except Exception as err:
                notify_error(err)


#: Inputs (numpy arrays) above this many bytes are predicted in the worker thread: the job
#: process would get a copy (dask arrays travel as their recipe and are read there).
PROCESS_COPY_LIMIT = 512 * 2**20
#: What the job process imports before it takes jobs (torch, the prediction code).
PROCESS_PRELOAD = ("napari_unet._widgets.dock_jobs", "napari_unet.core.inference.prediction",
                   "napari_unet.core.inference.diameter")


class DockProcess:
    """The docks' job process and the choice between it and the worker thread."""

    def __init__(self, preload: Iterable[str] = PROCESS_PRELOAD) -> None:
        from ..core.runtime.processes import JobProcess

        self.process = JobProcess(preload)
        self._users = 0

    def attach(self, widget: Any) -> None:
        """Start the process (in the background) for a dock; it ends when the last dock that
        attached is destroyed (and with napari)."""
        self._users += 1
        qwidget = getattr(widget, "native", widget)
        qwidget.destroyed.connect(self._detach)
        self.process.start()

    def _detach(self, *_: Any) -> None:
        self._users -= 1
        if self._users <= 0:
            self.process.close()

    def background(self, fn: Callable[..., Iterator[Any]], *args: Any
                   ) -> tuple[Callable[[], Iterator[Any]], Callable[[], None] | None]:
        """``(factory, on_stop)`` running ``fn(*args)`` in the process when it is ready and
        idle, else in the worker thread (and the process is started for the next job)."""
        if any(isinstance(a, np.ndarray) and a.nbytes > PROCESS_COPY_LIMIT
               for a in _arrays(args)):
            return (lambda: fn(*args)), None
        process = self.process
        if process.ready and not process.busy:
            events = process.run(fn, *args)  # takes the process now; sent from the worker
            return (lambda: events), process.stop
        process.start()
        return (lambda: fn(*args)), None


def _arrays(args: Iterable[Any]) -> Iterator[Any]:
    """The arrays among ``args`` and in the fields of dataclass arguments."""
    for arg in args:
        if dataclasses.is_dataclass(arg) and not isinstance(arg, type):
            yield from (getattr(arg, f.name) for f in dataclasses.fields(arg))
        else:
            yield arg


_DOCK_PROCESS: DockProcess | None = None


def dock_process() -> DockProcess:
    """The one job process of all docks (made on first use; it ends with napari)."""
    global _DOCK_PROCESS
    if _DOCK_PROCESS is None:
        _DOCK_PROCESS = DockProcess()
    return _DOCK_PROCESS


def is_deleted(widget: Any) -> bool:
    """Whether Qt has deleted ``widget`` (its Python wrapper outlives it)."""
    try:
        widget.objectName()
    except RuntimeError:
        return True
    return False


class Pace:
    """The time left of a job from its pace since its current phase began: a job whose bar
    starts again (a stack's side views after its slices, with their own total) is timed
    afresh, not by the pace of the phase before."""

    def __init__(self, started: float):
        self.started, self.first_step, self.last = started, 0, None

    def time_left(self, event: Progress, now: float) -> str | None:
        last = self.last
        if last is not None and (event.total != last.total or event.step < last.step):
            self.started, self.first_step = now, event.step
        self.last = event
        return time_left(event, now - self.started, self.first_step)


def time_left(event: Progress, elapsed: float, first_step: int = 0) -> str | None:
    """"about 3 min left" from the job's own estimate, or from the pace since ``elapsed``
    seconds ago, when the job was at ``first_step`` (a few percent done and a few seconds gone
    first, so that the first tile's start-up cost does not count as the pace); None until
    then."""
    seconds = event.eta_s
    done, left = event.step - first_step, event.total - event.step
    if seconds is None and event.total > 0 and done > 0 and elapsed >= 2.0 \
            and done / max(event.total - first_step, 1) >= 0.02:
        seconds = elapsed * left / done
    if seconds is None or event.step >= event.total:
        return None
    if seconds < 60:
        return f"about {max(5, 5 * round(seconds / 5)):.0f} s left"
    if seconds < 3600:
        return f"about {round(seconds / 60):.0f} min left"
    return f"about {seconds // 3600:.0f} h {round(seconds % 3600 / 60):.0f} min left"


def set_bar(bar: Any, value: int, total: int) -> None:
    """Move a QProgressBar without painting it now: ``setValue`` repaints synchronously when the
    shown percentage changes, one window composition of its own (see :class:`JobRunner`);
    re-enabling updates schedules the paint, which Qt merges with the dock's other repaints."""
    if is_deleted(bar):  # the dock closed while its job ran (napari may process the
        return  # deletion inside an activity-panel update, between two calls here)
    bar.setUpdatesEnabled(False)
    try:
        bar.setRange(0, total)
        bar.setValue(value)
    finally:
        bar.setUpdatesEnabled(True)


__all__ = ["DockProcess", "JobRunner", "PROCESS_COPY_LIMIT", "Pace", "dock_process",
           "is_deleted", "notify_error", "notify_info", "notify_warning", "set_bar", "set_enabled",
           "time_left", "user_message"]
