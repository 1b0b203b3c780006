"""The Train dock's background thread: one callback per submission, in the GUI thread."""

from __future__ import annotations

import threading

import pytest
from napari.utils.notifications import NotificationSeverity, notification_manager

from napari_unet._widgets.train_io import BackgroundIO


def test_results_come_back_in_order_in_the_gui_thread(qtbot):
    io = BackgroundIO()
    gui = threading.get_ident()
    seen: list[tuple[str, object, bool]] = []
    workers: list[int] = []

    def work(value: int) -> int:
        workers.append(threading.get_ident())
        return value * 10

    for value in range(5):
        io.submit(work, value, on_done=lambda r: seen.append(
            ("done", r, threading.get_ident() == gui)))
    io.submit(lambda: 1 / 0, on_error=lambda e: seen.append(
        ("error", type(e).__name__, threading.get_ident() == gui)))
    qtbot.waitUntil(lambda: len(seen) == 6, timeout=10_000)
    assert seen == [("done", v * 10, True) for v in range(5)] + [
        ("error", "ZeroDivisionError", True)]
    assert len(set(workers)) == 1 and workers[0] != gui  # one background thread
    assert io.pending == 0
    io.shutdown()
    with pytest.raises(RuntimeError, match="shut down"):
        io.submit(work, 1)


def test_an_unhandled_failure_is_shown_once_and_logged(qtbot, caplog):
    io = BackgroundIO()
    start = len(notification_manager.records)

    def broken() -> None:
        raise OSError("disk full")

    io.submit(broken, what="saving the model")
    qtbot.waitUntil(lambda: io.pending == 0, timeout=10_000)
    errors = [n.message for n in notification_manager.records[start:]
              if n.severity == NotificationSeverity.ERROR]
    assert errors == ["saving the model failed: disk full"]
    assert any(r.exc_info and "disk full" in str(r.exc_info[1]) for r in caplog.records)
    io.shutdown()


def test_shutdown_waits_for_queued_work_and_drops_late_callbacks(qtbot):
    io = BackgroundIO()
    gate = threading.Event()
    done: list[int] = []
    calls: list[int] = []
    io.submit(lambda: (gate.wait(5), done.append(1)), on_done=lambda _: calls.append(1))
    gate.set()
    io.shutdown(wait=True)
    assert done == [1]  # the work ran to its end
    qtbot.wait(50)
    assert calls == []  # the dock is gone: no callback into it
