"""Training data: annotated images as a source of training patches, updatable while training.

:class:`TrainingSet` holds normalised copies of the annotated 2D slices (labels converted by
:mod:`core.training.labels`, images by :mod:`core.normalize`), keeps a spatially
separate held-out part for validation, samples patches (:mod:`core.training.sampling`) and
accepts new labels (``update``) from another thread while training runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ..constants import DEFAULT_NORMALIZATION, MODES
from ..layout import pick_channel, training_image_layout
from ..model.meta import check_normalization
from ..normalize import normalize
from .hints import BackgroundHint
from .holdout import split_planes
from .labels import (
    INSTANCE_CONVENTIONS,
    SEMANTIC_CONVENTIONS,
    check_num_classes,
    labels_to_classes,
    labels_to_instances,
)
from .sampling import Plane, Snapshot, draw_patch


class TrainingSet:
    """Annotated images as a source of training patches, updatable while training runs.

    Parameters
    ----------
    images : sequence of arrays
        Each ``(H, W)``, ``(H, W)`` plus a channel axis, a stack ``(Z, H, W)``, or a stack with a
        channel axis (``(Z, C, H, W)`` after moving the channel axis). NumPy or dask arrays.
    labels : sequence of integer arrays
        One per image, the image's shape without its channel axis, in ``convention``.
    convention : str
        Label convention (see module docstring). ``sparse``/``dense``/``binary`` need
        ``mode="instances"``, ``semantic``/``semantic-sparse`` need ``mode="semantic"``.
    channel_axis : int, optional
        Channel axis of every image (same for all); None for single-channel images.
    mode : {"instances", "semantic"}
    num_classes : int
        Output classes of the net; 2 in instance mode.
    normalization : dict
        Normalisation spec (see :func:`normalize`), applied per 2D plane and per channel.
    validation_fraction : float in [0, 0.5]
        Share of the annotated pixels held out for validation (see Notes).
    seed : int
        Seed of the choice of held-out samples.
    channel : int, optional
        Train on this channel of the images only (along ``channel_axis``); recorded in the
        model, so that prediction takes the same channel by default.

    Notes
    -----
    **Samples.** Every 2D plane with at least one annotated pixel is a sample. In stacks, a plane
    whose labels are all 0 is skipped in every convention, including those where 0 means
    background: in a partly annotated stack such a plane has almost always just not been
    annotated yet. A 2D image with dense all-zero labels is used (all background).

    **Validation.** With at least ``ceil(1 / validation_fraction)`` samples, about
    ``validation_fraction`` of the samples (chosen by a seeded hash of (image, slice), so the
    choice of a sample does not change when others are added) are held out whole. With fewer,
    each sample's bottom rows holding about ``validation_fraction`` of its annotated pixels are
    held out. Training patches are cut from the rest only, with the cut treated as an image
    border (mirrored), so no held-out pixel ever reaches a training patch. A sample whose held-out
    strip or training part would have no annotated pixel is used whole for training. The split is
    recomputed on ``update``.

    **Updates.** ``update(index, labels)`` replaces the labels of ``images[index]`` (the whole
    array, e.g. a napari Labels layer's data, stacks included); planes that become annotated are
    normalised then. It is thread-safe: samplers keep using a consistent snapshot, replaced
    atomically at the end of the update.
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        labels: Sequence[np.ndarray],
        convention: str = "dense",
        channel_axis: int | None = None,
        mode: str = "instances",
        num_classes: int = 2,
        normalization: Mapping[str, Any] | None = DEFAULT_NORMALIZATION,
        validation_fraction: float = 0.1,
        seed: int = 0,
        channel: int | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        allowed = INSTANCE_CONVENTIONS if mode == "instances" else SEMANTIC_CONVENTIONS
        if convention not in allowed:
            raise ValueError(
                f"label convention {convention!r} does not fit mode {mode!r} "
                f"(use one of {allowed})"
            )
        check_num_classes(num_classes)
        if mode == "instances" and num_classes != 2:
            raise ValueError(f"instance mode uses 2 classes, got num_classes={num_classes}")
        if not 0.0 <= validation_fraction <= 0.5:
            raise ValueError(
                f"validation_fraction must be in [0, 0.5], got {validation_fraction!r}"
            )
        if isinstance(images, np.ndarray) or isinstance(labels, np.ndarray):
            raise ValueError("images and labels must be sequences (lists) of arrays, one per image")
        if len(images) != len(labels):
            raise ValueError(f"got {len(images)} images but {len(labels)} label arrays")
        if len(images) == 0:
            raise ValueError("no images given")
        if channel is not None:  # one channel of each image: from here on, no channel axis
            images = [pick_channel(image, channel_axis, int(channel)) for image in images]
            channel_axis = None
        self.channel = None if channel is None else int(channel)
        self._mode = mode
        self._convention = convention
        self._num_classes = int(num_classes)
        self._normalization = check_normalization(normalization)
        self._validation_fraction = float(validation_fraction)
        self._seed = int(seed)
        self._lock = threading.Lock()
        self._version = 0
        self._hint: BackgroundHint | None = None

        self._images: list[Any] = []  # per source: array with channels at axis -3 or None
        self._stacked: list[bool] = []
        self._raw: list[np.ndarray] = []  # private copies of the labels
        self._slices: list[dict[int, Plane]] = []
        self._norm_cache: list[dict[int, np.ndarray]] = []
        channels = None
        for i, image in enumerate(images):
            image, stacked, n_channels = training_image_layout(image, channel_axis, i)
            if channels is None:
                channels = n_channels
            elif n_channels != channels:
                raise ValueError(
                    f"image {i} has {n_channels} channels but image 0 has {channels}"
                )
            self._images.append(image)
            self._stacked.append(stacked)
            self._norm_cache.append({})
            raw = self._check_source_labels(i, labels[i])
            self._raw.append(raw)
            self._slices.append(self._convert_source(i, raw, previous=None))
        self._in_channels = int(channels)

        all_slices = [s for per in self._slices for s in per.values()]
        if not all_slices:
            raise ValueError("no annotated pixels: every label is 'not annotated'")
        present = np.zeros(self._num_classes, bool)
        for s in all_slices:
            present |= self._classes_present(s)
        if present.sum() < 2:
            which = "background" if present[0] else "foreground"
            if mode == "semantic":
                which = f"class {int(np.flatnonzero(present)[0])}"
            raise ValueError(
                f"only one class annotated ({which}); annotate both background and objects"
                if mode == "instances" else
                f"only one class annotated ({which}); annotate at least two classes"
            )
        self._snapshot = self._split(all_slices)

    # ------------------------------------------------------------------ properties

    @property
    def in_channels(self) -> int:
        """Number of image channels."""
        return self._in_channels

    @property
    def mode(self) -> str:
        """``"instances"`` or ``"semantic"``."""
        return self._mode

    @property
    def convention(self) -> str:
        """Label convention of the labels given to the constructor and ``update``."""
        return self._convention

    @property
    def num_classes(self) -> int:
        """Output classes of the net (2 in instance mode)."""
        return self._num_classes

    @property
    def normalization(self) -> dict[str, Any]:
        """The normalisation spec applied to the images (to store with the model)."""
        return dict(self._normalization)

    @property
    def n_images(self) -> int:
        """Number of (image, labels) pairs; valid indices of ``update``."""
        return len(self._images)

    @property
    def n_samples(self) -> int:
        """Number of annotated 2D planes (training and held-out)."""
        with self._lock:
            return sum(len(per) for per in self._slices)

    @property
    def n_annotated_pixels(self) -> int:
        """Annotated pixels over all planes (training and held-out)."""
        with self._lock:
            return int(sum(s.row_counts.sum() for per in self._slices for s in per.values()))

    @property
    def n_objects(self) -> int:
        """Distinct objects (instance mode) or 0 (semantic mode)."""
        if self._mode != "instances":
            return 0
        with self._lock:
            return int(sum(len(_object_areas(s)) for per in self._slices for s in per.values()))

    @property
    def object_diameter(self) -> float | None:
        """Median equivalent diameter (px) of the annotated objects, or None if there are none."""
        if self._mode != "instances":
            return None
        with self._lock:
            areas = [_object_areas(s) for per in self._slices for s in per.values()]
        areas = np.concatenate(areas) if areas else np.zeros(0)
        if areas.size == 0:
            return None
        return float(np.median(2.0 * np.sqrt(areas / np.pi)))

    @property
    def version(self) -> int:
        """Increases with every change of the labels (``update``); workers compare it."""
        with self._lock:
            return self._snapshot.version

    def snapshot(self) -> Snapshot:
        """The current, immutable view of the training and held-out regions (what samplers and
        batch-preparation workers read)."""
        with self._lock:
            return self._snapshot

    # ------------------------------------------------------------------ updates

    def update(self, index: int, labels: np.ndarray) -> None:
        """Replace the labels of ``images[index]`` (thread-safe).

        Parameters
        ----------
        index : int
            Index of the (image, labels) pair given to the constructor (not of a plane).
        labels : array
            The complete new labels of that image (for a stack, the whole ``(Z, H, W)`` array),
            in the training set's convention. Copied; later changes to it have no effect.

        Raises
        ------
        ValueError
            Bad index, shape, dtype or values, or no annotated pixel left anywhere; the
            training set is then unchanged. Annotations of a single class are accepted here (the
            user may be mid-way through editing); the constructor is where that is refused.
        """
        if int(index) != index or not 0 <= index < len(self._images):
            raise ValueError(f"index {index!r} is out of range for {len(self._images)} images")
        index = int(index)
        with self._lock:
            raw = self._check_source_labels(index, labels)
            converted = self._convert_source(index, raw, previous=self._slices[index])
            slices = list(self._slices)
            slices[index] = converted
            all_slices = [s for per in slices for s in per.values()]
            if not all_slices:
                raise ValueError("no annotated pixels left: the update would leave nothing to "
                                 "train on")
            snapshot = self._split(all_slices)
            self._raw[index] = raw
            self._slices = slices
            self._snapshot = snapshot

    def annotated_planes(self) -> list[Plane]:
        """The annotated planes as they are now (normalised image, converted labels)."""
        with self._lock:
            return [s for per in self._slices for s in per.values()]

    def set_background_hint(self, hint: BackgroundHint | Callable[[np.ndarray], Any] | None
                            ) -> int:
        """Train the unannotated pixels that ``hint`` marks as background too (instance mode).

        ``hint`` maps a normalised image ``(C, h, w)`` to a bool ``(h, w)`` mask, or to a pair
        ``(mask, foreground)`` where ``foreground`` is what the starting model calls object: the
        painted pixels it gets wrong are then where half the patches of densely painted
        labels are centred (:mod:`.sampling`). It sees each annotated plane around its paint
        (:class:`.hints.BackgroundHint`), now and for planes annotated later (``update``);
        annotated pixels keep their labels. Hinted pixels are never patch centres, are not
        counted as annotated and are not held out for validation: they only add background
        where a patch has nothing painted. A :class:`.hints.BackgroundHint` is taken as it
        is, with the planes it has seen (:func:`.hints.hint_events`). None removes the hint.

        Returns
        -------
        int
            The unannotated pixels now trained as background.
        """
        if hint is not None and self._mode != "instances":
            raise ValueError("a background hint needs instance labels")
        with self._lock:
            before = self._hint
            self._hint = hint if hint is None or isinstance(hint, BackgroundHint) \
                else BackgroundHint(hint)
            try:
                slices = [self._convert_source(i, raw, previous=None)
                          for i, raw in enumerate(self._raw)]
            except BaseException:  # (unchanged, as after a refused update)
                self._hint = before
                raise
            self._slices = slices
            self._snapshot = self._split([s for per in slices for s in per.values()])
            return int(sum(s.hint.sum() for per in slices for s in per.values()
                           if s.hint is not None))

    # ------------------------------------------------------------------ sampling

    def sample_patch(
        self,
        rng: np.random.Generator,
        size: tuple[int, int],
        margin: int = 0,
        annotated_bias: float | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Cut one random training patch.

        Parameters
        ----------
        rng : numpy.random.Generator
        size : (h, w)
            Patch size without margin.
        margin : int
            Extra context on every side (for a valid net's context or for augmentation);
            taken from the image where it exists, mirrored (``np.pad`` "symmetric") beyond.
        annotated_bias : float in [0, 1], optional
            None (default): annotation-aware sampling (sparse labels: always centred on an
            annotated object or background pixel; see :mod:`napari_unet.core.training.sampling`). A
            number: the probability of centring the patch on a random annotated pixel (chosen
            uniformly among all annotated training pixels); otherwise the patch lies uniformly at
            random in a plane chosen with probability proportional to its area.

        Returns
        -------
        image : (C, h + 2 margin, w + 2 margin) float32
        target : (h + 2 margin, w + 2 margin) int32
            Instances (instance mode) or classes (semantic mode).
        ignore : (h + 2 margin, w + 2 margin) bool
        """
        with self._lock:
            snap = self._snapshot
        return draw_patch(snap, rng, size, margin, annotated_bias)

    def validation_items(
        self, margin: int = 0
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """The held-out crops, for evaluation.

        Parameters
        ----------
        margin : int
            Mirror-pad each crop by this many pixels (from the crop itself, never from the
            training part), e.g. for a valid net's context.

        Returns
        -------
        list of (image (C, h, w) float32, target (h, w) int32, ignore (h, w) bool)
            One item per held-out block with at least one annotated pixel; empty if
            ``validation_fraction`` is 0 or nothing could be held out.
        """
        if int(margin) != margin or margin < 0:
            raise ValueError(f"margin must be an integer >= 0, got {margin!r}")
        with self._lock:
            snap = self._snapshot
        items = []
        for region in snap.validation:
            image, target, ignore = region.image, region.target, region.ignore
            if margin:
                pad = ((margin, margin), (margin, margin))
                image = np.pad(image, ((0, 0), *pad), mode="symmetric")
                target = np.pad(target, pad, mode="symmetric")
                ignore = np.pad(ignore, pad, mode="symmetric")
            items.append((image.copy(), target.copy(), ignore.copy()))
        return items

    def split_summary(self) -> list[dict[str, Any]]:
        """Where the split lies: one dict per region with image index, z, rows and role."""
        with self._lock:
            snap = self._snapshot
        out = []
        for role, regions in (("train", snap.train), ("validation", snap.validation)):
            for region in regions:
                src, z = region.plane.key
                out.append({"image": src, "z": None if z < 0 else z, "rows": (region.start,
                            region.stop), "role": role, "annotated": region.n_annotated})
        return out

    # ------------------------------------------------------------------ internals

    def _check_source_labels(self, index: int, labels: np.ndarray) -> np.ndarray:
        image = self._images[index]
        expected = (image.shape[0], *image.shape[-2:]) if self._stacked[index] \
            else tuple(image.shape[-2:])
        labels = np.array(labels, copy=True)
        if labels.shape != expected:
            raise ValueError(
                f"image {index}: labels shape {labels.shape} does not match image shape "
                f"{expected}"
            )
        if labels.dtype == bool:
            labels = labels.astype(np.uint8)
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"image {index}: labels must be integers, got dtype {labels.dtype}")
        if labels.size and labels.min() < 0:
            raise ValueError(
                f"image {index}: labels must be >= 0, got a negative label {labels.min()}"
            )
        return labels

    def _convert_source(
        self, index: int, raw: np.ndarray, previous: dict[int, Plane] | None
    ) -> dict[int, Plane]:
        stacked = self._stacked[index]
        planes = range(raw.shape[0]) if stacked else [-1]
        old_raw = self._raw[index] if previous is not None else None
        out: dict[int, Plane] = {}
        for z in planes:
            plane = raw[z] if stacked else raw
            if stacked and not plane.any():
                continue
            if previous is not None and z in previous:
                old_plane = old_raw[z] if stacked else old_raw
                if np.array_equal(old_plane, plane):
                    out[z] = previous[z]
                    continue
            where = f"image {index}" + (f", slice {z}" if stacked else "")
            try:
                if self._mode == "instances":
                    target, ignore = labels_to_instances(plane, self._convention)
                else:
                    target, ignore = labels_to_classes(plane, self._convention,
                                                       self._num_classes)
            except ValueError as err:
                raise ValueError(f"{where}: {err}") from None
            row_counts = (~ignore).sum(axis=1)
            if row_counts.sum() == 0:
                continue
            image = self._normalized(index, z, where)
            hint, wrong = (None, None) if self._hint is None \
                else self._hint.plane((index, z), image, target, ignore)
            out[z] = Plane((index, z), image, target, ignore, row_counts, hint, wrong)
        return out

    def _normalized(self, index: int, z: int, where: str) -> np.ndarray:
        cache = self._norm_cache[index]
        if z not in cache:
            image = self._images[index]
            plane = np.asarray(image[z] if z >= 0 else image)
            try:
                cache[z] = normalize(plane, self._normalization, channel_axis=0)
            except ValueError as err:
                raise ValueError(f"{where}: {err}") from None
        return cache[z]

    def _classes_present(self, s: Plane) -> np.ndarray:
        values = s.target[~s.ignore]
        if self._mode == "instances":
            values = (values > 0).astype(np.int64)
        return np.bincount(values, minlength=self._num_classes)[: self._num_classes] > 0

    def _split(self, slices: list[Plane]) -> Snapshot:
        train, validation = split_planes(slices, self._validation_fraction, self._seed)
        self._version += 1
        return Snapshot(tuple(train), tuple(validation), self._version)


def _object_areas(s: Plane) -> np.ndarray:
    ids = s.target[~s.ignore]
    areas = np.bincount(ids)[1:]
    return areas[areas > 0].astype(np.float64)
