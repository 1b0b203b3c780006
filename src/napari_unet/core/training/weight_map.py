"""The paper's pixel-wise loss weights (eq. 2) and the matching 0/1 training target.

Ronneberger et al. (2015) weight every pixel ``x`` of the cross-entropy by

    w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))**2 / (2 * sigma**2))

where ``w_c`` balances the class frequencies and ``d1`` / ``d2`` are the distances to the border
of the nearest and second-nearest object. The border term only applies to background pixels, so
the thin background strips between touching objects get a large weight and the net learns to
keep objects apart.

Touching objects are first separated by a 1-px background gap (:func:`separated_instances`, as
the authors' Fiji plugin does): a 0/1 target cannot express "two objects" where they touch.
:func:`foreground_target` and :func:`weight_map` apply the same separation by default, so the gap
pixels are background in the target *and* receive the border weight in the weight map; call both
with the same ``separate_touching`` value (or use :func:`targets_and_weights`, which does both).
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Real

import numpy as np
from scipy import ndimage as ndi

from .object_distances import two_nearest_distances

# The border term below this value is dropped: it decides the window around each object.
_BORDER_EPS = 1e-6

ClassWeights = str | Sequence[float] | None


def separated_instances(instances: np.ndarray) -> np.ndarray:
    """Cut a 1-px background gap between touching objects.

    A pixel is set to 0 when one of its 8 neighbours belongs to a *different* object with a
    *larger* id. Removing only one side of each shared boundary leaves a gap exactly 1 px wide
    (removing both sides would make it 2 px) after which no two objects are 8-adjacent, so even
    8-connected components of the result keep them apart. Objects that touch nothing are
    unchanged; a 1-px-thin object lying entirely against a larger id can vanish.

    Parameters
    ----------
    instances : (H, W) int
        0 = background, ids >= 1 objects.

    Returns
    -------
    (H, W) array of the input dtype
        The instances with the gap pixels set to 0.
    """
    labels = _check_instances(instances)
    # A neighbour with a larger id exists exactly where the 3x3 maximum exceeds the pixel.
    cut = (labels > 0) & (ndi.maximum_filter(labels, size=3, mode="constant", cval=0) > labels)
    out = labels.copy()
    out[cut] = 0
    return out


def foreground_target(instances: np.ndarray, separate_touching: bool = True) -> np.ndarray:
    """0/1 target of the instance-mode net.

    Parameters
    ----------
    instances : (H, W) int
        0 = background, ids >= 1 objects.
    separate_touching : bool
        Cut a 1-px background gap between touching objects first (see
        :func:`separated_instances`), as the authors' Fiji plugin does, so that the net learns to
        predict the gaps that let connected components split touching nuclei again.

    Returns
    -------
    (H, W) uint8
        1 = foreground, 0 = background.
    """
    labels = separated_instances(instances) if separate_touching else _check_instances(instances)
    return (labels > 0).astype(np.uint8)


def weight_map(
    instances: np.ndarray,
    w0: float = 10.0,
    sigma: float = 5.0,
    class_weights: ClassWeights = "balanced",
    ignore_mask: np.ndarray | None = None,
    separate_touching: bool = True,
) -> np.ndarray:
    """The paper's weight map (eq. 2) for an instance label image.

    Parameters
    ----------
    instances : (H, W) int
        0 = background, ids >= 1 objects. Objects are taken as given (never re-labelled by
        connectivity), so touching nuclei with different ids stay separate objects.
    w0 : float
        Height of the border term (10 in the paper); 0 switches it off.
    sigma : float
        Width of the border term in pixels (5 in the paper).
    class_weights : "balanced", sequence of 2 floats, or None
        ``"balanced"``: inverse class frequency over the annotated pixels, scaled so the more
        frequent class weighs 1. A sequence gives (background, foreground) explicitly. None gives
        1 for both.
    ignore_mask : (H, W) bool, optional
        True = not annotated: weight 0 there, and such pixels do not count in the class
        frequencies.
    separate_touching : bool
        Compute the map on :func:`separated_instances` (default), matching
        ``foreground_target(instances, separate_touching=True)``: the gap pixels between touching
        objects are then background with ``d1 ~ d2 ~ 1`` and get the full border weight. Pass
        the same value to both functions.

    Returns
    -------
    (H, W) float32
        ``w_c(x) + w0 * exp(-(d1 + d2)**2 / (2 sigma**2))`` on background pixels, ``w_c(x)`` on
        object pixels, 0 on ignored pixels.

    Notes
    -----
    ``d_k`` is the Euclidean distance to the nearest pixel of object ``k``. The border term is
    below 1e-6 once ``d1 + d2`` exceeds ``c = sigma * sqrt(2 ln(w0 / 1e-6))`` (28.4 px for the
    defaults), so the distances are computed only where ``d1 + d2 <= c``
    (:mod:`.object_distances`: per-object windows for a few hundred objects, a separable
    transform whose cost does not grow with the number of objects for many), and the result
    differs from the full-image definition by less than 1e-6. Ids may be any non-negative
    integers (up to 2**64 - 1).
    """
    labels = _check_instances(instances)
    ignore = None if ignore_mask is None else _check_ignore(ignore_mask, labels.shape)
    w0, sigma = _number(w0, "w0"), _number(sigma, "sigma")
    if not np.isfinite(w0) or w0 < 0:
        raise ValueError(f"w0 must be a finite number >= 0, got {w0}")
    if not np.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"sigma must be a finite number > 0, got {sigma}")
    if separate_touching:
        labels = separated_instances(labels)
    foreground = labels > 0
    n_annotated = labels.size if ignore is None else labels.size - np.count_nonzero(ignore)
    n_fg = np.count_nonzero(foreground if ignore is None else foreground & ~ignore)
    table = _class_table(np.array([n_annotated - n_fg, n_fg]), class_weights)
    weights = np.where(foreground, np.float32(table[1]), np.float32(table[0]))
    if w0 > _BORDER_EPS:  # a smaller w0 keeps the whole term below the cut-off
        d1, d2 = two_nearest_distances(labels, sigma * np.sqrt(2.0 * np.log(w0 / _BORDER_EPS)))
        # Only background pixels with a second object in reach get a border term.
        near = np.flatnonzero(np.isfinite(d2.ravel()) & ~foreground.ravel())
        total = d1.ravel()[near] + d2.ravel()[near]
        border = w0 * np.exp(-(total**2) / (2.0 * sigma**2))
        weights.ravel()[near] += border.astype(np.float32)
    if ignore is not None:
        weights[ignore] = 0.0
    return weights


def targets_and_weights(
    labels: np.ndarray,
    ignore: np.ndarray | None,
    instances_mode: bool,
    num_classes: int = 2,
    w0: float = 10.0,
    sigma: float = 5.0,
    class_weights: ClassWeights = "balanced",
    separate_touching: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Training target and per-pixel loss weights of one label patch, computed consistently.

    Parameters
    ----------
    labels : (H, W) int
        Instances (instance mode) or classes (semantic mode).
    ignore : (H, W) bool or None
        True = not annotated (weight 0). In instance mode an object's edge pixels that touch
        not-annotated pixels get weight 0 too (:func:`unsure_edges`).
    instances_mode : bool
        Instances -> :func:`foreground_target` with the paper's :func:`weight_map` (same
        separation); otherwise the classes with :func:`class_weight_map`.
    num_classes : int
        Classes of the net (semantic mode).
    w0, sigma, class_weights, separate_touching
        As in :func:`weight_map`.

    Returns
    -------
    target : (H, W) int64
    weights : (H, W) float32
        All zero when nothing is annotated (such a patch contributes nothing).
    """
    labels = np.asarray(labels)
    if ignore is not None and ignore.all():
        return np.zeros(labels.shape, np.int64), np.zeros(labels.shape, np.float32)
    if instances_mode:
        if ignore is not None:
            ignore = ignore | unsure_edges(labels, ignore)
            if ignore.all():  # only an object's unsure edge was painted here (a sliver of a
                # tile, after augmentation): nothing to learn, as with no paint at all
                return np.zeros(labels.shape, np.int64), np.zeros(labels.shape, np.float32)
        target = foreground_target(labels, separate_touching)
        weights = weight_map(labels, w0, sigma, class_weights, ignore, separate_touching)
    else:
        target = labels if ignore is None else np.where(ignore, 0, labels)
        weights = class_weight_map(labels, num_classes, class_weights, ignore)
    return target.astype(np.int64), weights.astype(np.float32)


def unsure_edges(instances: np.ndarray, ignore: np.ndarray) -> np.ndarray:
    """Object pixels 8-adjacent to a not-annotated pixel: where sparse paint cannot say what
    the edge is.

    A painted nucleus that touches an unpainted one meets it without the background gap that
    :func:`separated_instances` cuts between two painted objects, so taught as painted, its
    edge says "object up to the neighbour" and the net learns to merge touching nuclei
    (``benchmarks/bench_finetune.py``: merged nuclei 3-5 -> 8-15 per protocol image after
    fine-tuning). Where the object's edge meets painted background (a ring) it is taught as
    before.
    """
    ignore = np.asarray(ignore, bool)
    if not ignore.any():
        return np.zeros(ignore.shape, bool)
    near = ndi.binary_dilation(ignore, structure=np.ones((3, 3), bool))
    return near & (np.asarray(instances) > 0) & ~ignore


def class_weight_map(
    classes: np.ndarray,
    num_classes: int,
    class_weights: ClassWeights = "balanced",
    ignore_mask: np.ndarray | None = None,
) -> np.ndarray:
    """Per-pixel class-balancing weights for semantic (multi-class) mode.

    Parameters
    ----------
    classes : (H, W) int
        Class per pixel, in ``0 .. num_classes - 1`` wherever annotated (values under
        ``ignore_mask``, e.g. 255, are not checked).
    num_classes : int
        Number of classes of the net (>= 2).
    class_weights : "balanced", sequence of ``num_classes`` floats, or None
        As in :func:`weight_map`: inverse frequency over annotated pixels scaled so the most
        frequent class weighs 1, explicit weights, or all ones.
    ignore_mask : (H, W) bool, optional
        True = not annotated (weight 0).

    Returns
    -------
    (H, W) float32
    """
    classes = np.asarray(classes)
    if classes.ndim != 2:
        raise ValueError(f"classes must be a 2-D (H, W) array, got shape {classes.shape}")
    if not np.issubdtype(classes.dtype, np.integer):
        raise ValueError(f"classes must have an integer dtype, got {classes.dtype}")
    if int(num_classes) != num_classes or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes}")
    ignore = (np.zeros(classes.shape, bool) if ignore_mask is None
              else _check_ignore(ignore_mask, classes.shape))
    annotated = classes[~ignore]
    if annotated.size and (annotated.min() < 0 or annotated.max() >= num_classes):
        raise ValueError(
            f"annotated class values must lie in 0..{int(num_classes) - 1}, found "
            f"{int(annotated.min())}..{int(annotated.max())} (mark other values in ignore_mask)"
        )
    counts = np.bincount(annotated.astype(np.intp).ravel(), minlength=int(num_classes))
    table = _class_table(counts, class_weights).astype(np.float32)
    weights = table[np.where(ignore, 0, classes).astype(np.intp)]
    weights[ignore] = 0.0
    return weights


def _class_table(counts: np.ndarray, class_weights: ClassWeights) -> np.ndarray:
    """Weight of every class, from the annotated pixel counts ``(num_classes,)``."""
    num_classes = len(counts)
    if counts.sum() == 0:
        raise ValueError("no annotated pixel: the ignore mask covers the whole image")
    if class_weights is None:
        return np.ones(num_classes)
    if isinstance(class_weights, str):
        if class_weights != "balanced":
            raise ValueError(
                f"class_weights must be 'balanced', None or a sequence, got {class_weights!r}"
            )
        # An absent class has no pixel to weight; 1 keeps the table finite.
        return np.where(counts > 0, counts.max() / np.maximum(counts, 1), 1.0)
    table = np.asarray(class_weights, dtype=np.float64)
    if table.shape != (num_classes,):
        raise ValueError(
            f"class_weights must have {num_classes} entries (one per class), got "
            f"{table.shape[0] if table.ndim == 1 else table.shape}"
        )
    if not np.all(np.isfinite(table)) or np.any(table < 0):
        raise ValueError(f"class_weights must be finite and >= 0, got {table.tolist()}")
    return table


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number, got {value!r}")
    return float(value)


def _check_instances(instances: np.ndarray) -> np.ndarray:
    labels = np.asarray(instances)
    if labels.ndim != 2:
        raise ValueError(f"instances must be a 2-D (H, W) array, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"instances must have an integer dtype (0 = background, ids >= 1), got {labels.dtype}"
        )
    if labels.size and labels.min() < 0:
        raise ValueError(f"instances must be >= 0, found {int(labels.min())}")
    return labels


def _check_ignore(ignore_mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    ignore = np.asarray(ignore_mask)
    if ignore.shape != tuple(shape):
        raise ValueError(
            f"ignore_mask has shape {ignore.shape} but the labels have shape {tuple(shape)}"
        )
    if ignore.dtype != bool and not np.issubdtype(ignore.dtype, np.integer):
        raise ValueError(
            f"ignore_mask must be a bool array (True = not annotated), got {ignore.dtype}"
        )
    return ignore.astype(bool, copy=False)
