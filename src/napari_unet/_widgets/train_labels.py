"""Follow the edits of the Train dock's labels layer, so that painting reaches the training.

napari tells of brush strokes (the layer's ``paint`` event) and of whole-data changes (fill,
undo, a new array: ``data``). :class:`LabelsFollower` waits until the painting pauses
(:data:`DEBOUNCE_MS`), then hands one snapshot of the layer's data to ``on_edited(layer,
snapshot)``. The snapshot is copied in the GUI thread, so no stroke lands half-way through it;
what is done with it (the running training takes it, the session autosaves it) is the dock's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from qtpy.QtCore import QObject, QTimer

from .train_inputs import same_layer

#: One snapshot after the painting pauses this long (milliseconds).
DEBOUNCE_MS = 500


class LabelsFollower(QObject):
    """Calls ``on_edited(layer, snapshot)`` once the edits of the followed layer pause."""

    def __init__(self, on_edited: Callable[[Any, np.ndarray], None],
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.on_edited = on_edited
        self.layer: Any = None
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(DEBOUNCE_MS)
        self.timer.timeout.connect(self.push)

    def follow(self, layer: Any) -> None:
        """Follow ``layer`` (None: no layer) instead of the one followed so far."""
        old = self.layer
        if same_layer(old, layer):
            return
        if old is not None:
            old.events.paint.disconnect(self._on_edit)
            old.events.data.disconnect(self._on_edit)
        self.layer = layer
        if layer is not None:
            layer.events.paint.connect(self._on_edit)
            layer.events.data.connect(self._on_edit)

    def _on_edit(self, *_: Any) -> None:
        self.timer.start()  # restart: one push after the painting pauses

    def push(self) -> None:
        """Hand a snapshot of the followed layer on now."""
        layer = self.layer
        if layer is not None:
            self.on_edited(layer, np.array(layer.data, copy=True))


__all__ = ["DEBOUNCE_MS", "LabelsFollower"]
