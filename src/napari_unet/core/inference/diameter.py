"""Automatic object-diameter estimate: how large are the objects in an image, in pixels?

A model sees objects best near the size it was trained at (``ModelMeta.object_diameter``).
Rescaling an image so that its objects have that size needs their diameter in the image; this
module measures it with the model itself, iterated once:

1. predict at the image's own scale and at :data:`COARSE_PASSES` of it, keep the *confident*
   objects (mean foreground probability at least ``confidence``, not cut by the image border)
   and take the median of their equivalent diameters ``2 sqrt(area / pi)``. Of these first
   estimates, keep the coarsest whose objects the model saw within :data:`SEEN_WHOLE` of its
   own size (else the closest): a net shown nuclei three times larger than it knows breaks
   them into fragments of about its own size, so the full-scale pass alone can report
   fragments; at a coarser scale the same nuclei come out whole. (Only when the objects look
   small at full scale is a 2x pass added, for tiny objects.)
2. predict again with the image rescaled by that first estimate (objects outside the model's
   band brought to its edge; inside it but :data:`TRY_TRAINED` or more from the training
   diameter, to that diameter) and measure again, back in image pixels. Near the training
   diameter the first estimate stands.

How a diameter becomes a rescale (one rule for a given ``object_diameter`` and for this
estimate, :func:`choose_scale`): a model trained on a range of sizes (the default model saw
nuclei of 10-50 px) mostly does best at the image's own scale for objects inside its band
(:data:`SCALE_BAND` x the training diameter); objects outside are rescaled to the band's
nearest edge, not to its centre (:func:`model_scale`; measured on held-out and separate tuning
images: docs/models.md, "The scale band"). Inside the band but :data:`TRY_TRAINED` or more away
from the training diameter, both the image's own scale and the training diameter are tried on
a crop, and the one whose objects the model is surer of wins (small nuclei at the band's lower
edge are often better seen enlarged; large ones at the upper edge are not: docs/models.md,
"Choosing inside the band"). No objects, or an estimate far outside what the model was
trained at (``max_ratio``), gives a clear note and no rescale (:attr:`DiameterEstimate.usable`
is False); prediction then runs at the image's own scale.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from ..constants import SCALE_BAND
from ..model.meta import ModelMeta

#: The measuring pass the estimate and the choice of scale are given (``prediction.predict_at``,
#: injected so that this module, which prediction uses, does not import prediction):
#: ``predict_at(model, plane, meta, factor, **predict_kwargs)`` -> a ``PredictionResult`` of the
#: plane resized by exactly ``factor`` for the net.
PredictAt = Callable[..., Any]

#: The value of ``object_diameter`` / ``--diameter`` that asks for this estimate.
AUTO = "auto"


#: Inside the band, a diameter at least this factor away from the training diameter is also
#: tried at the training diameter (closer ones are predicted at the image's own scale: the two
#: scales differ too little to be worth a comparison).
TRY_TRAINED = 1.2

#: The first passes' choice (step 1 above): objects the net saw within this factor of its own
#: size count as seen whole.
SEEN_WHOLE = 2.0

#: The coarser first passes (image -> model factors). Until 2026-12-03 they were asked for as
#: diameters 2x and 4x the training one, which the band turned into these factors; run at
#: 0.5 and 0.25 instead, the estimates were worse (cells3d at 0.5x: median error 9 % -> 16 %).
COARSE_PASSES = (0.75, 0.375)


def model_scale(diameter: float, trained: float,
                band: tuple[float, float] = SCALE_BAND) -> float:
    """Factor from image to model pixels for objects of ``diameter`` px, for a model trained at
    ``trained`` px: 1 inside ``band`` x ``trained``, else what brings them to its nearer edge."""
    low, high = band[0] * trained, band[1] * trained
    if diameter < low:
        return low / diameter
    if diameter > high:
        return high / diameter
    return 1.0


def band_text(trained: float, band: tuple[float, float] = SCALE_BAND) -> str:
    """``"10.8-32.5 px (trained at 21.7 px)"``: the model's band, for notes."""
    return f"{band[0] * trained:.1f}-{band[1] * trained:.1f} px (trained at {trained:.1f} px)"


@dataclass(frozen=True)
class DiameterEstimate:
    """Result of :func:`estimate_diameter`.

    Attributes
    ----------
    diameter : float or None
        Median equivalent diameter (px, image pixels) of the confident objects; None when
        there was nothing to measure.
    n_objects : int
        Confident objects measured (in the last pass that found any).
    note : str
        One sentence for the user: the estimate and what is done with it, or why not.
    usable : bool
        Whether prediction should use ``diameter`` (:func:`choose_scale` then decides the
        scale); False: predict at the image's own scale.
    """

    diameter: float | None
    n_objects: int
    note: str
    usable: bool = False


def estimate_diameter(
    model: Any,
    image: Any,
    meta: ModelMeta | Mapping[str, Any] | None = None,
    *,
    channel_axis: int | None = None,
    device: str = "cpu",
    confidence: float = 0.8,
    min_objects: int = 3,
    band: tuple[float, float] = SCALE_BAND,
    max_ratio: float = 6.0,
    max_side: int = 1024,
    predict_at: PredictAt,
    **predict_kwargs: Any,
) -> DiameterEstimate:
    """Estimate the typical object diameter of ``image`` with ``model`` (see module docstring).

    Parameters
    ----------
    model : UNet
        An instance-mode net (2 classes).
    image : array-like
        As :func:`core.inference.prediction.predict` takes it; of a stack, the middle plane
        is measured.
    meta : ModelMeta or dict
        The model's metadata; its ``object_diameter`` is the training scale.
    channel_axis : int, optional
        Channel axis of ``image`` (as for prediction).
    device : str
        Device for the two prediction passes.
    confidence : float in (0, 1)
        Minimum mean foreground probability of an object that is measured.
    min_objects : int
        Fewer confident objects than this: no estimate.
    band : (low, high) with 0 < low <= 1 <= high
        Estimates within these factors of the training diameter are left alone (no rescale),
        others are rescaled to the nearer edge (:func:`model_scale`); ``(1, 1)`` rescales
        whenever the estimate differs.
    max_ratio : float > 1/low and high
        Estimates more than this factor above or below the training diameter are not used
        (the model has never seen such sizes; its own first pass is then unreliable too).
    max_side : int
        Larger planes are measured on a central crop of this side (the estimate is a median;
        a crop of many objects is enough and bounds the cost).
    **predict_kwargs
        Further :class:`PredictConfig` fields for both passes (e.g. ``tta``, ``tile_size``).

    Raises
    ------
    ValueError
        A semantic-mode model, or bad ``confidence``/``min_objects``/``max_ratio``.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if int(min_objects) != min_objects or min_objects < 1:
        raise ValueError(f"min_objects must be an integer >= 1, got {min_objects!r}")
    low, high = (float(b) for b in band)
    if not (math.isfinite(high) and 0.0 < low <= 1.0 <= high):
        raise ValueError(f"band must be two finite factors (low, high) with 0 < low <= 1 <= "
                         f"high, got {band!r}")
    widest = max(1.0 / low, high)
    if not (math.isfinite(max_ratio) and max_ratio > widest):
        raise ValueError(f"max_ratio must be a finite number > the band's widest factor "
                         f"({widest:g}), got {max_ratio!r}")
    band = (low, high)
    if not isinstance(meta, ModelMeta):
        meta = ModelMeta.from_dict(dict(meta or {}), model)
    if meta.mode != "instances":
        raise ValueError("the diameter estimate needs an instance-mode model (2 classes), "
                         f"this one is {meta.mode!r}")
    plane, axis = middle_crop(model, image, channel_axis, max_side)
    kwargs = _pass_kwargs(predict_kwargs, device, axis)

    trained = meta.object_diameter
    first = _measure(predict_at(model, plane, meta, 1.0, **kwargs), confidence)
    if not trained:
        if len(first) < min_objects:
            return _too_few(first, min_objects)
        d1 = float(np.median(first))
        return DiameterEstimate(d1, len(first), f"estimated object diameter {d1:.1f} px, but "
                                "the model does not record the diameter it was trained at; "
                                "no rescale")
    # First estimates at several scales; keep the one seen closest to the model's own size.
    candidates = {1.0: first}
    for s in COARSE_PASSES:
        if min(plane.shape[-2:]) * s >= 16:
            candidates[s] = _measure(predict_at(model, plane, meta, s, **kwargs), confidence)
    if len(first) >= min_objects and np.median(first) < trained / 1.5:
        candidates[2.0] = _measure(predict_at(model, plane, meta, 2.0, **kwargs), confidence)
    usable = {s: d for s, d in candidates.items() if len(d) >= min_objects}
    if not usable:
        return _too_few(max(candidates.values(), key=len), min_objects)
    # The coarsest pass whose objects the net saw within SEEN_WHOLE of its own size: a net
    # shown nuclei far larger than it knows returns fragments of about its own size at full
    # scale, so "closest to its size" alone can pick the fragments. None such: the closest.
    seen = {s: float(np.median(d)) * s for s, d in usable.items()}
    inside = [s for s in usable if 1.0 / SEEN_WHOLE <= seen[s] / trained <= SEEN_WHOLE]
    scale = min(inside) if inside else min(usable, key=lambda s: abs(math.log(seen[s] /
                                                                            trained)))
    first = usable[scale]
    d1 = float(np.median(first))
    if not 1.0 / max_ratio <= d1 / trained <= max_ratio:
        return DiameterEstimate(d1, len(first), _far(d1, trained, max_ratio))
    again = model_scale(d1, trained, band)
    if again == 1.0:
        if max(d1 / trained, trained / d1) < TRY_TRAINED:
            return _within(d1, len(first), trained, band)
        # inside the band but far from the training size, where choose_scale also looks: an
        # outline measured at the image's scale is too wide for small objects (13-px nuclei
        # came out ~10 % too large), measured at the training diameter it is not
        again = trained / d1
    # Second pass with the objects brought into the model's band; its outlines are best there.
    second = _measure(predict_at(model, plane, meta, again, **kwargs), confidence)
    if len(second) >= min_objects:
        d, n = float(np.median(second)), len(second)
    else:
        d, n = d1, len(first)
    if not 1.0 / max_ratio <= d / trained <= max_ratio:
        return DiameterEstimate(d, n, _far(d, trained, max_ratio))
    factor = model_scale(d, trained, band)
    if factor == 1.0:
        return _within(d, n, trained, band)
    return DiameterEstimate(
        d, n, f"estimated object diameter {d:.1f} px from {n} objects, outside the model's "
        f"{band_text(trained, band)}: image rescaled by {factor:.2f}", usable=True)


def confident_diameters(instances: np.ndarray, foreground: np.ndarray,
                        confidence: float = 0.8) -> np.ndarray:
    """Equivalent diameters of the objects with mean ``foreground`` probability >=
    ``confidence`` that do not touch the image border (their size would be cut)."""
    instances = np.asarray(instances)
    index, area, mean_p = _per_object(instances, foreground)
    if not index.size:
        return np.zeros(0)
    edge = np.unique(np.concatenate([instances[0], instances[-1], instances[:, 0],
                                     instances[:, -1]]))
    keep = (area > 0) & (mean_p >= confidence) & ~np.isin(index, edge)
    return 2.0 * np.sqrt(area[keep] / np.pi)


def _measure(result: Any, confidence: float) -> np.ndarray:
    return confident_diameters(result.instances, np.asarray(result.probabilities[1]),
                               confidence)


def _within(d: float, n: int, trained: float, band: tuple[float, float]) -> DiameterEstimate:
    return DiameterEstimate(d, n, f"estimated object diameter {d:.1f} px from {n} objects, "
                            f"within the model's {band_text(trained, band)}", usable=True)


def _too_few(found: np.ndarray, min_objects: int) -> DiameterEstimate:
    return DiameterEstimate(
        float(np.median(found)) if len(found) else None, len(found),
        f"diameter estimate: found {len(found)} confident object(s), need at least "
        f"{min_objects}; predicting at the image's own scale")


def _far(d: float, trained: float, max_ratio: float) -> str:
    return (f"estimated object diameter {d:.1f} px is more than {max_ratio:g}x away from the "
            f"{trained:.1f} px the model was trained at; estimate not trusted, no rescale "
            "(give the diameter by hand if you know it)")


def choose_scale(model: Any, image: Any, meta: ModelMeta, diameter: float, *,
                 predict_at: PredictAt, channel_axis: int | None = None, device: str = "cpu",
                 band: tuple[float, float] = SCALE_BAND, max_side: int = 512,
                 **predict_kwargs: Any) -> tuple[float, str]:
    """Factor from image to model pixels for objects of ``diameter`` px, and a note saying why.

    Outside the band: :func:`model_scale` (to the nearer edge). Inside it, :data:`TRY_TRAINED`
    or more away from the training diameter: a central crop of the middle plane is predicted
    at the image's own scale and at the training diameter, and the scale whose objects are more
    confident (:func:`object_confidence`) wins; a tie keeps the image's own scale. Needs an
    instance-mode model whose metadata records its training diameter. (A 512-px crop of
    objects inside the band holds a hundred or more: enough for the mean, and the two passes
    cost less than the rescaled prediction that follows.)
    """
    trained = float(meta.object_diameter)
    factor = model_scale(diameter, trained, band)
    where = f"object diameter {diameter:.1f} px"
    if factor != 1.0:
        return factor, (f"{where} lies outside the model's {band_text(trained, band)}: image "
                        f"rescaled by {factor:.2f}")
    inside = f"{where} lies within the model's {band_text(trained, band)}"
    centre = trained / diameter
    if max(centre, 1.0 / centre) < TRY_TRAINED:
        return 1.0, f"{inside}: predicted at the image's own scale"
    plane, axis = middle_crop(model, image, channel_axis, max_side)
    kwargs = _pass_kwargs(predict_kwargs, device, axis)
    sure = {}
    for f in (1.0, centre):
        result = predict_at(model, plane, meta, f, **kwargs)
        sure[f] = object_confidence(result.instances, np.asarray(result.probabilities[1]))
    shown = f"objects {sure[centre]:.3f} sure at the training diameter, {sure[1.0]:.3f} at " \
            "the image's own scale"
    if sure[centre] > sure[1.0]:
        return centre, f"{inside}; {shown}: image rescaled by {centre:.2f}"
    return 1.0, f"{inside}; {shown}: predicted at the image's own scale"


def object_confidence(instances: np.ndarray, foreground: np.ndarray) -> float:
    """How sure a model is of its objects: the mean over objects of their mean ``foreground``
    probability (0 with no objects). At a scale the net sees poorly, outlines and small or
    faint objects come out with middling probabilities, which lowers it."""
    _, area, mean_p = _per_object(np.asarray(instances), foreground)
    present = area > 0
    return float(mean_p[present].mean()) if present.any() else 0.0


def _per_object(instances: np.ndarray, foreground: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ids 1..max of ``instances``, each id's area (0 for ids not present) and mean
    ``foreground`` probability."""
    n = int(instances.max()) if instances.size else 0
    index = np.arange(1, n + 1)
    if n == 0:
        return index, np.zeros(0), np.zeros(0)
    area = ndi.sum_labels(np.ones(instances.shape), instances, index)
    return index, area, np.asarray(ndi.mean(foreground, instances, index))


def _pass_kwargs(predict_kwargs: dict[str, Any], device: str, axis: int | None
                 ) -> dict[str, Any]:
    """Settings for a measuring pass on a crop: the caller's, less what the pass sets itself
    (its scale, the crop's channel axis, probabilities kept)."""
    own = ("object_diameter", "pixel_size", "keep_probabilities", "channel_axis")
    return dict(device=device, channel_axis=axis, keep_probabilities=True,
                **{k: v for k, v in predict_kwargs.items() if k not in own})


def middle_crop(model: Any, image: Any, channel_axis: int | None,
                side: int) -> tuple[np.ndarray, int | None]:
    """The middle plane of ``image`` (a stack's; the plane itself otherwise), cut to a central
    ``side`` x ``side`` crop at most, and its channel axis (None for one channel)."""
    from .stack import as_stack

    view, _ = as_stack(image, model.in_channels, channel_axis)  # (Z, C, H, W), nothing read
    h, w = (int(n) for n in view.shape[-2:])
    y0, x0 = max(0, (h - side) // 2), max(0, (w - side) // 2)
    # only the crop is read: a plane too big for memory (memory map, dask, zarr) stays unread
    plane = np.asarray(view[view.shape[0] // 2, :, y0:y0 + min(h, side), x0:x0 + min(w, side)])
    return (plane[0], None) if plane.shape[0] == 1 else (plane, 0)


__all__ = ["AUTO", "COARSE_PASSES", "SCALE_BAND", "SEEN_WHOLE", "TRY_TRAINED",
           "DiameterEstimate", "band_text", "choose_scale", "confident_diameters",
           "estimate_diameter", "middle_crop", "model_scale", "object_confidence"]
