"""A training set's background hint (:meth:`TrainingSet.set_background_hint`): a function that
marks unpainted pixels to be trained as background, run once per plane around its paint. A hint
that also gives the starting model's foreground tells where the paint says it is wrong.
:func:`hint_events` runs it plane by plane before a run, saying so, so a long pass over a stack
shows where it is and can be stopped between planes."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from ..events import Message
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

    def pending(self, planes: Iterable[Any]) -> list[Any]:
        """Those of ``planes`` (with ``key`` and ``ignore``, like :class:`.sampling.Plane`)
        that :meth:`see` would run the hint for now, in order: not where it has seen that
        paint, nor planes painted all over beyond the budget."""
        out, dense = [], self._dense_pixels
        for p in planes:
            action, dense = self._action(p.key, p.ignore, dense)
            if action == "run":
                out.append(p)
        return out

    def see(self, key: tuple[int, int], image: np.ndarray, ignore: np.ndarray
            ) -> tuple[Box, np.ndarray, np.ndarray | None] | None:
        """Run the hint over plane ``key`` around its paint unless it has seen that paint:
        ``(box, background, foreground)`` as cached, or None (nothing painted, or painted all
        over beyond the budget). Paint beyond the part it saw runs it on the union."""
        action, self._dense_pixels = self._action(key, ignore, self._dense_pixels)
        if action == "skip":
            return None
        seen = self._seen.get(key)
        if action == "run":
            box = paint_box(ignore, HINT_MARGIN)
            if seen is not None:  # the union: what was hinted stays
                box = (min(box[0], seen[0][0]), max(box[1], seen[0][1]),
                       min(box[2], seen[0][2]), max(box[3], seen[0][3]))
            self._seen[key] = seen = (box, *self._run(image, ignore.shape, box))
        return seen

    def plane(self, key: tuple[int, int], image: np.ndarray, target: np.ndarray,
              ignore: np.ndarray) -> Hinted:
        """``(hinted, wrong)`` of plane ``key`` (:meth:`see`): the unannotated pixels
        (``ignore``) the hint marks, and the annotated ones where the starting model's
        foreground differs from the paint's objects (``target``, touching ones cut apart as
        training does), with those within :data:`WRONG_REACH` px; each None when empty or
        unknown."""
        seen = self.see(key, image, ignore)
        if seen is None:
            return None, None
        _, background, foreground = seen
        hinted = background & ignore
        wrong = None
        if foreground is not None:
            painted = ~ignore
            wrong = (foreground != (separated_instances(target) > 0)) & painted
            wrong = ndi.binary_dilation(wrong, iterations=WRONG_REACH) & painted
        return (hinted if hinted.any() else None,
                wrong if wrong is not None and wrong.any() else None)

    def _action(self, key: tuple[int, int], ignore: np.ndarray, dense: int
                ) -> tuple[str, int]:
        """What :meth:`see` does for plane ``key`` ("skip", "run" or "cached") given ``dense``
        pixels of planes painted all over already seen, and that count after it."""
        if ignore.all():
            return "skip", dense
        seen = self._seen.get(key)
        if seen is None and not ignore.any():
            if dense + ignore.size > DENSE_PASS_PIXELS:
                return "skip", dense
            dense += ignore.size
        if seen is None or not inside(paint_box(ignore, HINT_MARGIN), seen[0]):
            return "run", dense
        return "cached", dense

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


def hint_events(hint: BackgroundHint, samples: Any) -> Iterator[Message]:
    """Run ``hint`` over the annotated planes of ``samples`` (a ``TrainingSet``) that need it,
    a note before each, then install it and say what it gave. Closed between planes, the
    planes done stay in ``hint``: the next call goes on from there."""
    planes = hint.pending(samples.annotated_planes())
    for i, p in enumerate(planes, 1):
        yield Message(f"the starting model looks at the paint: plane {i} of {len(planes)}",
                      data={"plane": i, "planes": len(planes)})
        hint.see(p.key, p.image, p.ignore)
    kept = samples.set_background_hint(hint)
    if kept:
        yield Message(f"{kept:,} unpainted pixels between objects the model already separates "
                      "are kept as background", data={"kept_gaps": kept})
    if not (snap := samples.snapshot()).sparse and snap.n_wrong:
        yield Message(f"half of the training pieces centred on the {snap.n_wrong:,} painted "
                      "pixels the model gets wrong", data={"wrong": snap.n_wrong})


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


__all__ = ["DENSE_PASS_PIXELS", "HINT_MARGIN", "WRONG_REACH", "BackgroundHint", "hint_events",
           "inside", "paint_box"]
