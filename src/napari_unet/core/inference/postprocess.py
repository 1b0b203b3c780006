"""From the net's probabilities to label images.

Instance mode: the net was trained on targets in which touching objects are cut apart by a 1-px
background gap (:func:`core.training.weight_map.separated_instances`), so connected components
of the thresholded foreground are the objects; afterwards the gaps are given back to the
objects on either side. Semantic mode: the arg-max class per pixel.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.morphology import h_maxima
from skimage.segmentation import expand_labels, find_boundaries, relabel_sequential, watershed

#: In 3D, a seed of :func:`split_touching` must rise this many (lateral) pixels of smoothed
#: distance above the saddle to a higher seed of its object. Measured (benchmarks/bench_volume.py,
#: 6 synthetic volumes, shipped model): 3D AP@0.5 0.919 -> 0.937, merged + split 5.5 % -> 5.3 %
#: (elongated nuclei no longer cut in two); 1 px gave AP 0.947 but 5.5 % (more stacked nuclei
#: merged).
SEED_PROMINENCE = 0.5
#: In 2D only seeds on one plateau or ridge share a marker: the saddles between small touching
#: nuclei are shallow, and 0.5 px cost the default model AP@0.5 0.650 -> 0.623 on the 24 varied
#: held-out images (Otsu + watershed 0.303 -> 0.253; plain and cells3d within 0.003;
#: docs/models.md, "The split's prominence in 2D").
PLATEAU_PROMINENCE = 1e-3
#: Background gaps up to this many pixels wide between two objects are given back to them
#: (:func:`_fill_gaps`). The net is taught a 1-px gap, but the border weights around it make the
#: gaps it draws about 2 px wide. Measured with the shipped model (pixel IoU, AP@0.5 unchanged
#: or up): 24 plain synthetic held-out images 0.924 -> 0.963, 24 varied 0.873 -> 0.896, the
#: three fine-tuning protocol images (bench_finetune.py, unpainted halves) +0.015 each, and a
#: model fine-tuned there for 3 min 0.867 -> 0.890. 3 px filled a little more but cost AP@0.5
#: (plain 0.911 -> 0.902: nuclei a few pixels apart were joined at their necks).
GAP_WIDTH = 2
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
    min_distance: int | None = None,
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
        opposite sides at most :data:`GAP_WIDTH` + 1 px apart (a gap up to 2 px wide) joins the
        nearer of them. Only such gap pixels are filled, so the outer outlines of objects,
        which the net learned without a gap, do not grow.
    fill : bool
        Fill holes inside objects (nuclei and cells have none; a bright nucleolus or a dim
        patch of chromatin can leave one in the probability map).
    split : bool
        Also split objects at the necks between round parts (:func:`split_touching`), for
        touching objects whose separating gap the net did not (yet) learn.
    min_distance : int, optional
        Seed distance of the split (:func:`split_touching`); by default from the median object
        size of this image. Blockwise labelling passes the value of the whole image.

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
        labels = split_touching(labels, min_distance)
    return relabel_sequential(labels)[0].astype(np.int32)


def base_instances(
    foreground: np.ndarray, threshold: float = 0.5, min_size: int = DEFAULT_MIN_SIZE
) -> np.ndarray:
    """The instances before any split: threshold, components, specks removed, gaps given back,
    holes filled (ids 1..n). Blockwise labelling runs the split as a second pass.

    2D maps go through :func:`instances_from_probability`; for a ``(Z, H, W)`` volume the
    components are 3D (6-connected), specks are objects of fewer than ``min_size * 4`` voxels,
    and gaps and holes are filled slice by slice (the net drew its gaps in 2D).
    """
    fg = np.asarray(foreground)
    if fg.ndim == 2:
        return instances_from_probability(fg, threshold, min_size, split=False)
    if fg.ndim != 3:
        raise ValueError(f"foreground must be (H, W) or (Z, H, W), got shape {fg.shape}")
    labels, n = ndi.label(fg > threshold)
    if n == 0:
        return np.zeros(fg.shape, np.int32)
    if min_size > 1:
        small = np.bincount(labels.ravel()) < 4 * min_size
        small[0] = False
        labels[small[labels]] = 0
    for z in range(labels.shape[0]):
        labels[z] = fill_holes(_fill_gaps(labels[z]))
    return relabel_sequential(labels)[0].astype(np.int32)


def seed_distance(sizes: np.ndarray, spacing: tuple[float, ...] | None = None) -> int:
    """Default seed distance (lateral pixels) of :func:`split_touching` for objects of these
    pixel/voxel counts: two thirds of the median equivalent radius, so a round object keeps
    one seed. ``spacing`` (z step in lateral pixels first) makes it 3D."""
    sizes = np.asarray(sizes)
    sizes = sizes[sizes > 0]
    if sizes.size == 0:
        return 2
    if spacing is None or len(spacing) == 2:
        return max(2, int(np.sqrt(np.median(sizes) / np.pi) / 1.5))
    volume = np.median(sizes) * float(np.prod(spacing)) / float(spacing[-1]) ** 3
    # half the radius in 3D: measured on the synthetic volume (benchmarks/bench_volume.py), a
    # third fewer seeds merged more neighbours stacked along z than it split nuclei
    return max(2, int((3 * volume / (4 * np.pi)) ** (1 / 3) / 2))


def split_touching(labels: np.ndarray, min_distance: int | None = None,
                   only: np.ndarray | None = None,
                   spacing: tuple[float, ...] | None = None) -> np.ndarray:
    """Split objects at their necks: a watershed of the distance to the background.

    One seed per maximum of the (smoothed) distance transform, at least ``min_distance`` apart;
    each object is flooded from its seeds. Existing separations are kept: pixels of different
    input objects never end up in one output object.

    Parameters
    ----------
    labels : (H, W) or (Z, H, W) int or bool
        Instances (0 = background), or a binary mask (objects = its connected components).
    min_distance : int, optional
        Smallest distance between two seeds in (lateral) pixels; by default
        :func:`seed_distance` of the objects' sizes.
    only : int array, optional
        Split only these ids (the others are left as they are). Every object's result depends
        only on the object and a few pixels around it, which lets blockwise labelling split
        the objects a block owns and get what the whole image would give.
    spacing : tuple of float, optional
        Pixel spacing per axis, e.g. ``(2, 1, 1)`` for slices twice as far apart as pixels:
        distances, smoothing and the seed neighbourhood are then physical (3D nuclei).

    Returns
    -------
    (H, W) or (Z, H, W) int32
        Without ``only``: objects numbered 1..n consecutively. With ``only``: input ids kept,
        new parts numbered from ``labels.max() + 1`` on.
    """
    labels = np.asarray(labels)
    if labels.dtype == bool:
        labels = ndi.label(labels)[0]
    mask = labels > 0
    if not mask.any():
        return np.zeros(labels.shape, np.int32)
    spacing = tuple(float(s) for s in spacing) if spacing is not None else (1.0,) * labels.ndim
    if len(spacing) != labels.ndim:
        raise ValueError(f"spacing needs one value per axis ({labels.ndim}), got {spacing}")
    if min_distance is None:
        min_distance = seed_distance(np.bincount(labels[mask].astype(np.int64)),
                                     spacing if labels.ndim == 3 else None)
    # Distance to the background or to another object, so seeds stay inside their object.
    distance = ndi.distance_transform_edt(mask & ~find_boundaries(labels, mode="inner"),
                                          sampling=spacing if labels.ndim == 3 else None)
    unit = spacing[-1]
    smooth = ndi.gaussian_filter(distance, tuple(unit / s for s in spacing))
    seeds_of = labels.astype(np.int32)
    if only is not None:
        seeds_of = np.where(np.isin(seeds_of, np.asarray(only)), seeds_of, 0)
    # the seed neighbourhood is min_distance physical (lateral) pixels along every axis
    footprint = np.ones(tuple(2 * max(int(min_distance * unit / s), 0) + 1 for s in spacing),
                        bool)
    # threshold_abs=0: peak_local_max would otherwise use the minimum of the whole (block)
    # image, which is 0 wherever background exists but not in a block full of objects
    prominence = SEED_PROMINENCE if labels.ndim == 3 else PLATEAU_PROMINENCE
    peaks = peak_local_max(smooth, min_distance=min_distance, labels=seeds_of,
                           exclude_border=False, threshold_abs=0.0, footprint=footprint)
    owner = labels[tuple(peaks.T)]
    order = np.argsort(owner, kind="stable")
    starts = np.searchsorted(owner[order], np.arange(int(labels.max()) + 2))
    out = labels.astype(np.int64)
    next_id = int(labels.max()) + 1
    # Flood each object from its own seeds only, so no object can grow into a neighbour.
    for i, box in enumerate(ndi.find_objects(seeds_of), start=1):
        inside = peaks[order[starts[i] : starts[i + 1]]]
        if box is None or len(inside) < 2:
            continue
        region = labels[box] == i
        local = inside - np.asarray([b.start for b in box])
        markers = _prominent_markers(local, smooth[box] * region, prominence)
        n = int(markers.max())
        if n < 2:
            continue
        basins = watershed(-distance[box], markers, mask=region)
        part = out[box]
        part[region] = np.where(basins[region] > 1, next_id + basins[region] - 2, i)
        next_id += n - 1
    if only is not None:
        return out.astype(np.int32)
    return relabel_sequential(out)[0].astype(np.int32)


def _prominent_markers(peaks: np.ndarray, landscape: np.ndarray,
                       prominence: float) -> np.ndarray:
    """Watershed markers of one object (``landscape``: its box, 0 outside it): the regional
    maxima that rise at least ``prominence`` above their saddle to a higher one and hold one
    of ``peaks`` (box coordinates), numbered 1..n. Peaks on one plateau or ridge share a
    marker."""
    tops, _ = ndi.label(h_maxima(landscape, prominence))
    kept = np.unique(tops[tuple(peaks.T)])
    kept = kept[kept > 0]
    lookup = np.zeros(int(tops.max()) + 1, np.int32)
    lookup[kept] = np.arange(1, len(kept) + 1)
    return lookup[tops]


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


def _fill_gaps(labels: np.ndarray, width: int = GAP_WIDTH) -> np.ndarray:
    """Assign background pixels lying between two different objects to the nearer one.

    "Between" means two different objects on opposite sides (left/right, up/down or a diagonal
    pair) with at most ``width`` background pixels from one to the other along that line, which
    is what a separation gap looks like; the wider notch where two round objects meet is left
    alone but for its last pixels at the contact.
    """
    h, w = labels.shape
    padded = np.pad(labels, width)
    gap = np.zeros((h, w), bool)
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
        # an object s1 px one way and another s2 px the other way: a gap of s1 + s2 - 1 px
        for s1 in range(1, width + 1):
            a = padded[width + s1 * dy : h + width + s1 * dy,
                       width + s1 * dx : w + width + s1 * dx]
            for s2 in range(1, width + 2 - s1):
                b = padded[width - s2 * dy : h + width - s2 * dy,
                           width - s2 * dx : w + width - s2 * dx]
                gap |= (a > 0) & (b > 0) & (a != b)
    gap &= labels == 0
    if not gap.any():
        return labels
    return np.where(gap, expand_labels(labels, distance=width + 0.5), labels)

