"""Training labels layers: what marks one, its colours, its counts, and undoable writes.

A training layer holds painted labels in a sparse convention of ``core.data``: ``"sparse"``
(0 = not annotated, 1 = background, 2, 3, ... = one id per object) or ``"semantic-sparse"``
(0 = not annotated, class c painted as c + 1). The Annotate dock makes and paints them; the
Predict dock never writes into them and, like Annotate's "use prediction", writes labels
through napari's undo history (:func:`replace_with_history`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.layers import Labels
from napari.utils.colormaps import DirectLabelColormap, label_colormap

from . import CONVENTION_KEY, GROUND_TRUTH, ROLE_KEY

BACKGROUND = 1  # label of painted background in both sparse conventions
BACKGROUND_RGBA = (0.55, 0.55, 0.55, 0.35)  # neutral grey, see-through
SEMANTIC_IGNORE = 255


def is_training_layer(layer: Any) -> bool:
    """Layers made for painting training labels (never overwritten by predictions)."""
    meta = getattr(layer, "metadata", {}) or {}
    role = meta.get(ROLE_KEY)
    return role == "training" or (CONVENTION_KEY in meta and role != "prediction")


def is_reference_layer(layer: Any) -> bool:
    """Reference labels (the samples' ground truth): listed by the docks, never preselected
    as training labels or as a prediction to correct."""
    return (getattr(layer, "metadata", {}) or {}).get(ROLE_KEY) == GROUND_TRUTH


def training_geometry(
    shape: tuple[int, ...], scale: tuple[float, ...], translate: tuple[float, ...],
    channel_axis: int | None = None,
) -> tuple[tuple[int, ...], tuple[float, ...], tuple[float, ...]]:
    """Shape, scale and translate of a labels layer over an image without its channel axis.

    ``shape`` is the image data's shape (an RGB image's colour axis already removed) and
    ``scale``/``translate`` have one value per axis of ``shape``.
    """
    if channel_axis is None:
        return tuple(shape), tuple(scale), tuple(translate)
    ax = channel_axis % len(shape)
    keep = [i for i in range(len(shape)) if i != ax]
    if len(keep) < 2:
        raise ValueError(f"an image of shape {shape} has no 2D plane besides axis {ax}")
    return (tuple(shape[i] for i in keep), tuple(scale[i] for i in keep),
            tuple(translate[i] for i in keep))


def next_free_id(labels: Any) -> int:
    """The next object id of a sparse layer: one above the largest id, at least 2."""
    top = int(np.max(labels)) if np.size(labels) else 0
    return max(top + 1, BACKGROUND + 1)


def annotation_counts(labels: Any, mode: str = "instances") -> dict[str, int]:
    """Counts of a training layer: annotated/background pixels and objects (or classes used).

    Returns ``{"annotated": n, "background": n, "objects": n}``; in classes mode "objects" is
    the number of non-background classes painted.
    """
    arr = np.asarray(labels)
    ids, counts = np.unique(arr, return_counts=True)
    by_id = dict(zip(ids.tolist(), counts.tolist(), strict=True))
    annotated = int(arr.size - by_id.get(0, 0))
    background = int(by_id.get(BACKGROUND, 0))
    objects = int(sum(1 for i in by_id if i > BACKGROUND))
    return {"annotated": annotated, "background": background, "objects": objects}


def prediction_to_training(prediction: Any, mode: str = "instances") -> np.ndarray:
    """A prediction in the training layer's convention.

    Instances (``dense``: 0 = background, k = object) -> ``sparse``: background -> 1, object
    k -> k + 1. Classes (``semantic``: class c, 255 = ignore) -> ``semantic-sparse``: c -> c + 1,
    255 -> 0 (not annotated). Every pixel of a prediction becomes annotated.
    """
    pred = np.asarray(prediction)
    if not np.issubdtype(pred.dtype, np.integer) and pred.dtype != bool:
        raise ValueError(f"a prediction must hold integer labels, got {pred.dtype}")
    if pred.size and pred.min() < 0:
        raise ValueError("a prediction cannot hold negative labels")
    out = pred.astype(np.int32) + 1
    if mode == "semantic":
        out[pred == SEMANTIC_IGNORE] = 0
    return out


def training_colormap(max_id: int) -> DirectLabelColormap:
    """Background (1) in see-through grey; objects in napari's usual label colours.

    Colours are listed up to well above ``max_id``; ids beyond that use a fallback colour
    until the map is rebuilt (the dock rebuilds it when "new object" passes the end).
    """
    n = max(256, 1 << int(max_id + 64).bit_length())
    cyclic = label_colormap(49).colors[1:]
    colors: dict[int | None, Any] = {None: (1.0, 0.0, 1.0, 1.0), 0: (0.0, 0.0, 0.0, 0.0),
                                     BACKGROUND: BACKGROUND_RGBA}
    for i in range(BACKGROUND + 1, n):
        colors[i] = tuple(cyclic[(i - 2) % len(cyclic)])
    return DirectLabelColormap(color_dict=colors)


def colormap_covers(cmap: Any, label: int) -> bool:
    """Whether ``cmap`` is a training colormap that lists a colour for ``label``."""
    return isinstance(cmap, DirectLabelColormap) and label in cmap.color_dict


def replace_with_history(layer: Labels, new: np.ndarray, index: tuple[int, ...] = ()) -> int:
    """Write ``new`` into ``layer.data`` (or its slice ``index``) as ONE undoable edit.

    Only the changed pixels are recorded (napari's ``data_setitem`` inside ``block_history``),
    so Ctrl+Z restores the previous labels exactly and Ctrl+Shift+Z redoes the copy. Returns
    the number of pixels changed. ``ValueError`` (nothing written) when the values do not fit
    the layer's data type.
    """
    data = layer.data
    region = np.asarray(data[index] if index else data)
    new = np.asarray(new)
    if new.shape != region.shape:
        raise ValueError(f"cannot write labels of shape {new.shape} into {region.shape}")
    dtype = np.dtype(data.dtype)
    if new.size and np.issubdtype(dtype, np.integer) and (
            new.max() > np.iinfo(dtype).max or new.min() < np.iinfo(dtype).min):
        raise ValueError(f"labels up to {int(new.max())} do not fit the {dtype} data of "
                         f"{layer.name!r}")
    changed = np.nonzero(region != new)
    if not changed[0].size:
        return 0
    indices = tuple(np.full(changed[0].shape, i, np.intp) for i in index) + changed
    with layer.block_history():
        layer.data_setitem(indices, new[changed].astype(dtype, copy=False))
    return int(changed[0].size)


__all__ = ["BACKGROUND", "BACKGROUND_RGBA", "SEMANTIC_IGNORE", "annotation_counts",
           "colormap_covers", "is_training_layer", "next_free_id", "prediction_to_training",
           "replace_with_history", "training_colormap", "training_geometry"]
