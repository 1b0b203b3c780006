"""A training set's background hint (:meth:`TrainingSet.set_background_hint`): a function that
marks unpainted pixels to be trained as background, run once per plane around its paint."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: The hint sees a plane this far around its paint (px): patches are centred on paint (sparse
#: labels) and reach a few hundred px at most, so a big plane painted in one corner costs the
#: hint that corner (a 2048² plane: ~7-13 s of the default model on 2 cores).
HINT_MARGIN = 256

Box = tuple[int, int, int, int]  # rows y0:y1, columns x0:x1


class BackgroundHint:
    """``hint`` (normalised image ``(C, h, w)`` -> bool ``(h, w)``) with its results cached per
    plane, each with the part of the plane it saw."""

    def __init__(self, hint: Callable[[np.ndarray], np.ndarray]) -> None:
        self.hint = hint
        self._seen: dict[tuple[int, int], tuple[Box, np.ndarray]] = {}

    def plane(self, key: tuple[int, int], image: np.ndarray, ignore: np.ndarray
              ) -> np.ndarray | None:
        """The unannotated pixels (``ignore``) of plane ``key`` that the hint marks, or None.
        The hint runs again only when the paint reaches beyond the part it saw."""
        if not ignore.any() or ignore.all():
            return None
        box = paint_box(ignore, HINT_MARGIN)
        seen = self._seen.get(key)
        if seen is None or not inside(box, seen[0]):
            if seen is not None:  # the union: what was hinted stays
                box = (min(box[0], seen[0][0]), max(box[1], seen[0][1]),
                       min(box[2], seen[0][2]), max(box[3], seen[0][3]))
            y0, y1, x0, x1 = box
            part = np.asarray(self.hint(image[:, y0:y1, x0:x1]), bool)
            if part.shape != (y1 - y0, x1 - x0):
                raise ValueError(f"the background hint gave shape {part.shape} for a plane of "
                                 f"shape {(y1 - y0, x1 - x0)}")
            mask = np.zeros(ignore.shape, bool)
            mask[y0:y1, x0:x1] = part
            self._seen[key] = seen = (box, mask)
        hinted = seen[1] & ignore
        return hinted if hinted.any() else None


def paint_box(ignore: np.ndarray, margin: int) -> Box:
    """The rows and columns of a plane within ``margin`` px of its painted (not ignored)
    pixels."""
    rows = np.flatnonzero((~ignore).any(axis=1))
    cols = np.flatnonzero((~ignore).any(axis=0))
    h, w = ignore.shape
    return (max(int(rows[0]) - margin, 0), min(int(rows[-1]) + margin + 1, h),
            max(int(cols[0]) - margin, 0), min(int(cols[-1]) + margin + 1, w))


def inside(box: Box, outer: Box) -> bool:
    """Whether ``box`` lies within ``outer``."""
    return outer[0] <= box[0] and box[1] <= outer[1] and outer[2] <= box[2] and box[3] <= outer[3]


__all__ = ["HINT_MARGIN", "BackgroundHint", "inside", "paint_box"]
