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
with the same ``separate_touching`` value (or use :func:`training_targets`, which does both).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

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
    h, w = labels.shape
    padded = np.pad(labels, 1)
    centre = padded[1 : h + 1, 1 : w + 1]
    cut = np.zeros((h, w), bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy == 0 and dx == 0:
                continue
            neighbour = padded[1 + dy : h + 1 + dy, 1 + dx : w + 1 + dx]
            cut |= (centre > 0) & (neighbour > centre)
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
    ``d_k`` is the Euclidean distance to the nearest pixel of object ``k``. Each object's
    distances are computed only inside its bounding box grown by the radius beyond which the
    border term is below 1e-6 (``sigma * sqrt(2 ln(w0 / 1e-6))``, 28.4 px for the defaults), so
    the cost grows with pixels x neighbours rather than pixels x objects. A pixel outside an
    object's window is farther than that radius from it, so leaving the object out can only
    change a term that is already below 1e-6.
    """
    labels = _check_instances(instances)
    ignore = _check_ignore(ignore_mask, labels.shape)
    w0, sigma = float(w0), float(sigma)
    if not np.isfinite(w0) or w0 < 0:
        raise ValueError(f"w0 must be a finite number >= 0, got {w0}")
    if not np.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"sigma must be a finite number > 0, got {sigma}")
    if separate_touching:
        labels = separated_instances(labels)
    foreground = labels > 0
    weights = _class_weights_lookup(foreground.astype(np.intp), 2, class_weights, ignore)
    if w0 > 0:
        d1, d2 = _two_nearest_distances(labels, sigma * np.sqrt(2.0 * np.log(w0 / _BORDER_EPS)))
        border = w0 * np.exp(-((d1 + d2) ** 2) / (2.0 * sigma**2))
        weights += np.where(foreground, 0.0, border)
    weights[ignore] = 0.0
    return weights.astype(np.float32)


def training_targets(
    instances: np.ndarray,
    w0: float = 10.0,
    sigma: float = 5.0,
    class_weights: ClassWeights = "balanced",
    ignore_mask: np.ndarray | None = None,
    separate_touching: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """The 0/1 target and its weight map, computed consistently from one instance image.

    Returns
    -------
    target : (H, W) uint8
        :func:`foreground_target` of ``instances``.
    weights : (H, W) float32
        :func:`weight_map` of ``instances`` with the same separation.
    """
    target = foreground_target(instances, separate_touching)
    weights = weight_map(instances, w0, sigma, class_weights, ignore_mask, separate_touching)
    return target, weights


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
    ignore = _check_ignore(ignore_mask, classes.shape)
    annotated = classes[~ignore]
    if annotated.size and (annotated.min() < 0 or annotated.max() >= num_classes):
        raise ValueError(
            f"annotated class values must lie in 0..{int(num_classes) - 1}, found "
            f"{int(annotated.min())}..{int(annotated.max())} (mark other values in ignore_mask)"
        )
    safe = np.where(ignore, 0, classes).astype(np.intp)
    weights = _class_weights_lookup(safe, int(num_classes), class_weights, ignore)
    weights[ignore] = 0.0
    return weights.astype(np.float32)


def _class_weights_lookup(
    classes: np.ndarray, num_classes: int, class_weights: ClassWeights, ignore: np.ndarray
) -> np.ndarray:
    """Float64 ``(H, W)`` map of per-class weights (ignored pixels not yet zeroed)."""
    counts = np.bincount(classes[~ignore], minlength=num_classes)
    if counts.sum() == 0:
        raise ValueError("no annotated pixel: the ignore mask covers the whole image")
    if class_weights is None:
        table = np.ones(num_classes)
    elif isinstance(class_weights, str):
        if class_weights != "balanced":
            raise ValueError(
                f"class_weights must be 'balanced', None or a sequence, got {class_weights!r}"
            )
        # An absent class has no pixel to weight; 1 keeps the table finite.
        table = np.where(counts > 0, counts.max() / np.maximum(counts, 1), 1.0)
    else:
        table = np.asarray(class_weights, dtype=np.float64)
        if table.shape != (num_classes,):
            raise ValueError(
                f"class_weights must have {num_classes} entries (one per class), got "
                f"{table.shape[0] if table.ndim == 1 else table.shape}"
            )
        if not np.all(np.isfinite(table)) or np.any(table < 0):
            raise ValueError(f"class_weights must be finite and >= 0, got {table.tolist()}")
    return table[classes]


def _two_nearest_distances(labels: np.ndarray, cutoff: float) -> tuple[np.ndarray, np.ndarray]:
    """Distances ``(d1, d2)`` to the nearest and second-nearest object (inf where > cutoff)."""
    h, w = labels.shape
    d1 = np.full((h, w), np.inf)
    d2 = np.full((h, w), np.inf)
    margin = int(np.ceil(cutoff)) + 1
    for index, box in enumerate(ndi.find_objects(labels)):
        if box is None:
            continue
        y0, y1 = max(box[0].start - margin, 0), min(box[0].stop + margin, h)
        x0, x1 = max(box[1].start - margin, 0), min(box[1].stop + margin, w)
        window = (slice(y0, y1), slice(x0, x1))
        # The whole object lies inside the window, so the cropped transform is exact there.
        dist = ndi.distance_transform_edt(labels[window] != index + 1)
        near, second = d1[window], d2[window]
        second[...] = np.minimum(second, np.maximum(near, dist))
        near[...] = np.minimum(near, dist)
    return d1, d2


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


def _check_ignore(ignore_mask: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    if ignore_mask is None:
        return np.zeros(shape, bool)
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
