"""A training set's background hint (:meth:`TrainingSet.set_background_hint`): a function that
marks unpainted pixels to be trained as background, run once per plane around its paint. A hint
that also gives the starting model's foreground tells where the paint says it is wrong."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from .weight_map import separated_instances

#: The hint sees a plane this far around its paint (px): patches are centred on paint (sparse
#: labels) and reach a few hundred px at most, so a big plane painted in one corner costs the
#: hint that corner (a 2048² plane: ~7-13 s of the default model on 2 cores).
HINT_MARGIN = 256

#: Painted pixels within this many px of one the starting model gets wrong count as wrong too.
WRONG_REACH = 2
#: Planes painted all over (nothing to hint, only the paint the model gets wrong to find) get
#: the hint's pass up to this many pixels in all: a stack corrected from a prediction must not
#: hold the start up for a pass over every plane.
DENSE_PASS_PIXELS = 2048 * 2048

Box = tuple[int, int, int, int]  # rows y0:y1, columns x0:x1
Hinted = tuple[np.ndarray | None, np.ndarray | None]


class BackgroundHint:
    """``hint`` (normalised image ``(C, h, w)`` -> bool ``(h, w)``, or a pair of them: the
    background to keep and what the starting model calls foreground) with its results cached
    per plane, each with the part of the plane it saw."""

    def __init__(self, hint: Callable[[np.ndarray], Any]) -> None:
        self.hint = hint
        self._seen: dict[tuple[int, int], tuple[Box, np.ndarray, np.ndarray | None]] = {}
        self._dense_pixels = 0  # of the planes painted all over that the hint saw

    def plane(self, key: tuple[int, int], image: np.ndarray, target: np.ndarray,
              ignore: np.ndarray) -> Hinted:
        """``(hinted, wrong)`` of plane ``key``: the unannotated pixels (``ignore``) the hint
        marks, and the annotated ones where the starting model's foreground differs from the
        paint's objects (``target``, touching ones cut apart as training does), with those
        within :data:`WRONG_REACH` px; each None when empty or unknown. The hint runs again
        only when the paint reaches beyond the part it saw."""
        if ignore.all():
            return None, None
        box = paint_box(ignore, HINT_MARGIN)
        seen = self._seen.get(key)
        if seen is None and not ignore.any():
            if self._dense_pixels + ignore.size > DENSE_PASS_PIXELS:
                return None, None
            self._dense_pixels += ignore.size
        if seen is None or not inside(box, seen[0]):
            if seen is not None:  # the union: what was hinted stays
                box = (min(box[0], seen[0][0]), max(box[1], seen[0][1]),
                       min(box[2], seen[0][2]), max(box[3], seen[0][3]))
            self._seen[key] = seen = (box, *self._run(image, ignore.shape, box))
        _, background, foreground = seen
        hinted = background & ignore
        wrong = None
        if foreground is not None:
            painted = ~ignore
            wrong = (foreground != (separated_instances(target) > 0)) & painted
            wrong = ndi.binary_dilation(wrong, iterations=WRONG_REACH) & painted
        return (hinted if hinted.any() else None,
                wrong if wrong is not None and wrong.any() else None)

    def _run(self, image: np.ndarray, shape: tuple[int, int], box: Box
             ) -> tuple[np.ndarray, np.ndarray | None]:
        y0, y1, x0, x1 = box
        out = self.hint(image[:, y0:y1, x0:x1])
        parts = out if isinstance(out, tuple) else (out, None)
        masks = []
        for part in parts:
            if part is None:
                masks.append(None)
                continue
            part = np.asarray(part, bool)
            if part.shape != (y1 - y0, x1 - x0):
                raise ValueError(f"the background hint gave shape {part.shape} for a plane of "
                                 f"shape {(y1 - y0, x1 - x0)}")
            mask = np.zeros(shape, bool)
            mask[y0:y1, x0:x1] = part
            masks.append(mask)
        return masks[0], masks[1]


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


__all__ = ["DENSE_PASS_PIXELS", "HINT_MARGIN", "WRONG_REACH", "BackgroundHint", "inside",
           "paint_box"]
