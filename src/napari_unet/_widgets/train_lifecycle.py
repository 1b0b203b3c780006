"""Notice when a dock goes away: removed from the viewer, or the viewer's window closed.

napari removes a dock by un-parenting its widget (no close event reaches it), and closing the
viewer does not close its docks; a dock that runs a job must still stop it and clean up. A
:class:`CloseWatcher` calls ``on_close()`` once, at the first of: the dock's own Close, the dock
leaving its parent after having been docked, the main window's Close.
"""

from __future__ import annotations

from collections.abc import Callable

from qtpy.QtCore import QEvent, QObject
from qtpy.QtWidgets import QMainWindow, QWidget


class CloseWatcher(QObject):
    """Calls ``on_close()`` once when ``dock`` goes away (see the module docstring)."""

    def __init__(self, dock: QWidget, on_close: Callable[[], None]) -> None:
        super().__init__(dock)
        self.dock = dock
        self.on_close = on_close
        self.fired = False
        self._docked = False
        self._window: QMainWindow | None = None
        dock.installEventFilter(self)

    def watch_window(self) -> None:
        """Start watching the dock's main window (called on Show and re-parenting; call it
        when the dock may have been docked without being shown)."""
        if self._window is not None or self.fired:
            return
        window = self.dock.parentWidget()
        while window is not None and not isinstance(window, QMainWindow):
            window = window.parentWidget()
        if window is not None:
            window.installEventFilter(self)
            self._window = window

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt API)
        if self.fired:
            return False
        kind = event.type()
        if obj is self.dock:
            if kind == QEvent.Type.ParentChange:
                if self.dock.parent() is None:
                    if self._docked:
                        self.fire()
                else:
                    self._docked = True
                    self.watch_window()
            elif kind == QEvent.Type.Show:
                self.watch_window()
            elif kind == QEvent.Type.Close:
                self.fire()
        elif obj is self._window and kind == QEvent.Type.Close:
            self.fire()
        return False

    def fire(self) -> None:
        """Call ``on_close`` (once) and stop watching."""
        if self.fired:
            return
        self.fired = True
        for obj in (self.dock, self._window):
            if obj is not None:
                try:
                    obj.removeEventFilter(self)
                except RuntimeError:
                    pass  # already deleted
        self._window = None
        self.on_close()


__all__ = ["CloseWatcher"]
