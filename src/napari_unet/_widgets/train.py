"""The Train dock: pick image + training labels + model, train, watch the loss and a live preview.

The dock is a thin view over ``core.train.Trainer``. The training generator runs in napari's
``thread_worker``; the dock only renders the events it yields. Two things run alongside:

- **live preview**: the GUI thread keeps a small request (which slice, which <= 512x512 region
  of it is in view); the worker reads that crop from the image and hands it to
  ``Trainer.events(preview=...)``. ``events`` takes a fixed crop, so when the view moves the
  worker leaves the generator after a step (every yield leaves the model consistent) and calls
  ``events`` again with the new crop; the step count carries on. The probabilities are shown in
  one preview layer whose data is replaced in place.
- **paint while it trains**: edits to the training labels layer (napari's ``paint`` and
  ``data`` events, in the GUI thread) are debounced; a copy of the labels is taken in the GUI
  thread (so it cannot race with painting) and handed to ``TrainingSet.update`` on a
  single background thread, which keeps the updates in order; the trainer picks them up within
  a few steps. The same thread autosaves the labels to the session folder.

Stop calls ``worker.quit()``, which only stops pulling from the generator, so the model is
auto-saved in the worker's ``finished`` handler (on the background thread, after the training
thread is done with the model).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time
import typing
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, create_widget
from napari.layers import Image, Labels
from qtpy.QtCore import QEvent, QObject, QTimer, Signal
from qtpy.QtWidgets import (
    QApplication,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..core.augment import AugmentConfig
from ..core.data import CONVENTIONS, SEMANTIC_CONVENTIONS, SEMANTIC_IGNORE, TrainingSet
from ..core.device import DEVICE_CHOICES, resolve_device
from ..core.events import LossReport, Message, Preview, Progress, ValidationReport
from ..core.train import LOSSES, MAX_PREVIEW, PRESETS, TrainConfig, Trainer
from . import CLASS_NAMES_KEY, CONVENTION_KEY, ROLE_KEY
from ._jobs import JobRunner, notify_error, notify_info, notify_warning
from .loss_plot import LossPlot
from .model_choice import ModelChoice, ModelSpec
from .session import Session

#: TrainConfig fields shown in the dock, with their label; widgets are generated from the
#: dataclass field types and defaults (the docstring gives the tooltips).
SHOWN_FIELDS: dict[str, str] = {
    "iterations": "iterations",
    "lr": "learning rate",
    "batch_size": "batch size",
    "tile_size": "tile size",
    "w0": "border weight w0",
    "sigma": "border sigma (px)",
    "loss": "loss",
    "validate_every": "validate every",
    "preview_every_s": "preview every (s)",
    "device": "device",
}
_CHOICES: dict[str, tuple[str, ...]] = {"loss": LOSSES, "device": DEVICE_CHOICES}
#: Boolean AugmentConfig fields become check boxes; "intensity" toggles the three ranges.
AUGMENT_TOGGLES = tuple(f.name for f in dataclasses.fields(AugmentConfig) if f.type in
                        ("bool", bool))
_NEUTRAL_INTENSITY = {"brightness": (0.0, 0.0), "contrast": (1.0, 1.0), "gamma": (1.0, 1.0)}

IMAGE_KEY = "napari_unet_image"  # set on training layers by the Annotate dock
LABELS_DEBOUNCE_MS = 500
VIEW_DEBOUNCE_MS = 300
MIN_PREVIEW = 64


# -- pure helpers (tested without a viewer) ------------------------------------------------------
def arrange_image(data: Any, rgb: bool, labels_shape: tuple[int, ...]) -> tuple[Any, int | None]:
    """Image data with channels (if any) just before ``(H, W)``, and that channel axis.

    Parameters
    ----------
    data : array-like
        Image layer data: ``(H, W)``, ``(Z, H, W)``, a channel axis anywhere before ``(H, W)``,
        or RGB(A) with channels last.
    rgb : bool
        Whether the layer is RGB(A).
    labels_shape : tuple of int
        Shape of the training labels: ``(H, W)`` or ``(Z, H, W)``.

    Returns
    -------
    image : array-like
        ``(H, W)``, ``(Z, H, W)``, ``(C, H, W)`` or ``(Z, C, H, W)`` (a view; dask stays lazy).
    channel_axis : int or None
        0 or 1 for images with channels, else None.
    """
    shape, labels_shape = tuple(data.shape), tuple(labels_shape)
    if len(labels_shape) not in (2, 3):
        raise ValueError(f"training labels must be 2D or a 3D stack, got shape {labels_shape}")
    if rgb:
        axis = len(shape) - 1
        if shape[:-1] != labels_shape:
            raise ValueError(f"labels shape {labels_shape} does not match the RGB image's "
                             f"shape {shape[:-1]}")
    elif shape == labels_shape:
        return data, None
    else:
        candidates = [a for a in range(len(shape) - 2)
                      if shape[:a] + shape[a + 1:] == labels_shape]
        if not candidates:
            raise ValueError(f"labels shape {labels_shape} does not match image shape {shape} "
                             "(the labels must cover the image, without its channel axis)")
        axis = candidates[0]
    target = len(shape) - 3
    if axis == target:
        return data, target
    order = list(range(len(shape)))
    order.insert(target, order.pop(axis))
    moved = np.transpose(data, order) if isinstance(data, np.ndarray) else data.transpose(order)
    return moved, target


def labels_mode(convention: str, labels: np.ndarray, class_names: Any = None) -> tuple[str, int]:
    """``(mode, num_classes)`` for labels in ``convention`` (semantic: named or counted classes)."""
    if convention not in SEMANTIC_CONVENTIONS:
        return "instances", 2
    if class_names:
        return "semantic", max(2, len(class_names))
    values = np.asarray(labels)
    if convention == "semantic":
        values = values[values != SEMANTIC_IGNORE]
        top = int(values.max()) if values.size else 0
        return "semantic", max(2, top + 1)
    return "semantic", max(2, int(values.max()) if values.size else 0)


def preview_region(
    center: tuple[float, float], extent: tuple[float, float], shape: tuple[int, int],
    limit: int = MAX_PREVIEW, minimum: int = MIN_PREVIEW,
) -> tuple[slice, slice]:
    """The ``(rows, cols)`` slices of the preview: the visible part, at most ``limit`` pixels.

    Parameters
    ----------
    center : (y, x)
        View centre in data pixels.
    extent : (h, w)
        Visible height and width in data pixels.
    shape : (H, W)
        Image size.
    limit, minimum : int
        Largest and smallest preview side (clipped to the image).
    """
    out = []
    for c, e, n in zip(center, extent, shape, strict=True):
        size = int(min(n, limit, max(minimum, np.ceil(e))))
        start = int(np.clip(round(c - size / 2), 0, n - size))
        out.append(slice(start, start + size))
    return out[0], out[1]


def config_field_types() -> dict[str, type]:
    """The Python type of each shown TrainConfig field (``X | None`` -> ``X``)."""
    hints = typing.get_type_hints(TrainConfig)
    out = {}
    for name in SHOWN_FIELDS:
        hint = hints[name]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        out[name] = args[0] if args else hint
    return out


def _field_docs() -> dict[str, str]:
    """Per-field text from TrainConfig's numpy docstring (for tooltips)."""
    doc = TrainConfig.__doc__ or ""
    docs: dict[str, str] = {}
    current: list[str] = []
    for line in doc.splitlines():
        if line.startswith("    ") and not line.startswith("        ") and " : " in line:
            current = [n.strip() for n in line.split(" : ")[0].split(",")]
            docs.update({name: "" for name in current})
        elif line.startswith("        ") and current:
            for name in current:
                docs[name] = (docs[name] + " " + line.strip()).strip()
    return docs


class _PreviewBox:
    """The latest preview request of the GUI: ``(z | None, rows, cols)``, with a version."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._region: tuple[int | None, slice, slice] | None = None
        self.version = 0

    def set(self, region: tuple[int | None, slice, slice] | None) -> None:
        with self._lock:
            if region != self._region:
                self._region = region
                self.version += 1

    def get(self) -> tuple[tuple[int | None, slice, slice] | None, int]:
        with self._lock:
            return self._region, self.version


@dataclasses.dataclass(frozen=True)
class _Started:
    """First item the training worker yields: the trainer, for saving after it stops."""

    trainer: Trainer


def _crop(image: Any, channel_axis: int | None, region: tuple[int | None, slice, slice]
          ) -> np.ndarray:
    z, rows, cols = region
    plane = image if z is None else image[z]
    crop = plane[..., rows, cols] if channel_axis is not None else plane[rows, cols]
    return np.asarray(crop)


def _same_layer(a: Any, b: Any) -> bool:
    """Identity of layers seen through napari's plugin proxies (a new proxy per access)."""
    return getattr(a, "__wrapped__", a) is getattr(b, "__wrapped__", b)


def _lower_this_thread_priority(increment: int = 10) -> None:
    """Let the GUI thread win the CPU over training (Linux: per-thread nice value).

    Threads started from here (the trainer's data thread, torch's workers) inherit it. An
    unprivileged process cannot raise a priority again, so the pool thread stays "nice" until
    Qt retires it (30 s idle); other napari-unet jobs it may run are background work too.
    """
    if not sys.platform.startswith("linux") or not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, tid)
        if current < 10:
            os.setpriority(os.PRIO_PROCESS, tid, min(19, current + increment))
    except OSError:
        pass  # not allowed here: train at normal priority


def _training_job(spec: ModelSpec, samples: TrainingSet, config: TrainConfig, image: Any,
                  channel_axis: int | None, box: _PreviewBox | None):
    """Generator run by the worker: build the net, then train, restarting ``events`` whenever
    the preview region changes."""
    _lower_this_thread_priority()
    model, _meta = spec.build(samples.in_channels, samples.num_classes, "cpu")
    trainer = Trainer(model, samples, config)
    if trainer.device.type == "cpu":
        # Leave a core to the viewer: torch's worker threads spinning on every core starve the
        # GUI thread (and each other, when the machine is busy).
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
    yield _Started(trainer)
    last_preview = -float("inf")
    while trainer.step < config.iterations:
        region, version = box.get() if box is not None else (None, 0)
        crop = _crop(image, channel_axis, region) if region is not None else None
        shown = False  # has this crop had its preview yet?
        for event in trainer.events(preview=crop):
            if isinstance(event, Preview) and region is not None:
                event = dataclasses.replace(event, region=region)
                last_preview, shown = time.monotonic(), True
            yield event
            # The view moved and a preview is due: continue with a crop of the new view (the
            # first step of ``events`` yields its preview). Not before this crop's own
            # preview, or a view that keeps moving faster than the steps would get none.
            if (isinstance(event, LossReport) and shown and box is not None
                    and box.get()[1] != version
                    and time.monotonic() - last_preview >= config.preview_every_s):
                break
    trainer.close()


# -- the dock ----------------------------------------------------------------------------------
class TrainWidget(QWidget):
    """Dock widget that trains a U-Net on the painted labels of an image layer.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer (injected by napari).

    Notes
    -----
    Signals: ``saved(str)`` after a model file was written (explicit or auto-save),
    ``labels_updated(int)`` after the running training took new labels (annotated pixels),
    ``job_finished()`` when a training run has ended and its model was saved.
    """

    saved = Signal(str)
    labels_updated = Signal(int)
    job_finished = Signal()
    _background_done = Signal(object)  # (kind, result | exception, extra), from the executor

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.trainer: Trainer | None = None
        self.samples: TrainingSet | None = None
        self.session: Session | None = None
        self.preview_layer: Image | None = None
        self.preview_updates = 0
        self.preview_region: tuple[int | None, slice, slice] | None = None  # (z, rows, cols)
        self._preview_box: _PreviewBox | None = None
        self._image_layer: Image | None = None
        self._labels_layer: Labels | None = None  # the one whose edits we follow
        self._run_labels_layer: Labels | None = None  # the one the running job trains on
        self._pending_saves = 0
        self._closed = False
        self._offered_sessions: set[str] = set()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="napari-unet-io")
        self._background_done.connect(self._on_background_done)
        self._build_ui()
        self.jobs = JobRunner(self._on_event, self._on_job_finished,
                              controls=self._controls(), stop_button=self.stop_button)
        self._connect_viewer()
        self._refresh_layers()
        self._apply_preset()
        self._update_buttons()

    # -- UI -----------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        layout = QVBoxLayout(self)

        data_box = QGroupBox("Data")
        data_form = QFormLayout(data_box)
        self.image_combo = QComboBox()
        self.labels_combo = QComboBox()
        self.convention_combo = QComboBox()
        self.convention_combo.addItems(CONVENTIONS)
        self.convention_combo.setToolTip(
            "sparse: 0 = not annotated, 1 = background, 2.. = objects (Annotate dock)\n"
            "dense: 0 = background, 1.. = objects (full masks)\n"
            "binary: 0 / non-zero, objects = connected components\n"
            "semantic: ids are classes, 255 = ignore; semantic-sparse: class c painted as c+1")
        data_form.addRow("image", self.image_combo)
        data_form.addRow("training labels", self.labels_combo)
        data_form.addRow("convention", self.convention_combo)
        self.restore_button = QPushButton("Restore autosaved session")
        self.restore_button.setToolTip("Add the autosaved training labels of this image as a "
                                       "layer and continue from its autosaved model")
        self.restore_button.clicked.connect(self.restore_session)
        data_form.addRow(self.restore_button)
        layout.addWidget(data_box)

        model_box = QGroupBox("Model")
        model_layout = QVBoxLayout(model_box)
        self.model_choice = ModelChoice(allow_new=True)
        model_layout.addWidget(self.model_choice)
        layout.addWidget(model_box)

        settings_box = QGroupBox("Training")
        settings = QFormLayout(settings_box)
        self.preset_combo = QComboBox()
        self.preset_combo.addItems(tuple(PRESETS))
        self.preset_combo.setCurrentText(TrainConfig().preset)
        self.preset_combo.setToolTip("paper: SGD, momentum 0.99, batch 1, 572-px tiles, "
                                     "geometric augmentation\nfast: Adam, batch 4, 256-px tiles, "
                                     "geometric + intensity augmentation")
        self.preset_combo.currentTextChanged.connect(lambda *_: self._apply_preset())
        settings.addRow("preset", self.preset_combo)
        docs = _field_docs()
        self.config_widgets: dict[str, Any] = {}
        for name, typ in config_field_types().items():
            default = getattr(TrainConfig(), name)
            if name in _CHOICES:
                widget = ComboBox(choices=_CHOICES[name], value=default, name=name)
            else:
                options = {"min": 0, "max": 10**7} if typ in (int, float) else {}
                widget = create_widget(value=default, annotation=typ, name=name,
                                       options=options)
                if typ is float:
                    # magicgui's float boxes show 2 decimals: a learning rate needs more.
                    small = name == "lr"
                    widget.native.setDecimals(6 if small else 2)
                    widget.native.setSingleStep(1e-4 if small else 0.5)
                    widget.value = default
            widget.tooltip = docs.get(name, "")
            self.config_widgets[name] = widget
            settings.addRow(SHOWN_FIELDS[name], widget.native)
        aug_row = QWidget()
        aug_layout = QHBoxLayout(aug_row)
        aug_layout.setContentsMargins(0, 0, 0, 0)
        self.augment_toggles: dict[str, CheckBox] = {}
        for name in (*AUGMENT_TOGGLES, "intensity"):
            box = CheckBox(text=name, value=True, name=name)
            self.augment_toggles[name] = box
            aug_layout.addWidget(box.native)
        settings.addRow("augment", aug_row)
        self.preview_check = CheckBox(text="live preview of the view", value=True)
        settings.addRow("", self.preview_check.native)
        layout.addWidget(settings_box)

        run_box = QGroupBox("Run")
        run = QVBoxLayout(run_box)
        buttons = QHBoxLayout()
        self.start_button = QPushButton("Start")
        self.stop_button = QPushButton("Stop")
        self.save_button = QPushButton("Save model...")
        self.start_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        self.save_button.clicked.connect(self._save_dialog)
        for button in (self.start_button, self.stop_button, self.save_button):
            buttons.addWidget(button)
        run.addLayout(buttons)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("%v / %m")
        run.addWidget(self.progress)
        self.device_label = QLabel()
        self.status_label = QLabel("idle")
        self.status_label.setWordWrap(True)
        run.addWidget(self.device_label)
        run.addWidget(self.status_label)
        self.loss_plot = LossPlot()
        run.addWidget(self.loss_plot)
        layout.addWidget(run_box)
        layout.addStretch(1)
        self._show_device()

        self.image_combo.currentIndexChanged.connect(lambda *_: self._on_image_changed())
        self.labels_combo.currentIndexChanged.connect(lambda *_: self._on_labels_changed())
        self.convention_combo.currentTextChanged.connect(self._on_convention_changed)
        self.config_widgets["device"].changed.connect(lambda *_: self._show_device())

        self._labels_timer = QTimer(self)
        self._labels_timer.setSingleShot(True)
        self._labels_timer.setInterval(LABELS_DEBOUNCE_MS)
        self._labels_timer.timeout.connect(self._push_labels)
        self._view_timer = QTimer(self)
        self._view_timer.setSingleShot(True)
        self._view_timer.setInterval(VIEW_DEBOUNCE_MS)
        self._view_timer.timeout.connect(self._update_preview_request)

    def _connect_viewer(self) -> None:
        layers = self.viewer.layers
        for event in (layers.events.inserted, layers.events.removed, layers.events.reordered):
            event.connect(self._refresh_layers)
        self._camera().events.center.connect(self._on_view_changed)
        self._camera().events.zoom.connect(self._on_view_changed)
        self.viewer.dims.events.current_step.connect(self._on_view_changed)

    def _camera(self) -> Any:
        # napari 0.9 moved the camera to ``viewer.scene``; older versions only have the
        # attribute on the viewer.
        scene = getattr(self.viewer, "scene", None)
        return scene.camera if scene is not None else self.viewer.camera

    def _disconnect_viewer(self) -> None:
        layers = self.viewer.layers
        for event in (layers.events.inserted, layers.events.removed, layers.events.reordered):
            event.disconnect(self._refresh_layers)
        self._camera().events.center.disconnect(self._on_view_changed)
        self._camera().events.zoom.disconnect(self._on_view_changed)
        self.viewer.dims.events.current_step.disconnect(self._on_view_changed)
        self._follow_labels(None)

    # -- layer choice ----------------------------------------------------------------------------
    def _refresh_layers(self, *_: Any) -> None:
        if self._closed:
            return
        for combo, kind in ((self.image_combo, Image), (self.labels_combo, Labels)):
            current = combo.currentText()
            names = [layer.name for layer in self.viewer.layers if isinstance(layer, kind)
                     and layer.metadata.get(ROLE_KEY) != "preview"]
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(names)
            if current in names:
                combo.setCurrentText(current)
            combo.blockSignals(False)
        for layer in self.viewer.layers:
            layer.events.name.disconnect(self._refresh_layers)  # no duplicates
            layer.events.name.connect(self._refresh_layers)
        if self.preview_layer is not None and self.preview_layer not in self.viewer.layers:
            self.preview_layer = None  # the user deleted it; a new one appears on next update
        self._on_image_changed()
        self._on_labels_changed()

    def _layer(self, combo: QComboBox, kind: type) -> Any:
        name = combo.currentText()
        if name and name in self.viewer.layers and isinstance(self.viewer.layers[name], kind):
            return self.viewer.layers[name]
        return None

    def set_layers(self, image: Image | None = None, labels: Labels | None = None) -> None:
        """Select ``image`` and/or ``labels`` in the dock (also used by tests and scripts)."""
        if image is not None:
            self.image_combo.setCurrentText(image.name)
        if labels is not None:
            self.labels_combo.setCurrentText(labels.name)

    def _on_image_changed(self) -> None:
        layer = self._layer(self.image_combo, Image)
        self._image_layer = layer
        self.session = None
        if layer is None:
            self.restore_button.setEnabled(False)
            return
        self.session = Session.for_image(layer.name, getattr(layer.source, "path", None))
        has_saved = self.session.has_labels() or self.session.has_model()
        self._update_buttons()
        if has_saved and layer.name not in self._offered_sessions:
            self._offered_sessions.add(layer.name)
            notify_info(f"An autosaved U-Net session exists for '{layer.name}' "
                      f"({self.session.folder}); click 'Restore autosaved session' in the Train "
                      "dock to continue it.")

    def _on_labels_changed(self) -> None:
        layer = self._layer(self.labels_combo, Labels)
        if not _same_layer(layer, self._labels_layer) and self.worker is None:
            self._follow_labels(layer)
        if layer is not None:
            # Layers made by the Annotate dock name their image.
            image_name = layer.metadata.get(IMAGE_KEY)
            if self.worker is None and image_name and self.image_combo.findText(image_name) >= 0:
                self.image_combo.setCurrentText(image_name)
            convention = layer.metadata.get(CONVENTION_KEY, "dense")
            if convention in CONVENTIONS:
                self.convention_combo.blockSignals(True)
                self.convention_combo.setCurrentText(convention)
                self.convention_combo.blockSignals(False)

    def _on_convention_changed(self, convention: str) -> None:
        layer = self._layer(self.labels_combo, Labels)
        if layer is not None:
            layer.metadata[CONVENTION_KEY] = convention  # remembered with the layer

    def _follow_labels(self, layer: Labels | None) -> None:
        old = self._labels_layer
        if old is not None:
            old.events.paint.disconnect(self._on_labels_edited)
            old.events.data.disconnect(self._on_labels_edited)
        self._labels_layer = layer
        if layer is not None:
            layer.events.paint.connect(self._on_labels_edited)
            layer.events.data.connect(self._on_labels_edited)

    # -- settings --------------------------------------------------------------------------------
    def _apply_preset(self) -> None:
        """Show the chosen preset's values in the setting widgets."""
        config = TrainConfig(preset=self.preset_combo.currentText())
        for name, widget in self.config_widgets.items():
            widget.value = getattr(config, name)
        augment = config.augment
        for name, box in self.augment_toggles.items():
            box.value = augment.has_intensity if name == "intensity" else getattr(augment, name)

    def config(self) -> TrainConfig:
        """The TrainConfig of the current settings; ``ValueError`` for impossible values."""
        preset = self.preset_combo.currentText()
        values = {name: widget.value for name, widget in self.config_widgets.items()}
        augment = TrainConfig(preset=preset).augment
        toggles = {name: bool(box.value) for name, box in self.augment_toggles.items()}
        intensity = toggles.pop("intensity")
        changes: dict[str, Any] = dict(toggles)
        if not intensity:
            changes.update(_NEUTRAL_INTENSITY)
        elif not augment.has_intensity:
            default = AugmentConfig()
            changes.update({k: getattr(default, k) for k in _NEUTRAL_INTENSITY})
        return TrainConfig(preset=preset, augment=dataclasses.replace(augment, **changes),
                           **values)

    def _show_device(self) -> None:
        try:
            device = resolve_device(self.config_widgets["device"].value)
            self.device_label.setText(f"device: {device.type}")
        except ValueError as err:
            self.device_label.setText(f"device: {err}")

    # -- start / stop ----------------------------------------------------------------------------
    def start(self) -> bool:
        """Check the inputs and start training; ``False`` (and a notification) if they are bad."""
        if self.worker is not None:
            return False
        try:
            job = self._prepare()
        except ValueError as err:
            notify_error(f"Cannot train: {err}")
            return False
        samples, config, spec, image, channel_axis, image_layer, labels_layer = job
        self._watch_main_window()  # docked by now, even in a viewer that was never shown
        self.samples = samples
        self.trainer = None
        self._run_labels_layer = labels_layer
        self._follow_labels(labels_layer)
        self.loss_plot.clear()
        self.loss_plot.set_total(config.iterations)
        self.progress.setRange(0, config.iterations)
        self.progress.setValue(0)
        self.device_label.setText(f"device: {resolve_device(config.device).type}")
        self.status_label.setText(f"starting ({spec.describe()}, {samples.n_annotated_pixels} "
                                  f"annotated pixels, {samples.n_samples} slice(s))")
        self._autosave_labels(labels_layer)
        self._offered_sessions.add(image_layer.name)  # its autosave is this run's own
        self._preview_box = _PreviewBox() if self.preview_check.value else None
        self._update_preview_request()
        if self._preview_box is not None:
            # Adding a layer is slow in napari: do it now, updates then only swap the data.
            region, _ = self._preview_box.get()
            shape = (region[1].stop - region[1].start, region[2].stop - region[2].start)
            self._show_preview(Preview(0, np.zeros(shape, np.float32), region))
            self.preview_updates = 0

        box = self._preview_box
        self.jobs.start(lambda: _training_job(spec, samples, config, image, channel_axis, box))
        self._update_buttons()
        return True

    def _prepare(self) -> tuple:
        image_layer = self._layer(self.image_combo, Image)
        labels_layer = self._layer(self.labels_combo, Labels)
        if image_layer is None:
            raise ValueError("choose an image layer (open or add an image first)")
        if labels_layer is None:
            raise ValueError("choose a training labels layer (make one in the Annotate dock)")
        return self._prepare_layers(image_layer, labels_layer)

    def _prepare_layers(self, image_layer: Any, labels_layer: Any) -> tuple:
        if not isinstance(image_layer, Image):
            raise ValueError(f"layer '{image_layer.name}' is not an image layer")
        if not isinstance(labels_layer, Labels):
            raise ValueError(f"layer '{labels_layer.name}' is not a labels layer")
        data = image_layer.data[0] if image_layer.multiscale else image_layer.data
        labels = np.array(labels_layer.data, copy=True)  # a snapshot: painting goes on
        image, channel_axis = arrange_image(data, image_layer.rgb, labels.shape)
        if not labels.any():
            raise ValueError(f"'{labels_layer.name}' has no annotation yet: paint background "
                             "and some objects first")
        convention = self.convention_combo.currentText()
        mode, num_classes = labels_mode(convention, labels,
                                        labels_layer.metadata.get(CLASS_NAMES_KEY))
        config = self.config()
        spec = self.model_choice.spec()
        resolve_device(config.device)  # an unavailable accelerator is refused here, not later
        samples = TrainingSet([image], [labels], convention=convention,
                              channel_axis=channel_axis, mode=mode, num_classes=num_classes)
        # Stored in the model's meta by Trainer.meta() (it reads these attributes if present).
        names = labels_layer.metadata.get(CLASS_NAMES_KEY)
        if mode == "semantic" and names and len(names) == num_classes:
            samples.class_names = list(names)
        # The model records one pixel size (x, in the layer's units), as the CLI does; a scale
        # of 1 is napari's "unknown".
        pixel_size = float(image_layer.scale[-1])
        samples.pixel_size = None if pixel_size == 1.0 else pixel_size
        return samples, config, spec, image, channel_axis, image_layer, labels_layer

    @property
    def worker(self) -> Any:
        """The napari worker of the running training, or None."""
        return self.jobs.worker

    def stop(self) -> None:
        """Ask the running training to stop after its current step (auto-saves the model)."""
        if self.worker is not None:
            self.status_label.setText("stopping after the current step...")
            self.jobs.stop()

    def _controls(self) -> list[Any]:
        """Everything disabled while a training runs."""
        return [self.start_button, self.image_combo, self.labels_combo, self.convention_combo,
                self.model_choice, self.preset_combo, self.preview_check,
                *self.config_widgets.values(), *self.augment_toggles.values()]

    def _update_buttons(self) -> None:
        running = self.worker is not None
        self.save_button.setEnabled(not running and self.trainer is not None)
        self.restore_button.setEnabled(not running and self.session is not None
                                       and (self.session.has_labels()
                                            or self.session.has_model()))

    # -- worker events (GUI thread) ---------------------------------------------------------------
    def _on_event(self, event: Any) -> None:
        if isinstance(event, Progress):
            self.progress.setMaximum(event.total)
            self.progress.setValue(event.step)
        elif isinstance(event, LossReport):
            self.loss_plot.add_loss(event.step, event.loss)
            self.status_label.setText(f"step {event.step}: loss {event.loss:.4g}")
        elif isinstance(event, ValidationReport):
            self.loss_plot.add_validation(event.step, event.metrics)
        elif isinstance(event, Preview):
            self._show_preview(event)
        elif isinstance(event, Message):
            (notify_warning if event.level == "warning" else notify_info)(event.text)
        elif isinstance(event, _Started):
            self.trainer = event.trainer
            self.device_label.setText(f"device: {event.trainer.device.type}")

    def _on_job_finished(self, status: str) -> None:
        if self._closed:
            return  # shutdown() has saved the model already
        self._preview_box = None
        trainer = self.trainer
        if trainer is not None and trainer.step > 0 and self.session is not None:
            self.status_label.setText(f"{status} at step {trainer.step}; auto-saving the model")
            self.session.ensure_folder()
            self._save_in_background(trainer, self.session.model_path, autosave=True)
        else:
            self.status_label.setText(status)
            self.job_finished.emit()
        self._update_buttons()

    # -- saving --------------------------------------------------------------------------------
    def save_model(self, path: str | Path) -> None:
        """Write the trained model to ``path`` (atomic, in the background); emits ``saved``."""
        if self.trainer is None:
            notify_error("Cannot save: train a model first")
            return
        if self.worker is not None:
            notify_error("Cannot save while training runs: press Stop first")
            return
        self._save_in_background(self.trainer, Path(path), autosave=False)

    def _save_dialog(self) -> None:
        start = str(self.session.folder / "model.pt") if self.session else "model.pt"
        path, _ = QFileDialog.getSaveFileName(self, "Save U-Net model", start,
                                              "Models (*.pt)")
        if path:
            self.save_model(path)

    def _save_in_background(self, trainer: Trainer, path: Path, autosave: bool) -> None:
        self._pending_saves += 1
        self._submit("save", trainer.save, path, extra=autosave)

    def _autosave_labels(self, layer: Labels) -> None:
        if self.session is None:
            return
        snapshot = np.array(layer.data, copy=True)
        convention = self.convention_combo.currentText()
        self._submit("labels", self.session.save_labels, snapshot, convention)

    def _submit(self, kind: str, fn: Any, *args: Any, extra: Any = None) -> None:
        """Run ``fn(*args)`` on the single background thread (in submission order); its result
        comes back to the GUI thread through ``_background_done``."""
        future: Future = self._executor.submit(fn, *args)

        def done(f: Future) -> None:
            err = f.exception()
            if not self._closed:
                self._background_done.emit((kind, err if err else f.result(), extra))

        future.add_done_callback(done)

    def _on_background_done(self, item: tuple[str, Any, Any]) -> None:
        kind, result, extra = item
        failed = isinstance(result, BaseException)
        if kind == "save":
            self._pending_saves -= 1
            if failed:
                notify_error(f"Saving the model failed: {result}")
            else:
                self.saved.emit(str(result))
                if extra:  # autosave: the next Start continues from these weights
                    self.model_choice.set_source("file", str(result))
                    self.status_label.setText(f"model auto-saved to {result}")
                else:
                    notify_info(f"Model saved to {result}")
            if extra:
                self.job_finished.emit()
        elif kind == "labels" and failed:
            notify_warning(f"Autosaving the training labels failed: {result}")
        elif kind == "update":
            if failed:
                notify_warning(f"The running training could not take the new labels: {result}")
            else:
                self.labels_updated.emit(int(result))

    # -- paint while it trains -----------------------------------------------------------------
    def _on_labels_edited(self, *_: Any) -> None:
        self._labels_timer.start()  # restart: one push after the painting pauses

    def _push_labels(self) -> None:
        layer = self._labels_layer
        if layer is None or self._closed:
            return
        snapshot = np.array(layer.data, copy=True)  # GUI thread: no painting in between
        samples = self.samples
        if (self.worker is not None and samples is not None
                and _same_layer(layer, self._run_labels_layer)):
            def update() -> int:
                samples.update(0, snapshot)
                return samples.n_annotated_pixels

            self._submit("update", update)
        if self.session is not None:
            self._submit("labels", self.session.save_labels, snapshot,
                         self.convention_combo.currentText())

    # -- live preview ----------------------------------------------------------------------------
    def _on_view_changed(self, *_: Any) -> None:
        if self._preview_box is not None:
            self._view_timer.start()

    def _update_preview_request(self) -> None:
        box = self._preview_box
        layer = self._run_labels_layer
        if box is None or layer is None or self._closed:
            return
        shape = layer.data.shape
        hw = shape[-2:]
        z = None
        if len(shape) == 3:
            z = int(np.clip(round(layer.world_to_data(self.viewer.dims.point)[0]), 0,
                            shape[0] - 1))
        center, extent = (hw[0] / 2, hw[1] / 2), hw
        displayed = tuple(self.viewer.dims.displayed)
        if self.viewer.dims.ndisplay == 2 and displayed[-2:] == (
                self.viewer.dims.ndim - 2, self.viewer.dims.ndim - 1):
            # The part of the slice on screen, in data pixels (napari keeps it per layer).
            corners = np.asarray(layer.corner_pixels, float)[:, -2:]
            if (corners[1] > corners[0]).all():
                center = tuple((corners[0] + corners[1]) / 2)
                extent = tuple(corners[1] - corners[0] + 1)
        rows, cols = preview_region(center, extent, hw)
        box.set((z, rows, cols))

    def _show_preview(self, event: Preview) -> None:
        probs = np.asarray(event.probabilities, np.float32)
        region = event.region
        image_layer = self._image_layer
        if region is None or image_layer is None:
            return
        _z, rows, cols = region
        scale = np.asarray(image_layer.scale[-2:], float)
        translate = np.asarray(image_layer.translate[-2:], float) + scale * (rows.start,
                                                                            cols.start)
        layer = self.preview_layer
        if layer is None or layer not in self.viewer.layers:
            layer = self.viewer.add_image(
                probs, name=f"{image_layer.name} U-Net preview", colormap="inferno",
                contrast_limits=(0.0, 1.0), opacity=0.6, blending="additive",
                scale=scale, translate=translate, metadata={ROLE_KEY: "preview"})
            self.preview_layer = layer
            # Painting continues on the training labels, not on the new layer.
            if self._run_labels_layer is not None:
                self.viewer.layers.selection.active = self._run_labels_layer
        else:
            layer.data = probs
            if not np.array_equal(layer.translate, translate):
                layer.translate = translate
        self.preview_updates += 1
        self.preview_region = region

    # -- session -----------------------------------------------------------------------------------
    def restore_session(self) -> None:
        """Bring back the autosaved labels (as a new layer) and model of the chosen image."""
        image_layer, session = self._image_layer, self.session
        if image_layer is None or session is None:
            notify_error("Cannot restore: choose an image layer first")
            return
        try:
            restored = session.load_labels()
        except ValueError as err:
            notify_error(str(err))
            return
        if restored is not None:
            labels, convention = restored
            name = f"{image_layer.name} training labels (restored)"
            layer = self.viewer.add_labels(
                labels, name=name, scale=image_layer.scale[-labels.ndim:],
                translate=image_layer.translate[-labels.ndim:],
                metadata={CONVENTION_KEY: convention})
            self.labels_combo.setCurrentText(layer.name)
            self.convention_combo.setCurrentText(convention)
        if session.has_model():
            self.model_choice.set_source("file", str(session.model_path))
        notify_info(f"Restored the U-Net session from {session.folder}")

    # -- closing -----------------------------------------------------------------------------------
    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt API)
        if event.type() == QEvent.Type.Close and not self._closed:
            self.shutdown()
        return False

    def event(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.ParentChange and not self._closed:
            if self.parent() is None:
                if self._was_docked:
                    self.shutdown()  # napari removes a dock by un-parenting its widget
            else:
                self._was_docked = True
                self._watch_main_window()
        return super().event(event)

    def showEvent(self, event: Any) -> None:  # noqa: N802 (Qt API)
        self._watch_main_window()
        super().showEvent(event)

    def _watch_main_window(self) -> None:
        """Closing the viewer does not close its docks: watch its main window's Close."""
        if self._main_window is not None or self._closed:
            return
        window = self.parentWidget()
        while window is not None and not isinstance(window, QMainWindow):
            window = window.parentWidget()
        if window is not None:
            window.installEventFilter(self)
            self._main_window = window

    _main_window: QMainWindow | None = None
    _was_docked = False

    def closeEvent(self, event: Any) -> None:  # noqa: N802 (Qt API)
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self, timeout_s: float = 30.0) -> None:
        """Stop the training (waiting up to ``timeout_s``), save its model, free memory."""
        if self._closed:
            return
        if self.worker is not None:
            self.jobs.stop()
            deadline = time.monotonic() + timeout_s
            while self.worker is not None and time.monotonic() < deadline:
                # The worker stops at its next yield (one step); its finished handler, run
                # by processEvents, auto-saves the model on the background thread.
                QApplication.processEvents()
                time.sleep(0.01)
        self._closed = True
        for timer in (self._labels_timer, self._view_timer):
            timer.stop()
        self.loss_plot.stop()
        try:
            self._disconnect_viewer()
        except (RuntimeError, AttributeError, ValueError):
            pass  # the viewer is already being torn down
        if self._main_window is not None:
            try:
                self._main_window.removeEventFilter(self)
            except RuntimeError:
                pass  # already deleted
            self._main_window = None
        self._executor.shutdown(wait=True)
        self.trainer = None
        self.samples = None
        self._release_accelerator_memory()

    @staticmethod
    def _release_accelerator_memory() -> None:
        import gc

        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        mps = getattr(torch, "mps", None)
        if mps is not None and getattr(torch.backends, "mps", None) is not None \
                and torch.backends.mps.is_available():
            mps.empty_cache()
