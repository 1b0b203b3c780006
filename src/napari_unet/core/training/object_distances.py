"""Distances ``d1`` / ``d2`` of every pixel to the nearest and second-nearest object.

The border term of the paper's weight map (:mod:`.weight_map`) needs, for each background pixel,
the Euclidean distance to the nearest pixel of the nearest object and to the nearest pixel of a
*different* object. Only pixels with ``d1 + d2 <= cutoff`` matter (the term is negligible
beyond), so both methods here are exact there and may report larger values (up to inf)
elsewhere.

Two exact methods, chosen by their expected cost:

* **windows** (:func:`_windowed`): one distance transform per object, inside a window around it
  that is as large as the cut-off requires. Fast for the tens to hundreds of nuclei of a
  training tile; its cost grows with the number of objects (and the pairing of neighbours with
  its square).
* **sweeps** (:func:`_swept`): a separable transform that carries, per pixel, the two nearest
  objects *with different ids*. A column pass keeps, along each column, the nearest object
  pixel and the nearest pixel of another object (two linear sweeps); the row pass combines the
  columns within the cut-off. For any excluded id, the column's nearest pixel of another id is
  one of the two kept, so the result is exact. Its cost grows with the pixels only, so a label
  image of a million one-pixel objects takes seconds rather than hours.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

# Expected seconds per unit of work, measured on one busy core (only their ratios matter).
_WINDOW_PER_OBJECT = 1.5e-4
_WINDOW_PER_PAIR = 1.5e-7
_SWEEP_PER_PIXEL_STEP = 3.3e-8


def two_nearest_distances(labels: np.ndarray, cutoff: float) -> tuple[np.ndarray, np.ndarray]:
    """``(d1, d2)`` float64 arrays of ``labels``' shape: exact on pixels with ``d1 + d2 <=
    cutoff``, larger or equal (up to inf) elsewhere.

    ``labels``: (H, W) non-negative integers, 0 = background; any id values (up to 2**64 - 1).
    """
    compact, n = compact_ids(labels)
    if n < 2:
        full = np.full(labels.shape, np.inf)
        return full, full.copy()
    pixels = compact.size
    steps = min(int(np.floor(cutoff)), max(compact.shape)) + 2
    window_cost = n * _WINDOW_PER_OBJECT + n * n * _WINDOW_PER_PAIR
    sweep_cost = pixels * steps * _SWEEP_PER_PIXEL_STEP
    if window_cost <= sweep_cost:
        return _windowed(compact, cutoff)
    return _swept(compact, cutoff)


def compact_ids(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """The objects renumbered ``1..n`` in the order of their ids (int32), and ``n``.

    Ids far above the number of pixels (a uint64 near 2**64, say) would make per-id tables
    impossible; the order is kept, so "the larger id" means the same after renumbering.
    """
    labels = np.asarray(labels)
    top = int(labels.max()) if labels.size else 0
    if top <= max(labels.size, 1) and top < 2**31:
        present = np.zeros(top + 1, bool)
        present[labels.ravel()] = True
        present[0] = False
        n = int(np.count_nonzero(present))
        if n == top:
            return labels.astype(np.int32, copy=False), n
        table = np.zeros(top + 1, np.int32)
        table[present] = np.arange(1, n + 1, dtype=np.int32)
        return table[labels], n
    ids, inverse = np.unique(labels, return_inverse=True)
    offset = 0 if ids[0] == 0 else 1  # background keeps 0, objects become 1..n
    compact = (inverse.reshape(labels.shape) + offset).astype(np.int32)
    return compact, len(ids) - 1 + offset


def _windowed(labels: np.ndarray, cutoff: float) -> tuple[np.ndarray, np.ndarray]:
    """One distance transform per object inside its window (:func:`_crops`)."""
    h, w = labels.shape
    d1 = np.full((h, w), np.inf)
    d2 = np.full((h, w), np.inf)
    for k, (y0, x0, y1, x1) in _crops(labels, cutoff):
        window = (slice(y0, y1), slice(x0, x1))
        dist = ndi.distance_transform_edt(labels[window] != k)
        near, second = d1[window], d2[window]
        closer = np.minimum(near, dist)
        np.minimum(second, np.maximum(near, dist, out=dist), out=second)
        near[...] = closer
    return d1, d2


def _crops(labels: np.ndarray, cutoff: float, chunk: int = 256) -> list[tuple[int, tuple]]:
    """``(id, (y0, x0, y1, x1))`` of every object that needs measuring, with its crop.

    Let ``c = cutoff``. On a background pixel with ``d1 + d2 <= c``, ``d1 <= c / 2`` and
    ``d2 <= c - d1 <= c - 1`` (a background pixel is >= 1 px from every object). Object ``k``
    can therefore be one of the two only if another object ``j`` lies within ``c`` of it (its
    partners; objects without any are skipped), and only on pixels ``t`` rows above its box with
    ``t <= c / 2`` (``k`` nearest) or, ``j`` being the nearest, ``t <= min(c - 1, (c + e) / 2)``
    where ``e`` is how far ``j``'s box reaches above ``k``'s: above that ``j``'s top edge too
    is ``t - e`` rows away and ``2 t - e <= d_k + d_j <= c``. The same holds for each side, so
    the crop is the object's box grown by that reach per side; it always holds the whole object.
    """
    found = [(i + 1, b) for i, b in enumerate(ndi.find_objects(labels)) if b is not None]
    if len(found) < 2:
        return []
    ids = np.array([k for k, _ in found])
    # Boxes as (y0, x0, y1, x1), half-open.
    boxes = np.array([[b[0].start, b[1].start, b[0].stop, b[1].stop] for _, b in found])
    # Signs turning (y0, x0, y1, x1) differences into "reach beyond" on each side.
    outward = np.array([-1, -1, 1, 1])
    crops = []
    # All pairs at once, a chunk of rows at a time to bound the memory for many objects.
    for start in range(0, len(ids), chunk):
        rows = np.arange(start, min(start + chunk, len(ids)))
        mine, theirs = boxes[rows, None, :], boxes[None, :, :]
        # Pixel gap between the boxes along y and x (0 when they overlap in that axis).
        gap_lo = theirs[..., :2] - mine[..., 2:] + 1
        gap_hi = mine[..., :2] - theirs[..., 2:] + 1
        gap = np.maximum(np.maximum(gap_lo, gap_hi), 0)
        partner = np.hypot(gap[..., 0], gap[..., 1]) <= cutoff
        partner[np.arange(len(rows)), rows] = False  # an object is no partner of itself
        reach_beyond = (theirs - mine) * outward  # (rows, n, 4): e per side
        reach = np.minimum(cutoff - 1.0, (cutoff + reach_beyond) / 2.0)
        reach = np.where(partner[..., None], reach, -np.inf).max(axis=1)
        reach = np.floor(np.maximum(reach, cutoff / 2.0)).astype(np.int64)
        grown = boxes[rows] + outward * reach
        lo = np.maximum(grown[:, :2], 0)
        hi = np.minimum(grown[:, 2:], labels.shape)
        for r in np.flatnonzero(partner.any(axis=1)):
            crops.append((int(ids[rows[r]]), (int(lo[r, 0]), int(lo[r, 1]),
                                              int(hi[r, 0]), int(hi[r, 1]))))
    return crops


class _TwoNearest:
    """Per pixel: squared distance and id of the nearest object (``g1``, ``l1``) and of the
    nearest object with another id (``g2``, ``l2``); id 0 = none yet, distance ``far``."""

    def __init__(self, shape: tuple[int, ...], far: int):
        dtype = np.int32 if far < 2**30 else np.int64
        self.g1 = np.full(shape, far, dtype)
        self.l1 = np.zeros(shape, np.int32)
        self.g2 = np.full(shape, far, dtype)
        self.l2 = np.zeros(shape, np.int32)

    def view(self, index) -> _TwoNearest:
        part = object.__new__(_TwoNearest)
        part.g1, part.l1, part.g2, part.l2 = (self.g1[index], self.l1[index], self.g2[index],
                                              self.l2[index])
        return part

    def offer(self, g: np.ndarray, label: np.ndarray) -> None:
        """Take the candidate object ``label`` at squared distance ``g`` (in place)."""
        valid = label > 0
        same = valid & (label == self.l1)
        np.minimum(self.g1, g, out=self.g1, where=same)
        other = valid & ~same
        first = other & (g < self.g1)
        second = other & ~first & (g < self.g2)
        np.copyto(self.g2, self.g1, where=first)
        np.copyto(self.l2, self.l1, where=first)
        np.copyto(self.g1, g, where=first)
        np.copyto(self.l1, label, where=first)
        np.copyto(self.g2, g, where=second)
        np.copyto(self.l2, label, where=second)


def _swept(labels: np.ndarray, cutoff: float) -> tuple[np.ndarray, np.ndarray]:
    """The separable two-id transform (see the module docstring)."""
    h, w = labels.shape
    reach = min(int(np.floor(cutoff)), max(h, w))
    far = (reach + 1) ** 2 * 2  # beyond anything that can matter
    columns = _column_pass(labels, reach, far)
    # Row pass: each pixel offers its column result to the pixels dx columns away.
    best = _TwoNearest((h, w), far)
    best.offer(columns.g1, columns.l1)
    best.offer(columns.g2, columns.l2)
    background = labels == 0
    for dx in range(1, min(reach, w - 1) + 1):
        step = dx * dx
        for into, come_from in (((slice(None), slice(0, w - dx)), (slice(None), slice(dx, w))),
                                ((slice(None), slice(dx, w)), (slice(None), slice(0, w - dx)))):
            target, source = best.view(into), columns.view(come_from)
            target.offer(source.g1 + step, source.l1)
            target.offer(source.g2 + step, source.l2)
        # Later columns are >= dx + 1 away: stop once no background pixel can still reach
        # d1 + d2 <= cutoff through them (its d2 would be >= dx + 1, its d1 at least
        # min(d1 now, dx + 1)).
        nxt = (dx + 1) ** 2
        hopeful = background & (best.g2 > nxt)
        d1_low = np.sqrt(np.minimum(best.g1[hopeful], nxt))
        if not np.any(d1_low + (dx + 1) <= cutoff):
            break
    d1 = np.where(best.l1 > 0, np.sqrt(best.g1), np.inf)
    d2 = np.where(best.l2 > 0, np.sqrt(best.g2), np.inf)
    return d1, d2


def _column_pass(labels: np.ndarray, reach: int, far: int) -> _TwoNearest:
    """Along each column: the nearest object pixel and the nearest pixel of another object
    within ``reach`` rows, as squared distances (two linear sweeps, down and up)."""
    h, w = labels.shape
    out = _TwoNearest((h, w), far)
    zero = np.zeros(w, out.g1.dtype)
    for rows in (range(h), range(h - 1, -1, -1)):
        # Rows away, counted up to reach + 1 (= out of reach: all such are equally useless).
        state = _TwoNearest((w,), reach + 1)
        for i in rows:
            for rows_away in (state.g1, state.g2):
                np.minimum(rows_away + 1, reach + 1, out=rows_away)
            state.offer(zero, labels[i])
            row = out.view(i)
            for rows_away, label in ((state.g1, state.l1), (state.g2, state.l2)):
                row.offer(rows_away * rows_away, np.where(rows_away <= reach, label, 0))
    return out
