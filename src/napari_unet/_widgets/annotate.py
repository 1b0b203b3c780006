"""Annotate dock: make a training labels layer for an image and paint it.

Instance mode uses the ``"sparse"`` convention of ``core.data``: 0 = not annotated (ignored by
the loss), 1 = background, 2, 3, ... = one id per object. Multi-class mode uses
``"semantic-sparse"``: 0 = not annotated, class c painted as c + 1 (class 0 is background).
What a training layer is (its conventions, colours and counts) lives in ``training_layers``;
this dock wires it to napari.
"Use prediction as training labels" edits the layer through napari's undo history (one Ctrl+Z
step restores the previous labels exactly). Mode, class names and "current slice only" are
remembered between sessions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox
from napari.layers import Image, Labels
from napari.utils.colormaps import DirectLabelColormap
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..core.constants import MODES
from . import CLASS_NAMES_KEY, CONVENTION_KEY, ROLE_KEY
from ._form import ask_yes_no
from ._jobs import notify_error, notify_info
from ._scroll import scroll_all_but
from .settings import Binding, DockSettings
from .tooltips import apply_tooltips
from .training_layers import (
    BACKGROUND,
    annotation_counts,
    colormap_covers,
    is_reference_layer,
    is_training_layer,
    next_free_id,
    prediction_to_training,
    replace_with_history,
    training_colormap,
    training_geometry,
)

#: The core's modes, as the mode box shows them.
MODE_CHOICES = [("instances", "instances"), ("classes (semantic)", "semantic")]
TRAINING_CONVENTIONS = {"instances": "sparse", "semantic": "semantic-sparse"}
DOCK = "annotate"


def parse_class_names(text: str) -> list[str]:
    """``"background, nucleus, membrane"`` -> names, background first; at least two classes."""
    names = [n.strip() for n in text.replace(";", ",").split(",") if n.strip()]
    if len(names) < 2:
        raise ValueError("name at least two classes, background first "
                         "(e.g. 'background, nucleus')")
    if len(set(names)) != len(names):
        raise ValueError(f"class names must be distinct, got {names}")
    if len(names) > 254:
        raise ValueError("at most 254 classes")
    return names


class AnnotateWidget(QWidget):
    """Create and paint training labels for an image (see the module docstring).

    ``confirm(text) -> bool`` asks before annotations are replaced (tests replace it).
    """

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.setObjectName("napari_unet_annotate")
        self.confirm: Callable[[str], bool] = lambda text: ask_yes_no(self, text)

        self.image_combo = ComboBox(label="image", choices=self._image_choices, nullable=True)
        self.channel_combo = ComboBox(label="channel axis", choices=self._channel_choices)
        self.mode_combo = ComboBox(label="mode", choices=MODE_CHOICES, value="instances")
        self.class_names_edit = QLineEdit("background, foreground")
        self.class_names_edit.setObjectName("class_names")
        self.create_button = QPushButton("Create training labels")
        self.create_button.setObjectName("create")

        self.labels_combo = ComboBox(label="training labels", choices=self._training_choices,
                                     nullable=True)
        self.background_button = QPushButton("Paint background")
        self.background_button.setObjectName("paint_background")
        self.object_button = QPushButton("New object")
        self.object_button.setObjectName("new_object")
        self.class_combo = ComboBox(label="class", choices=self._class_choices)
        self.class_button = QPushButton("Paint class")
        self.class_button.setObjectName("paint_class")
        self.counts_label = QLabel("no training labels")
        self.counts_label.setObjectName("annotation_counts")
        self.counts_label.setWordWrap(True)

        self.prediction_combo = ComboBox(label="prediction", choices=self._prediction_choices,
                                         nullable=True)
        self.slice_only = QCheckBox("current slice only")
        self.slice_only.setObjectName("slice_only")
        self.slice_only.setChecked(True)
        self.use_prediction_button = QPushButton("Use prediction as training labels")
        self.use_prediction_button.setObjectName("use_prediction")
        for name, combo in (("image", self.image_combo), ("channel_axis", self.channel_combo),
                            ("mode", self.mode_combo), ("training_labels", self.labels_combo),
                            ("paint_class_choice", self.class_combo),
                            ("prediction", self.prediction_combo)):
            combo.native.setObjectName(name)
        self.settings = DockSettings(DOCK, extras={
            "mode": Binding(lambda: self.mode_combo.value, self._set_mode, "instances"),
            "class_names": Binding(self.class_names_edit.text, self.class_names_edit.setText,
                                   "background, foreground"),
            "slice_only": Binding(self.slice_only.isChecked, self._set_slice_only, True),
        })

        self._build_layout()
        apply_tooltips(self, DOCK)
        self._watched: Labels | None = None
        self._count_timer = QTimer(self)
        self._count_timer.setSingleShot(True)
        self._count_timer.setInterval(150)  # coalesce paint events; counting a stack is O(N)
        self._count_timer.timeout.connect(self.update_counts)

        self.create_button.clicked.connect(self.create_training_layer)
        self.background_button.clicked.connect(self.paint_background)
        self.object_button.clicked.connect(self.new_object)
        self.class_button.clicked.connect(self.paint_class)
        self.use_prediction_button.clicked.connect(self.use_prediction)
        self.mode_combo.changed.connect(self._on_mode)
        self.image_combo.changed.connect(lambda *_: self.channel_combo.reset_choices())
        self.labels_combo.changed.connect(self._on_labels_changed)
        self.class_names_edit.editingFinished.connect(self._on_class_names_edited)
        events = self.viewer.layers.events
        for name in ("inserted", "removed", "reordered"):
            getattr(events, name).connect(self.reset_choices)
        self.viewer.dims.events.current_step.connect(self._schedule_counts)
        self.settings.restore()
        self.mode_combo.changed.connect(lambda *_: self.settings.save())
        self.class_names_edit.editingFinished.connect(self.settings.save)
        self.slice_only.toggled.connect(lambda *_: self.settings.save())
        self.reset_choices()
        self._on_mode()

    def _set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode_combo.value = mode

    def _set_slice_only(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise TypeError(f"slice_only must be True or False, got {value!r}")
        self.slice_only.setChecked(value)

    # -- layout ------------------------------------------------------------------------------
    def _build_layout(self) -> None:
        layout = QVBoxLayout(self)
        make = QGroupBox("1. training layer")
        form = QFormLayout(make)
        form.addRow("image", self.image_combo.native)
        form.addRow("channel axis", self.channel_combo.native)
        form.addRow("mode", self.mode_combo.native)
        form.addRow("classes", self.class_names_edit)
        form.addRow(self.create_button)
        self._make_form = form
        layout.addWidget(make)

        paint = QGroupBox("2. paint")
        form = QFormLayout(paint)
        form.addRow("labels", self.labels_combo.native)
        row = QWidget()
        buttons = QHBoxLayout(row)
        buttons.setContentsMargins(0, 0, 0, 0)
        buttons.addWidget(self.background_button)
        buttons.addWidget(self.object_button)
        self._instance_row = row
        form.addRow(row)
        class_row = QWidget()
        crow = QHBoxLayout(class_row)
        crow.setContentsMargins(0, 0, 0, 0)
        crow.addWidget(self.class_combo.native)
        crow.addWidget(self.class_button)
        self._class_row = class_row
        form.addRow(class_row)
        form.addRow(self.counts_label)
        layout.addWidget(paint)

        reuse = QGroupBox("3. correct a prediction")
        form = QFormLayout(reuse)
        form.addRow("prediction", self.prediction_combo.native)
        form.addRow(self.slice_only)
        form.addRow(self.use_prediction_button)
        layout.addWidget(reuse)
        layout.addWidget(self.settings.reset_button())
        layout.addStretch(1)
        scroll_all_but(self, None)

    # -- choices -----------------------------------------------------------------------------
    def _image_choices(self, *_: Any) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in self.viewer.layers if isinstance(layer, Image)]

    def _channel_choices(self, *_: Any) -> list[tuple[str, Any]]:
        choices: list[tuple[str, Any]] = [("none", None)]
        layer = self.image_combo.value if hasattr(self, "image_combo") else None
        if layer is not None and not layer.rgb and layer.ndim >= 3:
            shape = _layer_shape(layer)
            choices += [(f"axis {i} ({shape[i]})", i) for i in range(layer.ndim - 2)]
        return choices

    def _training_choices(self, *_: Any) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in self.viewer.layers
                if isinstance(layer, Labels) and is_training_layer(layer)]

    def _prediction_choices(self, *_: Any) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in self.viewer.layers
                if isinstance(layer, Labels) and not is_training_layer(layer)]

    def _class_choices(self, *_: Any) -> list[tuple[str, Any]]:
        try:
            names = self.class_names()
        except ValueError:
            names = ["background", "foreground"]
        return [(f"{i}: {name}", i) for i, name in enumerate(names)]

    def reset_choices(self, *_: Any) -> None:
        """Refresh the layer lists (napari also calls this when layers change)."""
        for combo in (self.image_combo, self.labels_combo, self.prediction_combo,
                      self.channel_combo, self.class_combo):
            combo.reset_choices()
        images = [c for c in self.image_combo.choices if c is not None]
        if self.image_combo.value is None and images:
            self.image_combo.value = images[0]
        # the newest of each; never reference labels (the sample's ground truth is no
        # prediction to correct)
        labels = [c for c in self.labels_combo.choices if c is not None]
        if self.labels_combo.value is None and labels:
            self.labels_combo.value = labels[-1]
        predictions = [c for c in self.prediction_combo.choices
                       if c is not None and not is_reference_layer(c)]
        if self.prediction_combo.value is None and predictions:
            self.prediction_combo.value = predictions[-1]
        self._on_labels_changed()

    # -- state -------------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        return self.mode_combo.value

    def class_names(self) -> list[str]:
        return parse_class_names(self.class_names_edit.text())

    def _on_mode(self, *_: Any) -> None:
        classes = self.mode == "semantic"
        self.class_names_edit.setEnabled(classes)
        self._instance_row.setVisible(not classes)
        self._class_row.setVisible(classes)
        self.class_combo.reset_choices()
        self._schedule_counts()

    def _on_class_names_edited(self) -> None:
        self.class_combo.reset_choices()
        layer = self.labels_combo.value
        if layer is not None and layer.metadata.get(CONVENTION_KEY) == "semantic-sparse":
            try:
                layer.metadata[CLASS_NAMES_KEY] = self.class_names()
            except ValueError as err:
                notify_error(err)

    def _on_labels_changed(self, *_: Any) -> None:
        layer = self.labels_combo.value
        if layer is self._watched:
            self._schedule_counts()
            return
        if self._watched is not None:
            for name in ("paint", "data", "set_data"):
                getattr(self._watched.events, name).disconnect(self._schedule_counts)
        self._watched = layer
        if layer is not None:
            for name in ("paint", "data", "set_data"):
                getattr(layer.events, name).connect(self._schedule_counts)
            convention = layer.metadata.get(CONVENTION_KEY)
            mode = "semantic" if convention in ("semantic-sparse", "semantic") else "instances"
            if mode != self.mode:
                self.mode_combo.value = mode
            names = layer.metadata.get(CLASS_NAMES_KEY)
            if names:
                self.class_names_edit.setText(", ".join(names))
                self.class_combo.reset_choices()
        self._schedule_counts()

    def _schedule_counts(self, *_: Any) -> None:
        self._count_timer.start()

    def update_counts(self) -> dict[str, int] | None:
        """Recount the training layer and show it; returns the counts (None without a layer)."""
        layer = self.labels_combo.value
        if layer is None:
            self.counts_label.setText("no training labels: create them above")
            return None
        counts = annotation_counts(layer.data, self.mode)
        what = "objects" if self.mode == "instances" else "classes painted"
        text = (f"{counts['annotated']:,} px annotated ({counts['background']:,} background), "
                f"{counts['objects']} {what}")
        index = self._current_index(layer)
        if index:
            here = annotation_counts(layer.data[index], self.mode)
            text += f"; this slice: {here['annotated']:,} px, {here['objects']} {what}"
        self.counts_label.setText(text)
        return counts

    def _current_index(self, layer: Labels) -> tuple[int, ...]:
        """Index of the slice on screen for the leading (non-painted) axes of ``layer``."""
        if layer.ndim <= 2:
            return ()
        point = layer.world_to_data(self.viewer.dims.point)
        lead = layer.ndim - 2
        return tuple(int(np.clip(round(p), 0, n - 1))
                     for p, n in zip(point[:lead], layer.data.shape[:lead], strict=True))

    # -- actions -----------------------------------------------------------------------------
    def create_training_layer(self) -> Labels | None:
        """A new training layer over the chosen image (None and a notification on bad input)."""
        image = self.image_combo.value
        if image is None:
            notify_error("choose an image layer first")
            return None
        try:
            names = self.class_names() if self.mode == "semantic" else None
            shape, scale, translate = training_geometry(
                _layer_shape(image), tuple(image.scale), tuple(image.translate),
                self.channel_combo.value)
        except ValueError as err:
            notify_error(err)
            return None
        return self._add_training_layer(np.zeros(shape, np.int32), image.name, scale,
                                        translate, names)

    def _add_training_layer(self, data: np.ndarray, image_name: str, scale: Any,
                            translate: Any, names: list[str] | None) -> Labels:
        metadata: dict[str, Any] = {CONVENTION_KEY: TRAINING_CONVENTIONS[self.mode],
                                    ROLE_KEY: "training", "napari_unet_image": image_name}
        if names:
            metadata[CLASS_NAMES_KEY] = names
        layer = self.viewer.add_labels(
            data, name=f"{image_name} training labels", scale=scale, translate=translate,
            metadata=metadata, opacity=0.7)
        layer.colormap = training_colormap(int(data.max()) if data.size else 0)
        layer.n_edit_dimensions = 2  # paint the slice on screen, never through the stack
        self.labels_combo.reset_choices()
        self.labels_combo.value = layer
        self.viewer.layers.selection.active = layer
        return layer

    def _active_training_layer(self) -> Labels | None:
        layer = self.labels_combo.value
        if layer is None:
            notify_error("no training labels layer: create one first")
            return None
        self.viewer.layers.selection.active = layer
        return layer

    def _select(self, layer: Labels, label: int) -> None:
        if not colormap_covers(layer.colormap, label) and \
                isinstance(layer.colormap, DirectLabelColormap):
            layer.colormap = training_colormap(label)
        layer.selected_label = label
        layer.mode = "paint"

    def paint_background(self) -> None:
        """Select label 1 (background) and the brush."""
        layer = self._active_training_layer()
        if layer is not None:
            self._select(layer, BACKGROUND)

    def new_object(self) -> None:
        """Select the next free object id and the brush."""
        layer = self._active_training_layer()
        if layer is not None:
            self._select(layer, next_free_id(layer.data))

    def paint_class(self) -> None:
        """Select the label of the class chosen in the combo box (class c -> label c + 1)."""
        layer = self._active_training_layer()
        if layer is not None and self.class_combo.value is not None:
            self._select(layer, int(self.class_combo.value) + 1)

    def use_prediction(self) -> Labels | None:
        """Copy the chosen prediction into the training layer (asks before overwriting)."""
        pred_layer = self.prediction_combo.value
        if pred_layer is None:
            notify_error("choose a prediction labels layer to copy")
            return None
        try:
            converted = prediction_to_training(pred_layer.data, self.mode)
        except ValueError as err:
            notify_error(err)
            return None
        target = self.labels_combo.value
        if target is None:
            image = self.image_combo.value
            names = None
            if self.mode == "semantic":
                try:
                    names = self.class_names()
                except ValueError as err:
                    notify_error(err)
                    return None
            name = image.name if image is not None else pred_layer.name
            layer = self._add_training_layer(converted, name, tuple(pred_layer.scale),
                                             tuple(pred_layer.translate), names)
            notify_info(f"copied {pred_layer.name!r} into new layer {layer.name!r}")
            return layer
        if target.data.shape != converted.shape:
            notify_error(f"prediction {pred_layer.name!r} has shape {converted.shape} but the "
                         f"training labels {target.name!r} have shape {target.data.shape}")
            return None
        index = self._current_index(target) if self.slice_only.isChecked() else ()
        region = target.data[index] if index else target.data
        if np.any(np.asarray(region)) and not self.confirm(
                f"Replace the annotations of {target.name!r}"
                f"{' on this slice' if index else ''} with {pred_layer.name!r}? "
                "(Ctrl+Z undoes it)"):
            return None
        try:
            # through napari's undo history: one Ctrl+Z restores the previous labels exactly;
            # the edit emits the layer's paint event, which the counts and Train dock follow
            replace_with_history(target, converted[index] if index else converted, index)
        except ValueError as err:
            notify_error(err)
            return None
        if not colormap_covers(target.colormap, int(converted.max())):
            target.colormap = training_colormap(int(converted.max()))
        self._schedule_counts()
        return target


def _layer_shape(layer: Image) -> tuple[int, ...]:
    """Data shape of an image layer without its RGB axis (full resolution if multiscale)."""
    shape = tuple(layer.level_shapes[0]) if layer.multiscale else tuple(layer.data.shape)
    return shape[:-1] if layer.rgb else shape
