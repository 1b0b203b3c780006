"""Predict dock: segment an image layer with a model, in a worker, into a new Labels layer.

The dock checks the inputs in the GUI thread (so bad input starts nothing), then loads the model
and runs ``core.inference.prediction.predict`` in the docks' job process, or in a worker thread
while that
process starts (see ``_jobs.JobRunner`` and ``_jobs.DockProcess``; progress also shows in
napari's activity panel). Instances (or classes, for semantic models) go into a new Labels layer
named after the image, or into an existing non-training Labels layer after confirmation;
probability and uncertainty layers are optional. A stack can be predicted whole or only on the
slice on screen. The pixel size and axes come from the layer (``layer_info.layer_geometry``:
its scale, or the file napari opened it from). Settings are remembered between sessions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox
from napari.layers import Image, Labels
from qtpy.QtWidgets import QFormLayout, QPushButton, QVBoxLayout, QWidget

from ..core.events import Message, Progress
from . import AXES_KEY, PIXEL_SIZE_KEY, ROLE_KEY
from ._form import Field, Form, RunBlock, ask_yes_no, set_row_visible, setting_fields
from ._jobs import dock_process, notify_error, notify_info, notify_warning
from ._scroll import scroll_all_but
from .dock_jobs import PredictInput, diameter_job, place, prediction_input, prediction_job
from .layer_info import layer_geometry
from .model_choice import ModelChoice, remember_file
from .settings import Binding, DockSettings
from .tooltips import tooltip
from .training_layers import is_training_layer, replace_with_history

NEW_LAYER = "new layer"
SCOPES = ("whole stack", "current slice")
DOCK = "predict"


# -- the dock --------------------------------------------------------------------------------
def prediction_settings(exclude: tuple[str, ...] = ()) -> list[Field]:
    """The rows of ``PredictConfig``'s settings declared for the docks (Predict and Batch)."""
    from ..core.inference.config import PredictConfig

    return setting_fields(PredictConfig, exclude=exclude)


def config_values(form: Form) -> dict[str, Any]:
    """The ``PredictConfig`` keywords of a form's generated rows."""
    names = {field.name for field in prediction_settings()}
    return {name: value for name, value in form.values().items() if name in names}


#: The Predict dock chooses the channel from the image layer's own channels, above the rows.
LAYER_SETTINGS = ("channel",)


def predict_fields() -> tuple[Field, ...]:
    """The Predict dock's rows: the declared settings, then what only this dock has (names are
    tooltip and settings keys)."""
    return (
        *prediction_settings(exclude=LAYER_SETTINGS),
        Field("own_normalization", "", "bool", False, text="own normalisation percentiles",
              advanced=True),
        Field("norm_low", "low percentile", "float", 1.0, 0.0, 50.0, 0.5, advanced=True),
        Field("norm_high", "high percentile", "float", 99.8, 50.0, 100.0, 0.1, advanced=True),
        Field("scope", "predict", "choice", SCOPES[0], choices=SCOPES),
        Field("probabilities", "", "bool", False, text="probability layer"),
        Field("uncertainty_layer", "", "bool", False,
              text="uncertainty layer (where to paint next)"),
    )


class PredictWidget(QWidget):
    """Image + model -> instance labels (and optional probability / uncertainty layers).

    ``confirm(text) -> bool`` asks before an existing layer is overwritten (tests replace it).
    """

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.setObjectName("napari_unet_predict")
        self.confirm: Callable[[str], bool] = lambda text: ask_yes_no(self, text)
        self.image_combo = ComboBox(label="image", choices=self._image_choices, nullable=True)
        self.channel_combo = ComboBox(label="channel axis", choices=self._channel_choices)
        self.channel_pick = ComboBox(label="channel", choices=self._channel_pick_choices)
        self.output_combo = ComboBox(label="write into", choices=self._output_choices)
        for name, combo in (("image", self.image_combo), ("channel_axis", self.channel_combo),
                            ("channel", self.channel_pick), ("output", self.output_combo)):
            combo.native.setObjectName(name)
            combo.native.setToolTip(tooltip(DOCK, name))
        self.model_choice = ModelChoice(allow_new=False)
        self.form = Form(predict_fields(), DOCK)
        self.estimate_button = QPushButton("Estimate")
        self.estimate_button.setObjectName("estimate_diameter")
        self.estimate_button.setToolTip(tooltip(DOCK, "estimate_diameter"))
        self.estimate_button.clicked.connect(self.estimate_diameter)
        self.form.add_beside("object_diameter", self.estimate_button)
        self.block = RunBlock("Predict", DOCK)
        self.run_button, self.stop_button = self.block.run_button, self.block.stop_button
        self.progress, self.status = self.block.progress, self.block.status

        top = QFormLayout()
        top.addRow("image", self.image_combo.native)
        top.addRow("channel axis", self.channel_combo.native)
        top.addRow("channel", self.channel_pick.native)
        self._top = top
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.model_choice)
        layout.addLayout(self.form.layout)
        out = QFormLayout()
        out.addRow("write into", self.output_combo.native)
        layout.addLayout(out)
        layout.addWidget(self.block)

        self.settings = DockSettings(DOCK, self.form, extras={
            "model": Binding(self.model_choice.state, self.model_choice.set_state,
                             self.model_choice.state())})
        layout.addWidget(self.settings.reset_button())
        layout.addStretch(1)
        scroll_all_but(self, self.block)

        controls = [self.image_combo, self.channel_combo, self.channel_pick, self.model_choice,
                    *self.form.widgets.values(), self.output_combo, self.estimate_button]
        self.runner = self.block.runner(self._on_event, self._on_finished, controls,
                                        label="napari-unet: predict")
        self.runner.stop_on_destroy(self)
        dock_process().attach(self)  # prediction runs there once it is up (see _jobs)
        self._request: PredictInput | None = None
        self._target: Labels | None = None
        self._image: Image | None = None
        self._result: Any = None
        self._channel_axis: int | None = None
        self._job: str | None = None
        self._out_axes: str | None = None

        self.run_button.clicked.connect(self.run)
        self.image_combo.changed.connect(self._on_image)
        self.channel_combo.changed.connect(lambda *_: self._on_channel_axis())
        self.form["own_normalization"].toggled.connect(lambda *_: self._on_normalization())
        self.model_choice.changed.connect(self.settings.save)
        for name in ("inserted", "removed", "reordered"):
            getattr(self.viewer.layers.events, name).connect(self.reset_choices)
        self.settings.restore()
        self.reset_choices()
        self._on_normalization()
        self._on_channel_axis()

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

    def _channel_pick_choices(self, *_: Any) -> list[tuple[str, Any]]:
        layer = self.image_combo.value if hasattr(self, "image_combo") else None
        if layer is None:
            return [("all", None)]
        if layer.rgb:
            n = int(layer.data[0].shape[-1] if layer.multiscale else layer.data.shape[-1])
        else:
            axis = self.channel_combo.value if hasattr(self, "channel_combo") else None
            if axis is None:
                return [("all", None)]
            n = int(layer.level_shapes[0][axis])
        return [(f"all {n} channels", None)] + [(f"channel {c}", c) for c in range(n)]

    def _output_choices(self, *_: Any) -> list[tuple[str, Any]]:
        return [(NEW_LAYER, None)] + [
            (layer.name, layer) for layer in self.viewer.layers
            if isinstance(layer, Labels) and not is_training_layer(layer)]

    def reset_choices(self, *_: Any) -> None:
        for combo in (self.image_combo, self.channel_combo, self.channel_pick,
                      self.output_combo):
            combo.reset_choices()
        images = [c for c in self.image_combo.choices if c is not None]
        if self.image_combo.value is None and images:
            self.image_combo.value = images[0]

    def _on_image(self, *_: Any) -> None:
        self.channel_combo.reset_choices()
        layer = self.image_combo.value
        if layer is not None and not layer.rgb:
            axis = layer_geometry(layer).channel_axis  # from the file napari opened it from
            if axis is not None and axis in self.channel_combo.choices:
                self.channel_combo.value = axis
        self._on_channel_axis()

    def _on_channel_axis(self) -> None:
        self.channel_pick.reset_choices()
        set_row_visible(self._top, self.channel_pick.native, len(self.channel_pick.choices) > 1)

    def _on_normalization(self) -> None:
        own = bool(self.form.value("own_normalization"))
        for name in ("norm_low", "norm_high"):
            self.form[name].setEnabled(own)

    # -- running -----------------------------------------------------------------------------
    def normalization(self) -> dict[str, Any] | None:
        """The percentile spec chosen in the dock, or None to use the model's own."""
        from ..core.model.meta import check_normalization

        if not self.form.value("own_normalization"):
            return None
        return check_normalization({"method": "percentile", "low": self.form.value("norm_low"),
                                    "high": self.form.value("norm_high")})

    def _config(self, image: Image, request: PredictInput | None = None) -> Any:
        from ..core.inference.config import PredictConfig

        values = self.form.values()
        geometry = layer_geometry(image)
        kwargs: dict[str, Any] = dict(
            config_values(self.form), uncertainty=values["uncertainty_layer"],
            keep_probabilities=values["probabilities"], pixel_size=geometry.pixel_size)
        if geometry.z_spacing is not None:
            kwargs["z_spacing"] = geometry.z_spacing
        if request is not None:
            kwargs.update(channel_axis=request.channel_axis, axes=request.axes)
        return PredictConfig(**kwargs)

    def _slice_index(self, image: Image, channel_axis: int | None) -> tuple[int, ...]:
        point = image.world_to_data(self.viewer.dims.point)
        shape = image.level_shapes[0]
        lead = [i for i in range(image.ndim - 2) if i != channel_axis]
        return tuple(int(np.clip(round(point[i]), 0, shape[i] - 1)) for i in lead)

    def _request_for(self, image: Any) -> tuple[PredictInput, int | None]:
        """What to predict of ``image`` with the dock's choices, and the image's channel axis."""
        if image is None or not isinstance(image, Image):
            raise ValueError("choose an image layer to segment")
        channel_axis = None if image.rgb else self.channel_combo.value
        data = image.data[0] if image.multiscale else image.data
        slice_index = None
        if self.form.value("scope") == "current slice":
            slice_index = self._slice_index(image, channel_axis)
        request = prediction_input(data, channel_axis, image.rgb, slice_index,
                                   channel=self.channel_pick.value,
                                   axes=layer_geometry(image).axes)
        return request, channel_axis

    def run(self) -> Any:
        """Check the inputs and start the worker; returns it, or None (with a notification)."""
        if self.runner.running:
            notify_warning("a prediction is already running")
            return None
        self.block.clear()
        image = self.image_combo.value
        try:
            request, channel_axis = self._request_for(image)
            spec = self.model_choice.spec()
            config = self._config(image, request)
            normalization = self.normalization()
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
        if target is not None and not self.confirm(
                f"Overwrite {'this slice of ' if request.index else ''}{target.name!r} with "
                "the prediction? (Ctrl+Z undoes it)"):
            return None
        self._request, self._target, self._image, self._result = request, target, image, None
        self._channel_axis = channel_axis  # the image's, for the output's scale
        axes = (layer_geometry(image).axes or "").replace("C", "")
        self._out_axes = axes if len(axes) == len(request.out_shape) else None
        self._job = "predict"
        self._doing = f"predicting {image.name!r} with {spec.describe()}"
        self._notes: list[str] = []
        self.block.say(self._doing + "...")
        remember_file(spec)
        return self.runner.start(*dock_process().background(
            prediction_job, spec, request, config, normalization))

    def stop(self) -> None:
        """Stop the running prediction at its next tile batch/slice; nothing is written."""
        self.runner.stop()

    def estimate_diameter(self) -> Any:
        """Measure the typical object diameter of the image with the model (in the worker:
        ``core.inference.diameter.estimate_diameter`` predicts twice) and put it in the diameter
        box.
        Returns the worker, or None (with a notification)."""
        if self.runner.running:
            notify_warning("wait for the running job, or stop it")
            return None
        try:
            request, _ = self._request_for(self.image_combo.value)
            spec = self.model_choice.spec()
            normalization = self.normalization()
            options = {"tile_size": self.form.value("tile_size")}
        except ValueError as err:
            notify_error(err)
            return None
        self._job = "estimate"
        self.block.say("estimating the object diameter with the model...")
        return self.runner.start(*dock_process().background(
            diameter_job, spec, request, normalization, options))

    def _on_event(self, event: Any) -> None:
        from ..core.inference.config import PredictionResult

        if isinstance(event, Message):
            if event.level == "warning":
                notify_warning(event.text)
            elif self._job != "predict":
                self.block.say(event.text)
            elif not event.text.startswith("model: "):  # (named in the status already)
                # what the run does differently (a cost, the views, the channel) stays under
                # the progress line while it runs
                self._notes = [*self._notes[-1:], event.text]
                self.block.say("\n".join([self._doing + "...", *self._notes]))
        elif isinstance(event, Progress) and event.message and self._job == "predict":
            # where the run is ("block 3/81", "slice 2/24", "XZ slices 170/2048"): the line
            # that stays on screen while a long run goes on
            self.block.say("\n".join([f"{self._doing}: {event.message}", *self._notes]))
        elif isinstance(event, PredictionResult):
            self._result = event
        elif self._job == "estimate" and hasattr(event, "usable"):  # a DiameterEstimate
            self._result = event

    def _on_finished(self, status: str) -> None:
        result, self._result = self._result, None
        if self._job == "estimate":
            self._show_estimate(status, result)
        elif status == "done" and result is not None:
            self._write(result)
            self.block.say(f"done on {result.device} with {result.tile_size[0]}x"
                           f"{result.tile_size[1]} tiles")
        elif status == "stopped":
            self.block.say("stopped: nothing was written")
            notify_info("prediction stopped; nothing was written")
        else:
            self.block.say("failed (see the notification)")
        self._request = self._target = self._image = None
        self._job = None
        _free_accelerator_memory()

    def _show_estimate(self, status: str, estimate: Any) -> None:
        if status != "done" or estimate is None:
            self.block.say("diameter estimate " + ("stopped" if status == "stopped" else
                                                   "failed (see the notification)"))
            return
        if estimate.usable and estimate.diameter:
            self.form.set_value("object_diameter", round(float(estimate.diameter), 1))
        self.block.say(estimate.note)

    def _labels_metadata(self) -> dict[str, Any]:
        # the labels writer reads the axes here (e.g. "ZYX"), so a saved file keeps its layout
        meta: dict[str, Any] = {ROLE_KEY: "prediction"}
        if self._out_axes:
            meta[AXES_KEY] = self._out_axes
        sizes = self._file_pixel_sizes()
        if sizes is not None:
            meta[PIXEL_SIZE_KEY] = sizes
        return meta

    def _file_pixel_sizes(self) -> tuple[float, ...] | None:
        """µm per Z/Y/X axis of the labels when the pixel size comes from the image's file
        (the layer's scale, when set, already reaches the writer)."""
        geometry = layer_geometry(self._image) if self._image is not None else None
        if geometry is None or geometry.origin != "file" or not geometry.pixel_size:
            return None
        sizes = []
        for axis in (a for a in (self._out_axes or "YX") if a in "ZYX"):
            if axis == "Z":
                if geometry.z_spacing is None:
                    return None
                sizes.append(float(geometry.z_spacing * geometry.pixel_size))
            else:
                sizes.append(float(geometry.pixel_size))
        return tuple(sizes)

    def _write(self, result: Any) -> None:
        request, image = self._request, self._image
        assert request is not None and image is not None
        labels = result.instances if result.instances is not None else result.semantic
        scale, translate = _spatial(image, self._channel_axis)
        if self._target is not None and self._target in self.viewer.layers:
            # one undoable edit: Ctrl+Z brings the layer's previous labels back
            replace_with_history(self._target, np.asarray(labels), request.index)
        else:
            self.viewer.add_labels(place(labels, request), name=f"{image.name} prediction",
                                   scale=scale, translate=translate,
                                   metadata=self._labels_metadata())
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
