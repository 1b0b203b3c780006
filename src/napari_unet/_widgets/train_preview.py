"""Live preview of the running training: which region to predict, and showing the result.

The GUI thread keeps a small request in a :class:`PreviewBox` (which slice, which <= 512 x 512
region of it is in view; updated when the view pauses moving); the training job reads it and
hands that crop to ``Trainer.events(preview=...)``. The probabilities come back as
``Preview`` events and replace the data of ONE preview layer in place (adding a napari layer is
slow, so it is added once when the run starts).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from qtpy.QtCore import QTimer

from ..core.events import Preview
from ..core.training.trainer import MAX_PREVIEW  # the largest crop the trainer predicts
from . import ROLE_KEY

MIN_PREVIEW = 64
VIEW_DEBOUNCE_MS = 300

#: ``(z or None, rows, cols)`` of the preview in the image's data pixels.
Region = tuple[int | None, slice, slice]


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


class PreviewBox:
    """The latest preview request of the GUI thread, with a version the job compares."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._region: Region | None = None
        self.version = 0

    def set(self, region: Region | None) -> None:
        with self._lock:
            if region != self._region:
                self._region = region
                self.version += 1

    def get(self) -> tuple[Region | None, int]:
        with self._lock:
            return self._region, self.version


def camera(viewer: Any) -> Any:
    """The viewer's camera (napari 0.9 moved it to ``viewer.scene``)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera


class LivePreview:
    """Follows the view and shows ``Preview`` events of one training run.

    Parameters
    ----------
    viewer : napari.Viewer
    parent : QObject
        Parent of the debounce timer (the dock).

    Notes
    -----
    :meth:`begin` starts following the view for a run and returns the box the job reads;
    :meth:`end` stops following. ``updates`` counts shown previews, ``region`` is the last one.
    """

    def __init__(self, viewer: Any, parent: Any) -> None:
        self.viewer = viewer
        self.layer: Any = None
        self.updates = 0
        self.region: Region | None = None
        self.box: PreviewBox | None = None
        self._image_layer: Any = None
        self._labels_layer: Any = None
        self._timer = QTimer(parent)
        self._timer.setSingleShot(True)
        self._timer.setInterval(VIEW_DEBOUNCE_MS)
        self._timer.timeout.connect(self.update_request)
        self._connected = False

    # -- a run -----------------------------------------------------------------------------
    def begin(self, image_layer: Any, labels_layer: Any) -> PreviewBox:
        """Follow the view for a run on these layers; add the (empty) preview layer now."""
        self._image_layer, self._labels_layer = image_layer, labels_layer
        self.box = PreviewBox()
        self._connect()
        self.update_request()
        region, _ = self.box.get()
        shape = (region[1].stop - region[1].start, region[2].stop - region[2].start)
        self.show(Preview(0, np.zeros(shape, np.float32), region))
        self.updates = 0
        return self.box

    def end(self) -> None:
        """Stop following the view (the run is over); a layer that never got a preview (the
        run failed or stopped before) is removed again."""
        self._timer.stop()
        self._disconnect()
        if self.box is not None and self.updates == 0 and self.layer is not None:
            try:
                if self.layer in self.viewer.layers:
                    self.viewer.layers.remove(self.layer)
            except (RuntimeError, ValueError, KeyError):
                pass  # the viewer is being torn down
            self.layer = None
        self.box = None

    def forget_deleted_layer(self) -> None:
        """The user deleted the preview layer: a new one appears with the next update."""
        if self.layer is not None and self.layer not in self.viewer.layers:
            self.layer = None

    # -- view -> request ------------------------------------------------------------------------
    def _connect(self) -> None:
        if not self._connected:
            cam = camera(self.viewer)
            cam.events.center.connect(self._on_view_changed)
            cam.events.zoom.connect(self._on_view_changed)
            self.viewer.dims.events.current_step.connect(self._on_view_changed)
            self._connected = True

    def _disconnect(self) -> None:
        if self._connected:
            self._connected = False
            try:
                cam = camera(self.viewer)
                cam.events.center.disconnect(self._on_view_changed)
                cam.events.zoom.disconnect(self._on_view_changed)
                self.viewer.dims.events.current_step.disconnect(self._on_view_changed)
            except (RuntimeError, AttributeError, ValueError):
                pass  # the viewer is being torn down

    def _on_view_changed(self, *_: Any) -> None:
        self._timer.start()  # restart: one request when the view pauses

    def update_request(self) -> None:
        """Put the region in view (current slice, visible part) into the box."""
        box, layer = self.box, self._labels_layer
        if box is None or layer is None:
            return
        shape = layer.data.shape
        hw = shape[-2:]
        z = None
        if len(shape) == 3:
            z = int(np.clip(round(layer.world_to_data(self.viewer.dims.point)[0]), 0,
                            shape[0] - 1))
        center, extent = (hw[0] / 2, hw[1] / 2), hw
        dims = self.viewer.dims
        if dims.ndisplay == 2 and tuple(dims.displayed)[-2:] == (dims.ndim - 2, dims.ndim - 1):
            # The part of the slice on screen, in data pixels (napari keeps it per layer).
            corners = np.asarray(layer.corner_pixels, float)[:, -2:]
            if (corners[1] > corners[0]).all():
                center = tuple((corners[0] + corners[1]) / 2)
                extent = tuple(corners[1] - corners[0] + 1)
        rows, cols = preview_region(center, extent, hw)
        box.set((z, rows, cols))

    # -- event -> layer ---------------------------------------------------------------------------
    def show(self, event: Preview) -> None:
        """Show the probabilities of ``event`` (GUI thread; swaps the layer's data in place)."""
        region, image_layer = event.region, self._image_layer
        if region is None or image_layer is None:
            return
        probs = np.asarray(event.probabilities, np.float32)
        _z, rows, cols = region
        scale = np.asarray(image_layer.scale[-2:], float)
        translate = (np.asarray(image_layer.translate[-2:], float)
                     + scale * (rows.start, cols.start))
        layer = self.layer
        if layer is None or layer not in self.viewer.layers:
            layer = self.viewer.add_image(
                probs, name=f"{image_layer.name} U-Net preview", colormap="inferno",
                contrast_limits=(0.0, 1.0), opacity=0.6, blending="additive",
                scale=scale, translate=translate, metadata={ROLE_KEY: "preview"})
            self.layer = layer
            # Painting continues on the training labels, not on the new layer.
            if self._labels_layer is not None:
                self.viewer.layers.selection.active = self._labels_layer
        else:
            layer.data = probs
            if not np.array_equal(layer.translate, translate):
                layer.translate = translate
        self.updates += 1
        self.region = region


__all__ = ["MAX_PREVIEW", "LivePreview", "PreviewBox", "Region", "camera", "preview_region"]
