"""Docks that fit a laptop screen: a dock's settings scroll, its run block stays in view.

napari stacks plugin docks in one column, and a dock's minimum height becomes the window's:
four docks laid out in full made the window 2,800 px tall, with Start, Stop and Predict below
the screen's edge. :func:`scroll_all_but` moves everything a dock shows into a scroll area
(whose minimum height is small) and keeps the block with its primary buttons, progress bar
and status line below it, always visible.
"""

from __future__ import annotations

from qtpy.QtCore import QEvent, QObject, QPoint, Qt, QTimer
from qtpy.QtGui import QShowEvent
from qtpy.QtWidgets import QFormLayout, QFrame, QScrollArea, QVBoxLayout, QWidget


class VerticalScroll(QScrollArea):
    """A scroll area that scrolls up and down only: as wide as its rows need, measured when it
    is shown and whenever the rows' layout changes (napari's style and fonts count, and a
    longer layer name widens a row), with room for the scroll bar."""

    def fit_width(self) -> None:
        inner = self.widget()
        if inner is not None:
            bar = self.verticalScrollBar().sizeHint().width()
            self.setMinimumWidth(inner.minimumSizeHint().width() + bar + 2 * self.frameWidth())

    def showEvent(self, event: QShowEvent) -> None:  # noqa: N802 (Qt's name)
        self.fit_width()
        super().showEvent(event)
        # once laid out with napari's style and fonts (a label's width depends on them)
        QTimer.singleShot(0, self._align)

    def _align(self) -> None:
        if self.widget() is not None:
            align_labels(self.widget())

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802
        if watched is self.widget() and event.type() == QEvent.Type.LayoutRequest:
            # (laid out: the frames' places are known; aligned labels ask for no new layout)
            align_labels(watched)
            self.fit_width()
        return super().eventFilter(watched, event)


def align_labels(root: QWidget) -> None:
    """One label column for every form inside ``root``: a dock built of several forms one under
    the other (image, model, settings, output), some inside frames, sized and placed each
    column on its own, so its fields started at three different places. Each label is made as
    wide as it takes for its field to start where the farthest one does."""
    labels = []
    for form in root.findChildren(QFormLayout):
        holder = form.parentWidget()
        if holder is None:
            continue
        # (a form nested in another layout starts inside that layout's margins)
        left = (holder.mapTo(root, QPoint(form.geometry().x(), 0)).x()
                + form.contentsMargins().left())
        for row in range(form.rowCount()):
            item = form.itemAt(row, QFormLayout.ItemRole.LabelRole)
            if item is not None and item.widget() is not None:
                labels.append((item.widget(), left))
    end = max((left + label.sizeHint().width() for label, left in labels), default=0)
    for label, left in labels:
        label.setMinimumWidth(end - left)


def scroll_all_but(dock: QWidget, pinned: QWidget | None = None) -> VerticalScroll:
    """Put the rows of ``dock``'s layout into a scroll area; ``pinned`` (taken out of the
    layout that holds it) goes below the scroll area. Returns the scroll area."""
    if pinned is not None:
        holder = pinned.parentWidget()
        if holder is not None and holder.layout() is not None:
            holder.layout().removeWidget(pinned)
    content = QWidget()
    content.setLayout(dock.layout())  # the rows and their widgets move into the scrolled part
    scroll = VerticalScroll()
    scroll.setObjectName("settings_scroll")
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    scroll.setWidget(content)
    content.installEventFilter(scroll)
    layout = QVBoxLayout(dock)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.addWidget(scroll, 1)
    if pinned is not None:
        layout.addWidget(pinned)
    return scroll


__all__ = ["VerticalScroll", "align_labels", "scroll_all_but"]
