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

from collections.abc import Callable, Generator, Iterator
from typing import Any

import numpy as np
from skimage.transform import resize

from ..events import Progress, within
from ..normalize import IntensityRange, normalize_region
from .predictor import PlanePredictor
from .tiles import TilePlan

PredictFn = Callable[[np.ndarray], Generator[Any, None, np.ndarray]]
"""A sub-job: normalised ``(B, C, h, w)`` float32 slices -> (as its value) their
``(B, K, h, w)`` probabilities; what it yields (progress, messages) passes on."""

#: Bytes of input read per band of XZ/YZ slices (float32 after normalisation).
BAND_BYTES = 64 * 2**20

#: Stacks less tall than this seen from the side (slices x z spacing, in the model's pixels:
#: about 1.5 times the shipped model's nuclei) are predicted from XY alone unless the views
#: are asked for: a side slice a few rows tall shows little that XY does not, and the views
#: still cost twice the XY pass's pixels. A stack of 32 slices 1 px apart is as tall.
VIEWS_MIN_HEIGHT = 32


def fold_orthogonal_views(
    stack: Any,
    foreground: np.ndarray,
    rng: IntensityRange | None,
    predict: PredictFn,
    z_spacing: float = 1.0,
    band_bytes: int = BAND_BYTES,
) -> Iterator[Any]:
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
        A sub-job (generator): normalised ``(B, C, h, w)`` slices -> ``(B, K, h, w)``
        probabilities as its value; class 1 is the foreground. Its progress is mapped into the
        band's share and its other events pass on. It gets a band of slices at a time: thin
        slices predicted one by one cost more in calls than in pixels.
    z_spacing : float
        Distance between slices in lateral pixels: the slices are stretched along z by this
        factor before prediction, so objects look as round as in XY.
    band_bytes : int
        Input bytes read per band.

    Yields
    ------
    Progress
        Per band and within it; ``step``/``total`` count slices of both orientations.
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
            message = f"{name} slices {stop}/{length}"
            seen = yield from within(_predict_slices(planes, rng, predict, stretched, n_z),
                                     done, stop - start, total, message)
            np.minimum(fg_planes, seen, out=fg_planes)
            foreground[fg_where] = fg  # a no-op for numpy/memmap views; needed for zarr
            done += stop - start
            yield Progress(done, total, message)


def thin_stack_note(n_z: int, z_spacing: float, scale: float = 1.0) -> str | None:
    """Why a stack gets no side views by default (it is less than :data:`VIEWS_MIN_HEIGHT`
    model pixels tall seen from the side), or None when it gets them."""
    height = n_z * z_spacing * scale
    if height >= VIEWS_MIN_HEIGHT:
        return None
    spacing = "" if z_spacing == 1 else f" {z_spacing:g} px apart"
    return (f"XY slices only: seen from the side this stack is {height:.0f} px tall "
            f"({n_z} slices{spacing}), and side views are used from {VIEWS_MIN_HEIGHT} px "
            "(set side views to always to use them)")


def side_predictor(xy: PlanePredictor, hw: tuple[int, int], plan: TilePlan) -> PlanePredictor:
    """The XY pass's predictor for side slices of ``hw`` (``Z x z_spacing`` rows, at the
    model's scale) tiled by ``plan``: as many slices per net pass as the XY pass has pixels
    per pass (so a pass takes about as long, and as much memory). One slice per call made the
    views of a 4-slice stack cost 9 times its XY pass (docs/performance.md)."""
    model = xy.model
    if model.is_valid:  # tiles shrink to cover a small slice
        cover = model.input_shape_for_output(hw)
        extent = [min(t, n) for t, n in zip(plan.tile, cover, strict=True)]
    else:  # one slice's tile, padded by the net to a multiple of its divisor
        d = model.divisor
        extent = [-(-min(t, n) // d) * d for t, n in zip(plan.tile, hw, strict=True)]
    batch = max(1, xy.tile[0] * xy.tile[1] * xy.batch_size // (extent[0] * extent[1]))
    return PlanePredictor(xy.net, model, xy.device, plan.tile, batch, xy.blend, xy.margin,
                          xy.notes)


def _predict_slices(raw: np.ndarray, rng: IntensityRange | None, predict: PredictFn,
                    stretched: int, n_z: int) -> Generator[Any, None, np.ndarray]:
    """Foreground of ``(B, C, Z, L)`` slices, predicted with z stretched to ``stretched``."""
    # (the range is per channel, along the first axis)
    planes = np.moveaxis(normalize_region(np.moveaxis(raw, 1, 0), rng), 0, 1)
    b, c, _, length = planes.shape
    if stretched != n_z:
        planes = resize(planes, (b, c, stretched, length), order=1, mode="symmetric",
                        preserve_range=True, anti_aliasing=False).astype(np.float32)
    fg = np.asarray((yield from predict(np.ascontiguousarray(planes))))[:, 1]
    if stretched != n_z:
        # sample back at the slices' own positions: no anti-aliasing, which would blur the
        # one-voxel gaps the net drew between stacked objects
        fg = resize(fg, (b, n_z, length), order=1, mode="edge", preserve_range=True,
                    anti_aliasing=False)
    return fg.astype(np.float32, copy=False)


__all__ = ["BAND_BYTES", "VIEWS_MIN_HEIGHT", "fold_orthogonal_views", "side_predictor",
           "thin_stack_note"]
