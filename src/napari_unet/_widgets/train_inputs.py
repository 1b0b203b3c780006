"""The Train dock's "Data" box: which image, which training labels, which label convention.

Follows the viewer's layer list (preview layers left out); a labels layer made by the Annotate
dock names its image and convention in its metadata, and both are picked up from there. The
chosen convention is written back to the labels layer, so it is remembered with the layer.
"""

from __future__ import annotations

from typing import Any

from napari.layers import Image, Labels
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QComboBox, QFormLayout, QPushButton, QWidget

from ..core.training.labels import CONVENTIONS
from . import CONVENTION_KEY, ROLE_KEY
from ._form import set_row_visible
from .tooltips import tooltip
from .training_layers import is_reference_layer, is_training_layer

IMAGE_KEY = "napari_unet_image"  # set on training layers by the Annotate dock


def same_layer(a: Any, b: Any) -> bool:
    """Identity of layers seen through napari's plugin proxies (a new proxy per access)."""
    return getattr(a, "__wrapped__", a) is getattr(b, "__wrapped__", b)


class TrainInputs(QWidget):
    """Image, training labels and convention choice (see the module docstring).

    Signals: ``image_changed(object)`` and ``labels_changed(object)`` with the chosen layer or
    None.
    """

    image_changed = Signal(object)
    labels_changed = Signal(object)

    def __init__(self, viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.image_combo = QComboBox()
        self.image_combo.setObjectName("image")
        self.labels_combo = QComboBox()
        self.labels_combo.setObjectName("training_labels")
        self.convention_combo = QComboBox()
        self.convention_combo.setObjectName("convention")
        self.convention_combo.addItems(CONVENTIONS)
        self.channel_combo = QComboBox()  # shown for images with channels (RGB too)
        self.channel_combo.setObjectName("channel")
        self.restore_button = QPushButton("Restore autosaved session")
        self.restore_button.setObjectName("restore")
        for widget in (self.image_combo, self.labels_combo, self.convention_combo,
                       self.channel_combo, self.restore_button):
            widget.setToolTip(tooltip("train", widget.objectName()))
        form = QFormLayout(self)
        form.addRow("image", self.image_combo)
        form.addRow("training labels", self.labels_combo)
        form.addRow("convention", self.convention_combo)
        form.addRow("channel", self.channel_combo)
        form.addRow(self.restore_button)
        self._form = form
        self.image_combo.currentIndexChanged.connect(
            lambda *_: self.image_changed.emit(self.image_layer()))
        self.image_changed.connect(lambda *_: self._list_channels())
        self.labels_changed.connect(lambda *_: self._list_channels())
        self.labels_combo.currentIndexChanged.connect(lambda *_: self._on_labels_changed())
        self.convention_combo.currentTextChanged.connect(self._on_convention_changed)
        self._connected = False
        self.connect_viewer()

    # -- viewer -------------------------------------------------------------------------------
    def connect_viewer(self) -> None:
        if self._connected:
            return
        layers = self.viewer.layers
        for event in (layers.events.inserted, layers.events.removed, layers.events.reordered):
            event.connect(self.refresh)
        self._connected = True
        self.refresh()

    def disconnect_viewer(self) -> None:
        if not self._connected:
            return
        self._connected = False
        layers = self.viewer.layers
        for event in (layers.events.inserted, layers.events.removed, layers.events.reordered):
            event.disconnect(self.refresh)
        for layer in layers:
            layer.events.name.disconnect(self.refresh)

    def refresh(self, *_: Any) -> None:
        """Re-list the layers, keeping the current choices where they still exist."""
        image_before, labels_before = self.image_layer(), self.labels_layer()
        for combo, kind in ((self.image_combo, Image), (self.labels_combo, Labels)):
            current = combo.currentText()
            names = [layer.name for layer in self.viewer.layers if isinstance(layer, kind)
                     and layer.metadata.get(ROLE_KEY) != "preview"]
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(names)
            if current in names:
                combo.setCurrentText(current)
            elif kind is Labels:
                combo.setCurrentIndex(self._first_labels(names))
            combo.blockSignals(False)
        for layer in self.viewer.layers:
            layer.events.name.disconnect(self.refresh)  # no duplicates
            layer.events.name.connect(self.refresh)
        if not same_layer(self.image_layer(), image_before) or image_before is None:
            self.image_changed.emit(self.image_layer())
        if not same_layer(self.labels_layer(), labels_before) or labels_before is None:
            self._on_labels_changed()

    def _first_labels(self, names: list[str]) -> int:
        """The labels to offer first: painted training labels, else any but reference labels
        (the sample's ground truth is there to compare with, not to train on unasked);
        -1 (none) when only those are open."""
        layers = [self.viewer.layers[name] for name in names]
        for wanted in (is_training_layer,
                       lambda layer: not is_reference_layer(layer)):
            index = next((i for i, layer in enumerate(layers) if wanted(layer)), None)
            if index is not None:
                return index
        return -1

    # -- choice --------------------------------------------------------------------------------
    def _layer(self, combo: QComboBox, kind: type) -> Any:
        name = combo.currentText()
        if name and name in self.viewer.layers and isinstance(self.viewer.layers[name], kind):
            return self.viewer.layers[name]
        return None

    def image_layer(self) -> Any:
        return self._layer(self.image_combo, Image)

    def labels_layer(self) -> Any:
        return self._layer(self.labels_combo, Labels)

    def convention(self) -> str:
        return self.convention_combo.currentText()

    def channel(self) -> int | None:
        """The channel to train on, or None for all of them (or an image without channels)."""
        return self.channel_combo.currentData() if self.channel_combo.count() > 1 else None

    def _list_channels(self) -> None:
        """List the image's channels (with its labels: the axis they do not cover)."""
        from .train_data import arrange_image

        image, labels = self.image_layer(), self.labels_layer()
        count = 0
        if image is not None and labels is not None:
            data = image.data[0] if image.multiscale else image.data
            try:
                arranged, axis = arrange_image(data, image.rgb, tuple(labels.data.shape))
                count = int(arranged.shape[axis]) if axis is not None else 0
            except ValueError:  # the labels do not fit the image: Start says so
                count = 0
        current = self.channel_combo.currentData()
        self.channel_combo.blockSignals(True)
        self.channel_combo.clear()
        self.channel_combo.addItem(f"all {count} channels", None)
        for c in range(count):
            self.channel_combo.addItem(f"channel {c}", c)
        index = self.channel_combo.findData(current)
        self.channel_combo.setCurrentIndex(max(index, 0))
        self.channel_combo.blockSignals(False)
        set_row_visible(self._form, self.channel_combo, count > 1)

    def set_layers(self, image: Any = None, labels: Any = None) -> None:
        """Select ``image`` and/or ``labels`` (layers of the viewer)."""
        if image is not None:
            self.image_combo.setCurrentText(image.name)
        if labels is not None:
            self.labels_combo.setCurrentText(labels.name)

    def _on_labels_changed(self) -> None:
        layer = self.labels_layer()
        if layer is not None:
            image_name = layer.metadata.get(IMAGE_KEY)
            if (image_name and self.image_combo.isEnabled()
                    and self.image_combo.findText(image_name) >= 0):
                self.image_combo.setCurrentText(image_name)
            convention = layer.metadata.get(CONVENTION_KEY, "dense")
            if convention in CONVENTIONS:
                self.convention_combo.blockSignals(True)
                self.convention_combo.setCurrentText(convention)
                self.convention_combo.blockSignals(False)
        self.labels_changed.emit(layer)

    def _on_convention_changed(self, convention: str) -> None:
        layer = self.labels_layer()
        if layer is not None:
            layer.metadata[CONVENTION_KEY] = convention  # remembered with the layer

    def controls(self) -> list[QWidget]:
        """Everything to disable while a training runs."""
        return [self.image_combo, self.labels_combo, self.convention_combo, self.channel_combo]


__all__ = ["IMAGE_KEY", "TrainInputs", "same_layer"]
