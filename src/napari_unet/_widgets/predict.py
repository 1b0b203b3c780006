"""Predict dock: segment an image layer with a model, in a worker, into a new Labels layer.

The dock checks the inputs in the GUI thread (so bad input starts nothing), then loads the model
and runs ``core.tiling.predict`` in napari's ``thread_worker`` (see ``_jobs.JobRunner``).
Instances (or classes, for semantic models) go into a new Labels layer named after the image,
or into an existing non-training Labels layer after confirmation; probability and uncertainty
layers are optional. A stack can be predicted whole or only on the slice on screen.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox
from napari.layers import Image, Labels
from qtpy.QtWidgets import (
    QCheckBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..core.events import Message, Progress
from . import ROLE_KEY
from ._jobs import JobRunner, notify_error, notify_info, notify_warning
from .annotate import is_training_layer
from .model_choice import ModelChoice, ModelSpec

NEW_LAYER = "new layer"
SCOPES = ("whole stack", "current slice")


# -- pure helpers ----------------------------------------------------------------------------
@dataclass(frozen=True)
class PredictInput:
    """What one prediction run reads: the array handed to the core and where results go.

    Attributes
    ----------
    array : array-like
        ``(H, W)``, ``(Z, H, W)`` or with a channel axis (``channel_axis``).
    channel_axis : int or None
        Channel axis of ``array``.
    in_channels : int
        Channels the model must take.
    index : tuple of int
        Leading indices of the slice when only the slice on screen is predicted (else ``()``).
    out_shape : tuple of int
        Shape of the full labels layer (the image without channels).
    """

    array: Any
    channel_axis: int | None
    in_channels: int
    index: tuple[int, ...]
    out_shape: tuple[int, ...]


def prediction_input(
    data: Any, channel_axis: int | None, rgb: bool, slice_index: tuple[int, ...] | None
) -> PredictInput:
    """Select what to predict from an image layer's data.

    Parameters
    ----------
    data : array-like
        The layer data (full resolution), RGB images with colour last.
    channel_axis : int or None
        Axis of ``data`` holding channels (not for RGB).
    rgb : bool
        The last axis holds colour samples.
    slice_index : tuple of int or None
        Indices along the leading non-channel axes of the slice to predict (None: everything).

    Returns
    -------
    PredictInput
    """
    shape = tuple(data.shape)
    if rgb:
        channel_axis = len(shape) - 1
    if channel_axis is not None:
        channel_axis %= len(shape)
    spatial = [i for i in range(len(shape)) if i != channel_axis]
    out_shape = tuple(shape[i] for i in spatial)
    if len(out_shape) < 2:
        raise ValueError(f"the image (shape {shape}) has no 2D plane to segment")
    if len(out_shape) > 3 and not slice_index:
        raise ValueError(f"the image has {len(out_shape)} non-channel axes {out_shape}; "
                         "predict the current slice, or a 2D/3D image")
    in_channels = shape[channel_axis] if channel_axis is not None else 1
    lead = spatial[:-2]
    if not slice_index or not lead:
        return PredictInput(data, channel_axis, in_channels, (), out_shape)
    if len(slice_index) != len(lead):
        raise ValueError(f"slice index {slice_index} does not fit axes {lead}")
    full: list[Any] = [slice(None)] * len(shape)
    for axis, i in zip(lead, slice_index, strict=True):
        full[axis] = int(i)
    array = data[tuple(full)]
    new_channel = None
    if channel_axis is not None:
        new_channel = channel_axis - sum(1 for a in lead if a < channel_axis)
    return PredictInput(array, new_channel, in_channels, tuple(int(i) for i in slice_index),
                        out_shape)


def prediction_job(spec: ModelSpec, request: PredictInput, config: Any) -> Iterator[Any]:
    """The worker's generator: load the model, then yield the core's prediction events."""
    from ..core.tiling import predict

    model, meta = spec.build(request.in_channels, num_classes=None, device="cpu")
    yield Message(f"model: {spec.describe()}")
    yield from predict(model, request.array, config, meta)


def place(result: Any, request: PredictInput, dtype: Any = np.int32) -> np.ndarray:
    """Result of a slice prediction placed into a zero array of the full layer shape."""
    result = np.asarray(result)
    if not request.index:
        return result.astype(dtype, copy=False)
    out = np.zeros(request.out_shape, dtype)
    out[request.index] = result
    return out


# -- the dock --------------------------------------------------------------------------------
class PredictWidget(QWidget):
    """Image + model -> instance labels (and optional probability / uncertainty layers)."""

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.setObjectName("napari_unet_predict")
        self.image_combo = ComboBox(label="image", choices=self._image_choices, nullable=True)
        self.channel_combo = ComboBox(label="channel axis", choices=self._channel_choices)
        self.model_choice = ModelChoice(allow_new=False)
        self.tile_spin = QSpinBox()
        self.tile_spin.setRange(0, 4096)
        self.tile_spin.setSingleStep(16)
        self.tile_spin.setSpecialValueText("auto")
        self.tile_spin.setToolTip("input tile size in pixels; auto fits the memory")
        self.tta_check = QCheckBox("test-time augmentation (8 flips/rotations)")
        self.split_check = QCheckBox("split touching objects by shape (watershed)")
        self.split_check.setChecked(True)
        self.split_check.setToolTip("cuts merged round objects at their necks; switch off for "
                                    "long or irregular objects")
        self.scope_combo = ComboBox(label="predict", choices=list(SCOPES), value=SCOPES[0])
        self.output_combo = ComboBox(label="write into", choices=self._output_choices)
        self.probability_check = QCheckBox("probability layer")
        self.uncertainty_check = QCheckBox("uncertainty layer (where to paint next)")
        self.run_button = QPushButton("Predict")
        self.stop_button = QPushButton("Stop")
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status = QLabel("")
        self.status.setWordWrap(True)

        layout = QVBoxLayout(self)
        form = QFormLayout()
        form.addRow("image", self.image_combo.native)
        form.addRow("channel axis", self.channel_combo.native)
        layout.addLayout(form)
        layout.addWidget(self.model_choice)
        form = QFormLayout()
        form.addRow("tile size", self.tile_spin)
        form.addRow(self.tta_check)
        form.addRow(self.split_check)
        form.addRow("predict", self.scope_combo.native)
        form.addRow("write into", self.output_combo.native)
        form.addRow(self.probability_check)
        form.addRow(self.uncertainty_check)
        layout.addLayout(form)
        row = QHBoxLayout()
        row.addWidget(self.run_button)
        row.addWidget(self.stop_button)
        layout.addLayout(row)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addStretch(1)

        controls = [self.run_button, self.image_combo, self.channel_combo, self.model_choice,
                    self.tile_spin, self.tta_check, self.split_check, self.scope_combo,
                    self.output_combo,
                    self.probability_check, self.uncertainty_check]
        self.runner = JobRunner(self._on_event, self._on_finished, controls, self.stop_button)
        self.runner.stop_on_destroy(self)
        self._request: PredictInput | None = None
        self._target: Labels | None = None
        self._image: Image | None = None
        self._result: Any = None
        self._channel_axis: int | None = None

        self.run_button.clicked.connect(self.run)
        self.stop_button.clicked.connect(self.stop)
        self.image_combo.changed.connect(lambda *_: self.channel_combo.reset_choices())
        for name in ("inserted", "removed", "reordered"):
            getattr(self.viewer.layers.events, name).connect(self.reset_choices)
        self.reset_choices()

    # -- choices -----------------------------------------------------------------------------
    def _image_choices(self, *_: Any) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in self.viewer.layers
                if isinstance(layer, Image) and layer.metadata.get(ROLE_KEY) is None]

    def _channel_choices(self, *_: Any) -> list[tuple[str, Any]]:
        choices: list[tuple[str, Any]] = [("none", None)]
        layer = self.image_combo.value if hasattr(self, "image_combo") else None
        if layer is not None and not layer.rgb and layer.ndim >= 3:
            shape = layer.level_shapes[0]
            choices += [(f"axis {i} ({shape[i]})", i) for i in range(layer.ndim - 2)]
        return choices

    def _output_choices(self, *_: Any) -> list[tuple[str, Any]]:
        return [(NEW_LAYER, None)] + [
            (layer.name, layer) for layer in self.viewer.layers
            if isinstance(layer, Labels) and not is_training_layer(layer)]

    def reset_choices(self, *_: Any) -> None:
        for combo in (self.image_combo, self.channel_combo, self.output_combo):
            combo.reset_choices()
        images = [c for c in self.image_combo.choices if c is not None]
        if self.image_combo.value is None and images:
            self.image_combo.value = images[0]

    # -- running -----------------------------------------------------------------------------
    def _config(self, image: Image) -> Any:
        from ..core.tiling import PredictConfig

        pixel_size = (image.metadata.get("pixel_size") or (None,))[-1]
        tile = self.tile_spin.value() or None
        return PredictConfig(tile_size=tile, tta=self.tta_check.isChecked(),
                             split_touching=self.split_check.isChecked(),
                             uncertainty=self.uncertainty_check.isChecked(),
                             keep_probabilities=self.probability_check.isChecked(),
                             pixel_size=pixel_size, device="auto")

    def _slice_index(self, image: Image, channel_axis: int | None) -> tuple[int, ...]:
        point = image.world_to_data(self.viewer.dims.point)
        shape = image.level_shapes[0]
        lead = [i for i in range(image.ndim - 2) if i != channel_axis]
        return tuple(int(np.clip(round(point[i]), 0, shape[i] - 1)) for i in lead)

    def run(self) -> Any:
        """Check the inputs and start the worker; returns it, or None (with a notification)."""
        if self.runner.running:
            notify_warning("a prediction is already running")
            return None
        image = self.image_combo.value
        try:
            if image is None or not isinstance(image, Image):
                raise ValueError("choose an image layer to segment")
            spec = self.model_choice.spec()
            channel_axis = None if image.rgb else self.channel_combo.value
            data = image.data[0] if image.multiscale else image.data
            slice_index = None
            if self.scope_combo.value == "current slice":
                slice_index = self._slice_index(image, channel_axis)
            request = prediction_input(data, channel_axis, image.rgb, slice_index)
            config = self._config(image)
            target = self.output_combo.value
            if target is not None:
                if is_training_layer(target):
                    raise ValueError(f"{target.name!r} holds training labels; predictions are "
                                     "never written into them")
                if tuple(target.data.shape) != request.out_shape:
                    raise ValueError(f"labels layer {target.name!r} has shape "
                                     f"{tuple(target.data.shape)} but the image needs "
                                     f"{request.out_shape}")
        except ValueError as err:
            notify_error(err)
            return None
        if target is not None and not self._confirm(
                f"Overwrite {'this slice of ' if request.index else ''}{target.name!r} with "
                "the prediction?"):
            return None
        self._request, self._target, self._image, self._result = request, target, image, None
        self._channel_axis = channel_axis
        self.progress.setRange(0, 0)  # busy until the first progress event
        self.status.setText(f"predicting {image.name!r} with {spec.describe()}...")
        return self.runner.start(lambda: prediction_job(spec, request, config))

    def stop(self) -> None:
        """Stop the running prediction at its next tile batch/slice; nothing is written."""
        self.runner.stop()

    def _on_event(self, event: Any) -> None:
        from ..core.tiling import PredictionResult

        if isinstance(event, Progress):
            self.progress.setRange(0, max(1, event.total))
            self.progress.setValue(event.step)
        elif isinstance(event, Message):
            if event.level == "warning":
                notify_warning(event.text)
            else:
                self.status.setText(event.text)
        elif isinstance(event, PredictionResult):
            self._result = event

    def _on_finished(self, status: str) -> None:
        result, self._result = self._result, None
        self.progress.setRange(0, 1)
        self.progress.setValue(1 if status == "done" else 0)
        if status == "done" and result is not None:
            self._write(result)
            self.status.setText(f"done on {result.device} with {result.tile_size[0]}x"
                                f"{result.tile_size[1]} tiles")
        elif status == "stopped":
            self.status.setText("stopped: nothing was written")
            notify_info("prediction stopped; nothing was written")
        else:
            self.status.setText("failed (see the notification)")
        self._request = self._target = self._image = None
        _free_accelerator_memory()

    def _write(self, result: Any) -> None:
        request, image = self._request, self._image
        assert request is not None and image is not None
        labels = result.instances if result.instances is not None else result.semantic
        scale, translate = _spatial(image, self._channel_axis)
        if self._target is not None and self._target in self.viewer.layers:
            target = self._target
            if request.index:
                data = np.array(target.data, copy=True)
                data[request.index] = np.asarray(labels)
                target.data = data
            else:
                target.data = np.asarray(labels).astype(target.data.dtype, copy=False)
        else:
            self.viewer.add_labels(place(labels, request), name=f"{image.name} prediction",
                                   scale=scale, translate=translate,
                                   metadata={ROLE_KEY: "prediction"})
        if result.probabilities is not None:
            probs = np.asarray(result.probabilities)
            if probs.shape[0] == 2:
                self.viewer.add_image(place(probs[1], request, np.float32),
                                      name=f"{image.name} probability", colormap="green",
                                      blending="additive", contrast_limits=(0, 1),
                                      scale=scale, translate=translate,
                                      metadata={ROLE_KEY: "probability"})
            else:
                for k in range(1, probs.shape[0]):
                    self.viewer.add_image(place(probs[k], request, np.float32),
                                          name=f"{image.name} probability class {k}",
                                          blending="additive", contrast_limits=(0, 1),
                                          scale=scale, translate=translate,
                                          metadata={ROLE_KEY: "probability"})
        if result.uncertainty is not None:
            self.viewer.add_image(place(result.uncertainty, request, np.float32),
                                  name=f"{image.name} uncertainty", colormap="magma",
                                  blending="additive", contrast_limits=(0, 1), scale=scale,
                                  translate=translate, metadata={ROLE_KEY: "uncertainty"})

    def _confirm(self, text: str) -> bool:
        answer = QMessageBox.question(self, "napari-unet", text,
                                      QMessageBox.Yes | QMessageBox.No, QMessageBox.No)
        return answer == QMessageBox.Yes


def _spatial(image: Image, channel_axis: int | None) -> tuple[tuple[float, ...],
                                                             tuple[float, ...]]:
    """Scale and translate of the image layer without its channel axis (RGB has none there)."""
    keep = [i for i in range(image.ndim) if i != channel_axis]
    return (tuple(float(image.scale[i]) for i in keep),
            tuple(float(image.translate[i]) for i in keep))


def _free_accelerator_memory() -> None:
    import gc
    import sys

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
