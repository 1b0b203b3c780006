"""Docks that fit a laptop screen: all four open in a 1366 x 768 window, each dock's primary
buttons and progress line in view without scrolling; the settings scroll."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import QRect

DOCKS = {"Annotate": (), "Train": ("start_button", "stop_button"),
         "Predict": ("run_button", "stop_button", "progress"),
         "Batch segment": ("run_button", "stop_button", "progress")}


def _shown(widget, window) -> bool:
    """On screen inside ``window``, not clipped away or scrolled out of view."""
    corner = widget.mapTo(window, widget.rect().topLeft())
    inside = window.rect().contains(QRect(corner, widget.size()))
    return widget.isVisible() and not widget.visibleRegion().isEmpty() and inside


@pytest.mark.gui
def test_all_four_docks_fit_a_laptop_screen(make_napari_viewer, qtbot):
    from napari_unet._widgets._scroll import VerticalScroll

    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(1366, 768)
    viewer.add_image(np.zeros((2, 64, 64), np.float32), name="img")
    docks = {name: viewer.window.add_plugin_dock_widget("napari-original-unet", name)[1]
             for name in DOCKS}
    qtbot.wait(300)
    window.resize(1366, 768)
    qtbot.wait(300)
    assert window.width() <= 1366 and window.height() <= 768
    for name, attributes in DOCKS.items():
        dock = docks[name]
        assert dock.findChild(VerticalScroll) is not None, name  # the settings scroll
        for attribute in attributes:
            widget = getattr(dock, attribute, None) or getattr(dock.block, attribute)
            assert _shown(widget, window), (name, attribute)
    train = docks["Train"]
    assert _shown(train.run.block.progress, window) and _shown(train.status_label, window)


def test_a_scrolled_dock_keeps_its_pinned_block_below_the_rows(qtbot):
    from qtpy.QtWidgets import QLabel, QPushButton, QVBoxLayout, QWidget

    from napari_unet._widgets._scroll import scroll_all_but

    dock = QWidget()
    qtbot.addWidget(dock)
    rows = QVBoxLayout(dock)
    labels = [QLabel(f"setting {i}") for i in range(40)]
    for label in labels:
        rows.addWidget(label)
    run = QPushButton("Run")
    rows.addWidget(run)
    scroll = scroll_all_but(dock, run)
    dock.resize(300, 200)
    dock.show()
    qtbot.wait(50)
    assert scroll.widget().isAncestorOf(labels[0]) and not scroll.widget().isAncestorOf(run)
    assert _shown(run, dock) and not _shown(labels[-1], dock)  # the last rows scroll
    assert dock.minimumSizeHint().height() < 200


@pytest.mark.gui
@pytest.mark.parametrize("name", ["Predict", "Batch segment", "Train"])
def test_the_forms_of_a_dock_share_one_label_column(make_napari_viewer, qtbot, name):
    """The image, model, settings and output rows are separate forms; their fields start at
    one place, not one per form."""
    from qtpy.QtWidgets import QFormLayout

    viewer = make_napari_viewer(show=True)
    viewer.add_image(np.zeros((64, 64), np.float32), name="img")
    _, dock = viewer.window.add_plugin_dock_widget("napari-original-unet", name)
    qtbot.wait(300)
    starts = set()
    for form in dock.findChildren(QFormLayout):
        for row in range(form.rowCount()):
            field = form.itemAt(row, QFormLayout.ItemRole.FieldRole)
            label = form.itemAt(row, QFormLayout.ItemRole.LabelRole)
            if field is not None and label is not None and field.widget().isVisible():
                starts.add(field.widget().mapTo(dock, field.widget().rect().topLeft()).x())
    assert len(starts) == 1, starts
