"""One background thread for the Train dock's file and data work, results back in the GUI thread.

Saving a model, autosaving labels and handing new labels to the running training must not run
in the GUI thread (a save of the shipped model takes ~100 ms, a labels TIFF more), and must
stay in order (an older labels snapshot must never overwrite a newer one), so they share one
worker thread. Each submission carries its own callbacks::

    io.submit(trainer.save, path, on_done=lambda p: ..., on_error=lambda err: ...)

``on_done(result)`` / ``on_error(exception)`` run in the GUI thread. Without ``on_error`` a
failure is shown once as a napari notification and its traceback goes to the log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from qtpy.QtCore import QObject, Signal

from ._jobs import notify_error

log = logging.getLogger(__name__)


class BackgroundIO(QObject):
    """A single worker thread whose results come back to the GUI thread (see module doc)."""

    # (callback, value): queued across threads by Qt, so the callback runs in the GUI thread.
    _deliver = Signal(object)

    def __init__(self, name: str = "napari-unet-io", parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._closed = False
        self.pending = 0
        self._deliver.connect(self._on_deliver)

    def submit(self, fn: Callable[..., Any], *args: Any,
               on_done: Callable[[Any], None] | None = None,
               on_error: Callable[[BaseException], None] | None = None,
               what: str = "background task") -> Future:
        """Run ``fn(*args)`` after everything submitted before; report in the GUI thread.

        Parameters
        ----------
        fn, args
            The work (runs in the background thread).
        on_done : callable, optional
            ``on_done(result)``, in the GUI thread.
        on_error : callable, optional
            ``on_error(exception)``, in the GUI thread; default: one error notification
            ``"<what> failed: ..."`` and the traceback in the log.
        what : str
            Name of the work in the default error message.
        """
        if self._closed:
            raise RuntimeError("BackgroundIO is shut down")
        self.pending += 1
        future = self._executor.submit(fn, *args)

        def finished(f: Future) -> None:
            err = f.exception()
            if err is not None:
                log.error("napari-unet: %s failed", what, exc_info=err)
                callback = on_error or (lambda e: notify_error(f"{what} failed: {e}"))
                value: Any = err
            else:
                callback, value = on_done, f.result()
            if not self._closed:
                self._deliver.emit((callback, value))

        future.add_done_callback(finished)
        return future

    def _on_deliver(self, item: tuple[Callable[[Any], None] | None, Any]) -> None:
        callback, value = item
        self.pending -= 1
        if callback is not None and not self._closed:
            callback(value)

    def shutdown(self, wait: bool = True) -> None:
        """Finish the queued work (when ``wait``), then drop callbacks that are still due."""
        self._executor.shutdown(wait=wait)
        self._closed = True


__all__ = ["BackgroundIO"]
