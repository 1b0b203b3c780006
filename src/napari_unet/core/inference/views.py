"""Orthogonal views of a Z stack ("2.5D"): the net also sees the XZ and YZ slices.

A 2D net draws a background gap between objects that touch *in the plane it sees*. Nuclei
stacked along z touch in no XY slice, so slice-wise prediction cannot separate them; in the XZ
and YZ slices they sit side by side and get their gap. So after the XY pass, every XZ and YZ
slice is resampled along z to isotropic pixels (``z_spacing``), predicted, resampled back, and
folded into the foreground by the **minimum**: a voxel stays foreground only where all three
views agree, so each view's gaps survive. (Averaging the views dilutes the gaps: on the
synthetic volumes of ``benchmarks/bench_volume.py`` the mean merged more nuclei than XY alone,
the minimum far fewer; docs/big-images-and-volumes.md.)

The minimum is folded in place, band by band: memory holds one band of slices of the input and
of the foreground (about :data:`BAND_BYTES`), never a second volume.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from skimage.transform import resize

from ..events import Progress
from ..normalize import IntensityRange, normalize_region

PredictFn = Callable[[np.ndarray], np.ndarray]
"""One normalised ``(C, h, w)`` float32 slice -> its ``(K, h, w)`` probabilities."""

#: Bytes of input read per band of XZ/YZ slices (float32 after normalisation).
BAND_BYTES = 64 * 2**20


def fold_orthogonal_views(
    stack: Any,
    foreground: np.ndarray,
    rng: IntensityRange | None,
    predict: PredictFn,
    z_spacing: float = 1.0,
    band_bytes: int = BAND_BYTES,
) -> Iterator[Progress]:
    """Predict every XZ and YZ slice of ``stack`` and fold its foreground into ``foreground``.

    Parameters
    ----------
    stack : (Z, C, H, W) array-like
        The raw volume (memory maps and dask arrays are read one band at a time).
    foreground : (Z, H, W) float array, written in place
        The XY pass's foreground probability; becomes the minimum over the three views.
    rng : IntensityRange or None
        The volume's normalisation (the XY pass's), or None for none.
    predict : callable
        One normalised ``(C, h, w)`` plane -> ``(K, h, w)`` probabilities; class 1 is the
        foreground.
    z_spacing : float
        Distance between slices in lateral pixels: the slices are stretched along z by this
        factor before prediction, so objects look as round as in XY.
    band_bytes : int
        Input bytes read per band.

    Yields
    ------
    Progress
        One per band; ``step``/``total`` count slices of both orientations.
    """
    n_z, channels, h, w = (int(n) for n in stack.shape)
    if foreground.shape != (n_z, h, w):
        raise ValueError(f"foreground {foreground.shape} does not match the stack "
                         f"{(n_z, h, w)}")
    if not z_spacing > 0:
        raise ValueError(f"z_spacing must be > 0, got {z_spacing!r}")
    stretched = max(1, round(n_z * z_spacing))
    total, done = h + w, 0
    for axis, length, name in ((2, h, "XZ"), (3, w, "YZ")):
        other = w if axis == 2 else h
        band = max(1, int(band_bytes // (4 * n_z * channels * other)))
        for start in range(0, length, band):
            stop = min(start + band, length)
            where = [slice(None)] * 4
            where[axis] = slice(start, stop)
            block = np.asarray(stack[tuple(where)])  # (Z, C, b, W) or (Z, C, H, b)
            # one slice per index along ``axis``: (b, C, Z, other)
            planes = np.moveaxis(block, (axis, 1), (0, 1))
            fg_where = tuple(where[i] for i in (0, 2, 3))
            fg = np.asarray(foreground[fg_where])  # (Z, b, W) or (Z, H, b)
            fg_planes = np.moveaxis(fg, axis - 1, 0)  # (b, Z, other)
            for i, raw in enumerate(planes):
                seen = _predict_slice(raw, rng, predict, stretched, n_z)
                np.minimum(fg_planes[i], seen, out=fg_planes[i])
            foreground[fg_where] = fg  # a no-op for numpy/memmap views; needed for zarr
            done += stop - start
            yield Progress(done, total, f"{name} slices {stop}/{length}")


def _predict_slice(raw: np.ndarray, rng: IntensityRange | None, predict: PredictFn,
                   stretched: int, n_z: int) -> np.ndarray:
    """Foreground of one ``(C, Z, L)`` slice, predicted with z stretched to ``stretched``."""
    plane = normalize_region(raw, rng)
    length = plane.shape[-1]
    if stretched != n_z:
        plane = resize(plane, (plane.shape[0], stretched, length), order=1, mode="symmetric",
                       preserve_range=True, anti_aliasing=False).astype(np.float32)
    fg = np.asarray(predict(np.ascontiguousarray(plane)))[1]
    if stretched != n_z:
        # sample back at the slices' own positions: no anti-aliasing, which would blur the
        # one-voxel gaps the net drew between stacked objects
        fg = resize(fg, (n_z, length), order=1, mode="edge", preserve_range=True,
                    anti_aliasing=False)
    return fg.astype(np.float32, copy=False)


__all__ = ["BAND_BYTES", "fold_orthogonal_views"]
