"""Label conventions: every way a user may annotate, converted once into what the core uses.

- instance mode: instances int32 ``(H, W)`` (0 = background, ids >= 1 objects) and an ignore mask
  bool ``(H, W)`` (True = not annotated);
- semantic mode: a class map int32 ``(H, W)`` (0 = background) and the same kind of ignore mask.

Conventions (see ``docs/architecture.md``): ``sparse`` (0 = not annotated, 1 = background,
2.. = objects), ``dense`` (0 = background, ids >= 1 objects), ``binary`` (0 / non-zero; objects are
connected components, so touching objects merge into one), ``semantic`` (ids are classes,
0 = background, 255 = ignore) and ``semantic-sparse`` (0 = not annotated, class c painted as c + 1).
"""

from __future__ import annotations

import numpy as np
from skimage.measure import label as connected_components

INSTANCE_CONVENTIONS = ("sparse", "dense", "binary")
SEMANTIC_CONVENTIONS = ("semantic", "semantic-sparse")
CONVENTIONS = INSTANCE_CONVENTIONS + SEMANTIC_CONVENTIONS
SEMANTIC_IGNORE = 255

_INT32_MAX = np.iinfo(np.int32).max


def labels_to_instances(labels: np.ndarray, convention: str) -> tuple[np.ndarray, np.ndarray]:
    """Convert a 2D label image in one of the instance conventions.

    Parameters
    ----------
    labels : (H, W) integer or bool array
    convention : {"sparse", "dense", "binary"}
        ``sparse``: 0 = not annotated, 1 = background, k >= 2 = object k - 1.
        ``dense``: 0 = background, ids >= 1 objects, nothing ignored.
        ``binary``: non-zero = foreground; objects are the 8-connected components, so touching
        objects merge into one (use ``dense`` labels to keep them apart).

    Returns
    -------
    instances : (H, W) int32
        0 = background, ids >= 1 objects.
    ignore : (H, W) bool
        True where not annotated.
    """
    if convention not in INSTANCE_CONVENTIONS:
        hint = " (use labels_to_classes for semantic labels)" if convention in CONVENTIONS else ""
        raise ValueError(
            f"instance label convention must be one of {INSTANCE_CONVENTIONS}, "
            f"got {convention!r}{hint}"
        )
    labels = check_labels(labels)
    if convention == "sparse":
        ignore = labels == 0
        instances = np.maximum(labels - 1, 0)
    elif convention == "dense":
        ignore = np.zeros(labels.shape, bool)
        instances = labels
    else:
        ignore = np.zeros(labels.shape, bool)
        instances = connected_components(labels > 0, connectivity=2)
    return instances.astype(np.int32), ignore


def labels_to_classes(
    labels: np.ndarray, convention: str, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Convert a 2D label image in one of the semantic conventions.

    Parameters
    ----------
    labels : (H, W) integer or bool array
    convention : {"semantic", "semantic-sparse"}
        ``semantic``: values are classes (0 = background), 255 = ignore.
        ``semantic-sparse``: 0 = not annotated, class c painted as c + 1.
    num_classes : int
        Number of classes of the net (background included); every class must be below it.

    Returns
    -------
    classes : (H, W) int32
        Class of each pixel (0 where ignored).
    ignore : (H, W) bool
        True where not annotated.
    """
    if convention not in SEMANTIC_CONVENTIONS:
        raise ValueError(
            f"semantic label convention must be one of {SEMANTIC_CONVENTIONS}, got {convention!r}"
        )
    check_num_classes(num_classes)
    labels = check_labels(labels)
    if convention == "semantic":
        ignore = labels == SEMANTIC_IGNORE
        classes = np.where(ignore, 0, labels)
    else:
        ignore = labels == 0
        classes = np.maximum(labels - 1, 0)
    top = int(classes.max()) if classes.size else 0
    if top >= num_classes:
        painted = f" (painted as {top + 1})" if convention == "semantic-sparse" else ""
        raise ValueError(
            f"labels contain class {top}{painted} but num_classes is {num_classes} "
            f"(classes must be 0..{num_classes - 1})"
        )
    return classes.astype(np.int32), ignore


def check_labels(labels: np.ndarray, ndim: int = 2) -> np.ndarray:
    """Integer labels of ``ndim`` dimensions, >= 0 and within int32, as int64; else ValueError."""
    labels = np.asarray(labels)
    if labels.dtype == bool:
        labels = labels.astype(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    if labels.ndim != ndim:
        raise ValueError(f"labels must have {ndim} dimensions, got shape {labels.shape}")
    if labels.size:
        low, high = int(labels.min()), int(labels.max())
        if low < 0:
            raise ValueError(f"labels must be >= 0, got a negative label {low}")
        if high > _INT32_MAX:
            raise ValueError(f"label {high} does not fit in int32")
    return labels.astype(np.int64, copy=False)


def check_num_classes(num_classes: int) -> None:
    """``ValueError`` unless ``num_classes`` is an integer in [2, 255]."""
    if int(num_classes) != num_classes or not 2 <= num_classes <= SEMANTIC_IGNORE:
        raise ValueError(f"num_classes must be an integer in [2, 255], got {num_classes!r}")


__all__ = [
    "CONVENTIONS",
    "INSTANCE_CONVENTIONS",
    "SEMANTIC_CONVENTIONS",
    "SEMANTIC_IGNORE",
    "check_labels",
    "check_num_classes",
    "labels_to_classes",
    "labels_to_instances",
]
