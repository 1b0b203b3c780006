"""Training patches: where they are cut, and the batch of one step (numpy/scipy only).

This module is what batch-preparation worker processes import (:mod:`napari_unet.core.
batchworkers`), so it never imports torch: a spawned worker starts in about a second.

**Annotation-aware sampling.** The loss lives only where the user painted. When the annotations
are sparse (they cover less than :data:`SPARSE_COVERAGE` of the training area), every patch is
centred on an annotated pixel, drawn half of the time among annotated *object* pixels and half
among annotated *background* pixels (each uniformly over all training planes), so ten painted
nuclei get as many patches as a large painted background blob, and no step is spent on a patch
without a single annotated pixel. Dense annotations keep the classic mix: 80 % of the patches are
centred on a uniformly drawn annotated pixel, the rest lie anywhere; where the planes know which
painted pixels the starting model gets wrong (:class:`.hints.BackgroundHint`), half of the
patches are centred on one of those first (:data:`WRONG_SHARE`), so a corrected crop trains
on its corrections more than on what the model already had right.

**Determinism.** The patches of step ``s`` come from a generator seeded with ``(seed, s)``: they do
not depend on which process or thread makes them, and a resumed run sees the data of an
uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .augment import AugmentConfig, augment
from .weight_map import targets_and_weights

#: Below this annotated share of the training area, labels count as sparse (see module doc).
SPARSE_COVERAGE = 0.5
#: Probability of centring a patch on an annotated pixel when labels are dense.
DENSE_ANNOTATED_BIAS = 0.8
#: Share of the patches of dense labels centred on painted pixels the starting model gets wrong.
WRONG_SHARE = 0.5


# -- the sampler's data model (built by TrainingSet, shipped to worker processes) --------------
@dataclass(frozen=True)
class Plane:
    """One annotated 2D plane: normalised image and converted labels (never mutated)."""

    key: tuple[int, int]  # (source index, z) with z = -1 for a 2D source
    image: np.ndarray | None  # (C, H, W) float32; None only in transit (see strip_images)
    target: np.ndarray  # (H, W) int32 instances or classes
    ignore: np.ndarray  # (H, W) bool
    row_counts: np.ndarray  # annotated pixels per row
    # unannotated pixels trained as background all the same (TrainingSet.set_background_hint):
    # not patch centres, not counted as annotated, not held out for validation
    hint: np.ndarray | None = None
    # painted pixels the starting model gets wrong (TrainingSet.set_background_hint)
    wrong: np.ndarray | None = None


@dataclass(frozen=True)
class Region:
    """Rows ``[start, stop)`` of a plane used for training or validation."""

    plane: Plane
    start: int
    stop: int
    objects: np.ndarray  # flat indices (within the region) of annotated non-background pixels
    background: np.ndarray  # flat indices of annotated background pixels
    wrong: np.ndarray  # flat indices of painted pixels the starting model gets wrong

    @property
    def image(self) -> np.ndarray:
        return self.plane.image[:, self.start:self.stop]

    @property
    def target(self) -> np.ndarray:
        return self.plane.target[self.start:self.stop]

    @property
    def ignore(self) -> np.ndarray:
        return self.plane.ignore[self.start:self.stop]

    @property
    def hint(self) -> np.ndarray | None:
        return None if self.plane.hint is None else self.plane.hint[self.start:self.stop]

    @property
    def n_annotated(self) -> int:
        return int(self.objects.size + self.background.size)


def make_region(plane: Plane, start: int, stop: int) -> Region:
    """The region of ``plane`` between rows ``start`` and ``stop`` with its annotated pixels."""
    ignore = plane.ignore[start:stop]
    fg = plane.target[start:stop] > 0
    objects = np.flatnonzero(~ignore & fg)
    background = np.flatnonzero(~ignore & ~fg)
    wrong = np.flatnonzero(plane.wrong[start:stop]) if plane.wrong is not None \
        else np.zeros(0, np.int64)
    return Region(plane, int(start), int(stop), _small_index(objects), _small_index(background),
                  _small_index(wrong))


@dataclass(frozen=True)
class Snapshot:
    """Everything the sampler reads; a TrainingSet swaps its snapshot atomically on update."""

    train: tuple[Region, ...]
    validation: tuple[Region, ...]
    version: int = 0
    # cumulative counts over ``train`` (filled in by __post_init__)
    cum_objects: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]
    cum_background: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]
    cum_annotated: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]
    cum_wrong: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]
    cum_areas: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        objects = np.array([r.objects.size for r in self.train], np.int64)
        background = np.array([r.background.size for r in self.train], np.int64)
        areas = np.array([r.target.size for r in self.train], np.int64)
        object.__setattr__(self, "cum_objects", np.cumsum(objects))
        object.__setattr__(self, "cum_background", np.cumsum(background))
        object.__setattr__(self, "cum_annotated", np.cumsum(objects + background))
        object.__setattr__(self, "cum_wrong",
                           np.cumsum(np.array([r.wrong.size for r in self.train], np.int64)))
        object.__setattr__(self, "cum_areas", np.cumsum(areas))

    @property
    def n_annotated(self) -> int:
        return int(self.cum_annotated[-1]) if self.train else 0

    @property
    def n_wrong(self) -> int:
        """Painted training pixels the starting model gets wrong (0: unknown or none)."""
        return int(self.cum_wrong[-1]) if self.train else 0

    @property
    def coverage(self) -> float:
        """Annotated share of the training area."""
        area = int(self.cum_areas[-1]) if self.train else 0
        return self.n_annotated / area if area else 0.0

    @property
    def sparse(self) -> bool:
        """True when patches should always be centred on annotations (see module doc)."""
        return self.coverage < SPARSE_COVERAGE


def strip_images(snapshot: Snapshot, known: set[tuple[int, int]]) -> Snapshot:
    """A copy of the training part for shipping to a worker: images the worker already has
    (keys in ``known``) replaced by None; ``known`` is updated with the keys sent."""
    regions = []
    for region in snapshot.train:
        plane = region.plane
        if plane.key in known:
            plane = replace(plane, image=None)
        regions.append(replace(region, plane=plane))
    known.update(r.plane.key for r in snapshot.train)
    return Snapshot(tuple(regions), (), snapshot.version)


def restore_images(snapshot: Snapshot, cache: dict[tuple[int, int], np.ndarray]) -> Snapshot:
    """Inverse of :func:`strip_images` on the worker side (``cache``: key -> image, updated)."""
    regions = []
    for region in snapshot.train:
        plane = region.plane
        if plane.image is None:
            plane = replace(plane, image=cache[plane.key])
        else:
            cache[plane.key] = plane.image
        regions.append(replace(region, plane=plane))
    return Snapshot(tuple(regions), (), snapshot.version)


# -- patch geometry ----------------------------------------------------------------------------
def check_size(size: tuple[int, int]) -> tuple[int, int]:
    """``(h, w)`` as positive integers; ``ValueError`` otherwise."""
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"patch size must be a pair of integers (h, w), got {size!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"patch size must be positive, got {size!r}")
    return h, w


def clamp_start(start: int, length: int, size: int) -> int:
    """Keep a patch inside the image when the image is large enough."""
    if length >= size:
        return min(max(start, 0), length - size)
    return start


def mirror_indices(start: int, count: int, length: int) -> np.ndarray:
    """Indices ``start .. start + count - 1`` folded into ``[0, length)`` like np.pad symmetric.

    The symmetric extension is periodic with period ``2 * length``, so any distance outside the
    image (even patches much larger than the image) maps back with one modulo.
    """
    idx = np.arange(start, start + count) % (2 * length)
    return np.where(idx >= length, 2 * length - 1 - idx, idx)


def draw_patch(
    snapshot: Snapshot,
    rng: np.random.Generator,
    size: tuple[int, int],
    margin: int = 0,
    annotated_bias: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut one random training patch from ``snapshot``.

    Parameters
    ----------
    size : (h, w)
        Patch size without margin.
    margin : int
        Extra context on every side, from the image where it exists, mirrored beyond.
    annotated_bias : float in [0, 1], optional
        None (default): annotation-aware (see the module docstring). A number: the probability
        of centring the patch on an annotated pixel drawn uniformly among all annotated training
        pixels; otherwise the patch lies uniformly in a plane drawn by area.

    Returns
    -------
    image (C, h + 2 margin, w + 2 margin) float32, target (same, int32), ignore (same, bool)
    """
    h, w = check_size(size)
    if int(margin) != margin or margin < 0:
        raise ValueError(f"margin must be an integer >= 0, got {margin!r}")
    if annotated_bias is not None and not 0.0 <= annotated_bias <= 1.0:
        raise ValueError(f"annotated_bias must be in [0, 1], got {annotated_bias!r}")
    margin = int(margin)
    snap = snapshot
    centre = None
    if annotated_bias is None and snap.sparse and snap.n_annotated:
        # Objects or background with equal odds (either alone when the other is missing).
        n_obj, n_bg = int(snap.cum_objects[-1]), int(snap.cum_background[-1])
        use_objects = n_bg == 0 or (n_obj > 0 and rng.random() < 0.5)
        cum = snap.cum_objects if use_objects else snap.cum_background
        r, offset = _pick(cum, rng)
        region = snap.train[r]
        flat = (region.objects if use_objects else region.background)[offset]
        centre = divmod(int(flat), region.target.shape[1])
    elif annotated_bias is None and snap.n_wrong and rng.random() < WRONG_SHARE:
        r, offset = _pick(snap.cum_wrong, rng)
        region = snap.train[r]
        centre = divmod(int(region.wrong[offset]), region.target.shape[1])
    else:
        bias = DENSE_ANNOTATED_BIAS if annotated_bias is None else annotated_bias
        if snap.n_annotated and rng.random() < bias:
            r, offset = _pick(snap.cum_annotated, rng)
            region = snap.train[r]
            n_obj = region.objects.size
            flat = region.objects[offset] if offset < n_obj else region.background[offset - n_obj]
            centre = divmod(int(flat), region.target.shape[1])
    if centre is not None:
        rh, rw = region.target.shape
        y0 = clamp_start(centre[0] - h // 2, rh, h)
        x0 = clamp_start(centre[1] - w // 2, rw, w)
    else:
        r = int(np.searchsorted(snap.cum_areas, rng.integers(int(snap.cum_areas[-1])),
                                side="right"))
        region = snap.train[r]
        rh, rw = region.target.shape
        y0 = int(rng.integers(min(0, rh - h), max(0, rh - h) + 1))
        x0 = int(rng.integers(min(0, rw - w), max(0, rw - w) + 1))
    rows = mirror_indices(y0 - margin, h + 2 * margin, rh)
    cols = mirror_indices(x0 - margin, w + 2 * margin, rw)
    image = region.image[:, rows[:, None], cols[None, :]]
    target = region.target[rows[:, None], cols[None, :]]
    ignore = region.ignore[rows[:, None], cols[None, :]]
    if region.hint is not None:  # (the hint is background where nothing is painted)
        ignore = ignore & ~region.hint[rows[:, None], cols[None, :]]
    return image, target, ignore


def _pick(cumulative: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    """A uniformly drawn item over regions: ``(region index, offset within the region)``."""
    k = int(rng.integers(int(cumulative[-1])))
    r = int(np.searchsorted(cumulative, k, side="right"))
    return r, k - (int(cumulative[r - 1]) if r else 0)


def _small_index(flat: np.ndarray) -> np.ndarray:
    if flat.size and flat[-1] <= np.iinfo(np.int32).max:
        return flat.astype(np.int32)
    return flat


# -- the batch of one step ---------------------------------------------------------------------
@dataclass(frozen=True)
class BatchSpec:
    """What a batch maker needs besides the snapshot: plain values, cheap to ship to a worker.

    ``out_hw`` is the net's output for a tile of ``out_hw + 2 * margin`` (a valid net's context
    is the margin; padded nets have margin 0).
    """

    batch_size: int
    out_hw: tuple[int, int]
    margin: int
    instances_mode: bool
    num_classes: int
    w0: float = 10.0
    sigma: float = 5.0
    class_weights: Any = "balanced"
    separate_touching: bool = True
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    seed: int = 0
    annotated_bias: float | None = None


def make_batch(snapshot: Snapshot, spec: BatchSpec, step: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The batch of ``step``: ``image (N, C, T, T) float32, target (N, h, w) int64,
    weights (N, h, w) float32`` (weights 0 where nothing is annotated)."""
    rng = np.random.default_rng([int(spec.seed), int(step)])
    items = [make_item(snapshot, spec, rng) for _ in range(spec.batch_size)]
    return (np.stack([i[0] for i in items]), np.stack([i[1] for i in items]),
            np.stack([i[2] for i in items]))


def make_item(snapshot: Snapshot, spec: BatchSpec, rng: np.random.Generator
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One augmented tile with its cropped target and weights."""
    image, labels, ignore = draw_patch(snapshot, rng, spec.out_hw, spec.margin,
                                       spec.annotated_bias)
    image, labels, ignore = augment(np.asarray(image, np.float32), labels, ignore, rng,
                                    spec.augment)
    # The weight map sees the whole tile, so objects in the context still count for d1/d2.
    target, weights = targets_and_weights(
        labels, ignore, spec.instances_mode, spec.num_classes, spec.w0, spec.sigma,
        spec.class_weights, spec.separate_touching)
    h, w = spec.out_hw
    top, left = (target.shape[0] - h) // 2, (target.shape[1] - w) // 2
    return (np.ascontiguousarray(image, np.float32),
            np.ascontiguousarray(target[top:top + h, left:left + w], np.int64),
            np.ascontiguousarray(weights[top:top + h, left:left + w], np.float32))


__all__ = [
    "DENSE_ANNOTATED_BIAS",
    "SPARSE_COVERAGE",
    "BatchSpec",
    "Plane",
    "Region",
    "Snapshot",
    "check_size",
    "clamp_start",
    "draw_patch",
    "make_batch",
    "make_item",
    "make_region",
    "mirror_indices",
    "restore_images",
    "strip_images",
]
