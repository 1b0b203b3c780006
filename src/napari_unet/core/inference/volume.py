"""3D objects from a Z stack: which stacks are volumes, linking 2D objects across z, and the
merge/split count that judges the result.

The net sees one slice at a time; a nucleus cut by 20 slices is first 20 two-dimensional
objects. :func:`link_slices` joins each slice's objects to those of the slice above by overlap
(the stitching cellpose does with its ``stitch_threshold``): pairs with an IoU of at least the
threshold are matched one to one, greedily from the best pair, and a matched object takes the id
of its partner above. It holds two slices (or bands of them) at a time, so memory does not grow
with depth, and it writes in place.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import numpy as np

from ..events import Progress

#: Volumes: blocks are this many slices deep and ``block_size / 8`` pixels a side (halo: two
#: object diameters), so that a window with its halo stays near the memory of a 2D block
#: (16 + 2 x 40 slices of 336 x 336 px for the default model at z spacing 1: ~11 M voxels).
VOLUME_BLOCK_SLICES = 16

AXES_LETTERS = "TZCYX"
DEFAULT_STITCH_THRESHOLD = 0.25


def check_axes(axes: str | None) -> str | None:
    """Validate an axes string (letters of "TZCYX", each once, ending in "YX" apart from a
    trailing "C"); ``ValueError`` naming the problem."""
    if axes is None:
        return None
    if not isinstance(axes, str):
        raise TypeError(f"axes must be a string like 'ZYX', got {type(axes).__name__}")
    text = axes.upper()
    if not text or any(a not in AXES_LETTERS for a in text) or len(set(text)) != len(text):
        raise ValueError(f"axes must be distinct letters from {AXES_LETTERS!r}, got {axes!r}")
    if text.replace("C", "")[-2:] != "YX":
        raise ValueError(f"axes must end with 'YX' (or 'YXC'), got {axes!r}")
    return text


def stack_is_volume(axes: str | None, ndim_spatial_stack: bool, volume: bool | None
                    ) -> tuple[bool, str | None]:
    """Decide whether a stack's leading axis is Z (3D objects) or not (slice by slice).

    Parameters
    ----------
    axes : str or None
        The image's axes, if known (file metadata, the layer, the user).
    ndim_spatial_stack : bool
        Whether the image has one axis before Y, X (besides channels).
    volume : bool or None
        The user's explicit choice.

    Returns
    -------
    (is_volume, note)
        ``note`` tells the user about a default taken for an ambiguous stack (None otherwise).

    Raises
    ------
    ValueError
        ``volume=True`` for an image whose stack axis is known not to be Z, or that is 2D.
    """
    lead = None if axes is None else axes.replace("C", "")[:-2]
    if volume is False or not ndim_spatial_stack:
        if volume is True:
            raise ValueError("volume=True needs a Z stack, but the image is a single plane")
        return False, None
    if lead is not None:
        if lead == "Z":
            return True, None
        if volume is True:
            raise ValueError(f"volume=True needs a Z stack, but the image's stack axis is "
                             f"{lead!r} (axes {axes!r}); T stays slice by slice")
        return False, None
    if volume is True:
        return True, None
    return False, ("the stack's axis is not known (Z or time?): segmenting slice by slice; "
                   "set Z stacks to 3D objects (--3d) for objects across slices")


def link_slices(labels: Any, out: Any = None, threshold: float = DEFAULT_STITCH_THRESHOLD,
                rows_per_read: int = 2048) -> Generator[Progress, None, int]:
    """Join the 2D objects of consecutive slices into 3D objects, by overlap.

    Parameters
    ----------
    labels : (Z, H, W) int array-like
        Per-slice instance labels (0 = background; ids need not be unique across slices).
    out : (Z, H, W) int32 array-like, optional
        Where the 3D labels go (may be ``labels`` itself); default ``labels``.
    threshold : float
        Smallest IoU in (0, 1] at which two objects of neighbouring slices are one object.
    rows_per_read : int
        Rows read at a time (memory is bounded by two bands of this many rows).

    Returns (as the generator's value)
    ----------------------------------
    int
        The number of 3D objects (ids 1..n).
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"stitch threshold must be in (0, 1], got {threshold!r}")
    out = labels if out is None else out
    n_z, h, _ = (int(s) for s in labels.shape)
    if tuple(out.shape) != tuple(labels.shape):
        raise ValueError(f"out has shape {tuple(out.shape)}, expected {tuple(labels.shape)}")
    bands = [slice(y, min(y + rows_per_read, h)) for y in range(0, h, rows_per_read)]
    next_id = 1
    for z in range(n_z):
        # ids of this slice, and their overlaps with the (final) ids of the slice above
        ids_parts, pairs_parts = [], []
        for band in bands:
            cur = np.asarray(labels[z, band])
            ids_parts.append(np.unique(cur))
            if z:
                above = np.asarray(out[z - 1, band])
                both = (cur > 0) & (above > 0)
                pairs_parts.append(np.stack([cur[both], above[both]]).astype(np.int64))
        ids = np.unique(np.concatenate(ids_parts))
        ids = ids[ids > 0]
        target = np.zeros(len(ids), np.int64)
        if z and len(ids):
            target = _match_above(labels, out, z, bands, ids, np.concatenate(pairs_parts, 1),
                                  threshold)
        fresh = target == 0
        target[fresh] = np.arange(next_id, next_id + int(fresh.sum()))
        next_id += int(fresh.sum())
        for band in bands:
            cur = np.asarray(labels[z, band])
            index = np.searchsorted(ids, cur)
            mapped = np.where(cur > 0, target[np.minimum(index, len(ids) - 1)] if len(ids)
                              else 0, 0)
            out[z, band] = mapped.astype(np.int32)
        yield Progress(z + 1, n_z, f"linking slice {z + 1}/{n_z}")
    return next_id - 1


def _match_above(labels: Any, out: Any, z: int, bands: list[slice], ids: np.ndarray,
                 pairs: np.ndarray, threshold: float) -> np.ndarray:
    """For each id of slice z, the id above it is linked to (0: none)."""
    target = np.zeros(len(ids), np.int64)
    if pairs.shape[1] == 0:
        return target
    keys, inter = np.unique(pairs, axis=1, return_counts=True)
    area_cur = np.zeros(len(ids), np.int64)
    above_ids_parts, above_area_parts = [], []
    for band in bands:
        cur = np.asarray(labels[z, band])
        found, counts = np.unique(cur[cur > 0], return_counts=True)
        area_cur[np.searchsorted(ids, found)] += counts
        above = np.asarray(out[z - 1, band])
        a_ids, a_counts = np.unique(above[above > 0], return_counts=True)
        above_ids_parts.append(a_ids)
        above_area_parts.append(a_counts)
    a_all = np.concatenate(above_ids_parts)
    a_ids, inverse = np.unique(a_all, return_inverse=True)
    area_above = np.bincount(inverse, weights=np.concatenate(above_area_parts))
    ci = np.searchsorted(ids, keys[0])
    ai = np.searchsorted(a_ids, keys[1])
    iou = inter / (area_cur[ci] + area_above[ai] - inter)
    taken_cur = np.zeros(len(ids), bool)
    taken_above = np.zeros(len(a_ids), bool)
    for k in np.argsort(-iou, kind="stable"):
        if iou[k] < threshold:
            break
        if taken_cur[ci[k]] or taken_above[ai[k]]:
            continue
        taken_cur[ci[k]] = taken_above[ai[k]] = True
        target[ci[k]] = keys[1, k]
    return target


def merged_and_split(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """How many true objects came out merged with another or split into several.

    A prediction *belongs* to a true object holding at least half of its pixels. A true
    object is *split* when two or more predictions belong to it, and *merged* when one
    prediction holds at least half of it and half of another true object.

    Returns
    -------
    dict
        ``merged``, ``split`` (fractions of the true objects), ``n_gt``, ``n_pred``.
    """
    gt = np.asarray(gt).ravel()
    pred = np.asarray(pred).ravel()
    if gt.shape != pred.shape:
        raise ValueError(f"shapes differ: {gt.shape} and {pred.shape}")
    g_ids, g_inv = np.unique(gt, return_inverse=True)
    p_ids, p_inv = np.unique(pred, return_inverse=True)
    g_size = np.bincount(g_inv)
    p_size = np.bincount(p_inv)
    both = (gt > 0) & (pred > 0)
    keys, inter = np.unique(np.stack([g_inv[both], p_inv[both]]), axis=1, return_counts=True)
    gi, pi = keys
    belongs = inter * 2 >= p_size[pi]  # the prediction is mostly inside this true object
    owners = np.bincount(gi[belongs], minlength=len(g_ids))
    covers = inter * 2 >= g_size[gi]  # the prediction holds most of this true object
    held = np.bincount(pi[covers], minlength=len(p_ids))
    merged_g = np.zeros(len(g_ids), bool)
    merged_g[gi[covers & (held[pi] >= 2)]] = True
    real = g_ids > 0
    n_gt = int(real.sum())
    return {
        "merged": float(merged_g[real].sum() / n_gt) if n_gt else 0.0,
        "split": float((owners[real] >= 2).sum() / n_gt) if n_gt else 0.0,
        "n_gt": n_gt,
        "n_pred": int((p_ids > 0).sum()),
    }


__all__ = ["AXES_LETTERS", "DEFAULT_STITCH_THRESHOLD", "check_axes", "link_slices",
           "merged_and_split", "stack_is_volume"]
