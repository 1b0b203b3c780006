"""The held-out part of the annotations: which planes, or which bottom strip of each plane,
validation sees and training never does (the rule is in the :class:`TrainingSet` doc)."""

from __future__ import annotations

import numpy as np

from .sampling import Plane, Region, make_region


def split_planes(slices: list[Plane], fraction: float,
                 seed: int) -> tuple[list[Region], list[Region]]:
    """``(train, validation)`` regions of the annotated planes ``slices``.

    With at least ``ceil(1 / fraction)`` planes, about ``fraction`` of them are held out whole,
    chosen by a hash of ``(seed, image, slice)`` (a plane's choice does not change when others
    are added); with fewer, each plane's bottom strip (:func:`strip_cut`).
    """
    train: list[Region] = []
    validation: list[Region] = []
    slices = sorted(slices, key=lambda s: s.key)
    whole = fraction > 0 and len(slices) >= int(np.ceil(1.0 / fraction - 1e-9))
    if whole:
        n_val = max(1, int(round(fraction * len(slices))))
        order = sorted(slices, key=lambda s: _hash(seed, s.key))
        held = {s.key for s in order[:n_val]}
    for s in slices:
        height = s.target.shape[0]
        if whole:
            target_list = validation if s.key in held else train
            target_list.append(make_region(s, 0, height))
            continue
        cut = strip_cut(s.row_counts, fraction) if fraction > 0 else height
        if cut < height:
            train.append(make_region(s, 0, cut))
            validation.append(make_region(s, cut, height))
        else:
            train.append(make_region(s, 0, height))
    return train, validation


def _hash(seed: int, key: tuple[int, int]) -> float:
    return float(np.random.default_rng([seed, key[0], key[1] + 1]).random())


def strip_cut(row_counts: np.ndarray, fraction: float) -> int:
    """First held-out row: the bottom rows holding ~``fraction`` of the annotated pixels.

    Returns the plane height (nothing held out) if either part would have no annotated pixel.
    """
    height = row_counts.size
    total = int(row_counts.sum())
    if height < 2 or total == 0:
        return height
    suffix = np.cumsum(row_counts[::-1])[::-1]  # annotated pixels in rows >= r
    # Largest r whose bottom block [r, H) still holds at least fraction * total.
    cut = int(np.flatnonzero(suffix >= fraction * total)[-1])
    cut = min(max(cut, 1), height - 1)
    if suffix[cut] == 0 or suffix[cut] == total:
        return height
    return cut


__all__ = ["split_planes", "strip_cut"]
