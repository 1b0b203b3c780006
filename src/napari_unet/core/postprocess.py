"""From the net's probabilities to label images.

Instance mode: the net was trained on targets in which touching objects are cut apart by a 1-px
background gap (:func:`napari_unet.core.weights.separated_instances`), so connected components
of the thresholded foreground are the objects; afterwards the gaps are given back to the
objects on either side. Semantic mode: the arg-max class per pixel.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.segmentation import expand_labels, find_boundaries, relabel_sequential, watershed

DEFAULT_MIN_SIZE = 16
"""Objects smaller than this many pixels (a 4x4 square) are dropped as specks: well below the
area of a nucleus at typical resolutions (a 5-px-radius disk has ~80 px), well above the
isolated false-positive pixels a noisy probability map produces."""


def instances_from_probability(
    foreground: np.ndarray,
    threshold: float = 0.5,
    min_size: int = DEFAULT_MIN_SIZE,
    grow: bool = True,
    fill: bool = True,
    split: bool = False,
) -> np.ndarray:
    """Instance labels from a foreground probability map.

    Parameters
    ----------
    foreground : (H, W) float
        Foreground probability (``probabilities[1]`` of an instance-mode net).
    threshold : float
        Pixels with probability > ``threshold`` are foreground.
    min_size : int
        Connected components with fewer pixels are removed (before growing); 0 keeps all.
    grow : bool
        Give the separation gaps back: a background pixel with two different objects on
        opposite sides (a 1-px gap) joins the nearer of them. Only such gap pixels are filled,
        so the outer outlines of objects, which the net learned without a gap, do not grow.
    fill : bool
        Fill holes inside objects (nuclei and cells have none; a bright nucleolus or a dim
        patch of chromatin can leave one in the probability map).
    split : bool
        Also split objects at the necks between round parts (:func:`split_touching`), for
        touching objects whose separating gap the net did not (yet) learn.

    Returns
    -------
    (H, W) int32
        0 = background, objects numbered 1..n consecutively.

    Notes
    -----
    Components use 4-connectivity, so a gap that is only 1 px wide and closed diagonally in one
    spot still separates two objects.
    """
    fg = np.asarray(foreground)
    if fg.ndim != 2:
        raise ValueError(f"foreground must be a 2-D (H, W) map, got shape {fg.shape}")
    if not np.issubdtype(fg.dtype, np.floating):
        raise ValueError(f"foreground must be a float probability map, got {fg.dtype}")
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number, got {threshold}")
    if int(min_size) != min_size or min_size < 0:
        raise ValueError(f"min_size must be an integer >= 0, got {min_size}")
    labels, n = ndi.label(fg > threshold)
    if n == 0:
        return np.zeros(fg.shape, np.int32)
    if min_size > 1:
        small = np.bincount(labels.ravel()) < min_size
        small[0] = False
        labels[small[labels]] = 0
    if grow:
        labels = _fill_gaps(labels)
    if fill:
        labels = fill_holes(labels)
    if split:
        labels = split_touching(labels)
    return relabel_sequential(labels)[0].astype(np.int32)


def split_touching(labels: np.ndarray, min_distance: int | None = None) -> np.ndarray:
    """Split objects at their necks: a watershed of the distance to the background.

    One seed per maximum of the (smoothed) distance transform, at least ``min_distance`` apart;
    each object is flooded from its seeds. Existing separations are kept: pixels of different
    input objects never end up in one output object.

    Parameters
    ----------
    labels : (H, W) int or bool
        Instances (0 = background), or a binary mask (objects = its connected components).
    min_distance : int, optional
        Smallest distance between two seeds in pixels; by default two thirds of the median
        equivalent radius of the objects, so a round object keeps one seed.

    Returns
    -------
    (H, W) int32
        Objects numbered 1..n consecutively.
    """
    labels = np.asarray(labels)
    if labels.dtype == bool:
        labels = ndi.label(labels)[0]
    mask = labels > 0
    if not mask.any():
        return np.zeros(labels.shape, np.int32)
    if min_distance is None:
        sizes = np.bincount(labels[mask].astype(np.int64))
        sizes = sizes[sizes > 0]
        min_distance = max(2, int(np.sqrt(np.median(sizes) / np.pi) / 1.5))
    # Distance to the background or to another object, so seeds stay inside their object.
    distance = ndi.distance_transform_edt(mask & ~find_boundaries(labels, mode="inner"))
    smooth = ndi.gaussian_filter(distance, 1.0)
    peaks = peak_local_max(smooth, min_distance=min_distance, labels=labels.astype(np.int32),
                           exclude_border=False)
    owner = labels[tuple(peaks.T)]
    order = np.argsort(owner, kind="stable")
    starts = np.searchsorted(owner[order], np.arange(int(labels.max()) + 2))
    out = labels.astype(np.int64)
    next_id = int(labels.max()) + 1
    # Flood each object from its own seeds only, so no object can grow into a neighbour.
    for i, box in enumerate(ndi.find_objects(labels), start=1):
        inside = peaks[order[starts[i] : starts[i + 1]]]
        if box is None or len(inside) < 2:
            continue
        region = labels[box] == i
        markers = np.zeros(region.shape, np.int32)
        markers[inside[:, 0] - box[0].start, inside[:, 1] - box[1].start] = np.arange(
            1, len(inside) + 1)
        basins = watershed(-distance[box], markers, mask=region)
        part = out[box]
        part[region] = np.where(basins[region] > 1, next_id + basins[region] - 2, i)
        next_id += len(inside) - 1
    return relabel_sequential(out)[0].astype(np.int32)


def fill_holes(labels: np.ndarray) -> np.ndarray:
    """Fill the holes of every object of a 2D instance image (a hole is background enclosed
    by that one object); returns a new array."""
    out = np.array(labels, copy=True)
    for i, box in enumerate(ndi.find_objects(out), start=1):
        if box is None:
            continue
        window = out[box]
        window[ndi.binary_fill_holes(window == i) & (window == 0)] = i
    return out


def semantic_from_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """Arg-max class per pixel.

    Parameters
    ----------
    probabilities : (C, H, W) float
        Class probabilities (or logits) of a semantic-mode net.

    Returns
    -------
    (H, W) int32
        Class index per pixel, 0 = background.
    """
    p = np.asarray(probabilities)
    if p.ndim != 3 or p.shape[0] < 1:
        raise ValueError(f"probabilities must be (C, H, W), got shape {p.shape}")
    return np.argmax(p, axis=0).astype(np.int32)


def _fill_gaps(labels: np.ndarray) -> np.ndarray:
    """Assign background pixels lying between two different objects to the nearer one.

    "Between" means two different objects on opposite sides (left/right, up/down or a diagonal
    pair), which is what a 1-px separation gap looks like; the concave notch where two round
    objects meet is left alone.
    """
    h, w = labels.shape
    padded = np.pad(labels, 1)
    gap = np.zeros((h, w), bool)
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        a = padded[1 + dy : h + 1 + dy, 1 + dx : w + 1 + dx]
        b = padded[1 - dy : h + 1 - dy, 1 - dx : w + 1 - dx]
        gap |= (a > 0) & (b > 0) & (a != b)
    gap &= labels == 0
    if not gap.any():
        return labels
    return np.where(gap, expand_labels(labels, distance=1.5), labels)
