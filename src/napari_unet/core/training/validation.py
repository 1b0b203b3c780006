"""Validation on the held-out part of the paint: its metrics, the score that chooses the kept
weights, and when that part can choose them and when it cannot."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import numpy as np
import torch

from ..model.unet import UNet
from .sources import patch_arrays

#: A held-out part chooses the best model only with at least this many annotated pixels ...
MIN_VALIDATION_PIXELS = 2000
#: ... and, in instance mode, at least this many (parts of) objects and some background.
MIN_VALIDATION_OBJECTS = 3
#: In instance mode the kept weights are chosen by AP@0.5 on held-out planes painted all over
#: with at least this many objects: one object more or less moves AP@0.5 by about 1/n, so with
#: fewer the choice follows single objects rather than the steps (docs/decisions.md).
MIN_CHOOSING_OBJECTS = 20


class HeldOut(NamedTuple):
    """What the held-out part of the paint holds (:func:`held_out_counts`)."""

    items: int
    pixels: int  # annotated
    objects: int  # (parts of) objects, instance mode
    classes: frozenset[int]  # annotated classes (instance mode: 0 background, 1 object)
    whole_objects: int  # objects of pieces painted all over, instance mode


def held_out_counts(samples: Any) -> HeldOut:
    """One pass over the samples' validation items: what the rules below need."""
    items = list(samples.validation_items())
    pixels, objects, whole, classes = 0, 0, 0, set()
    instances = samples.mode == "instances"
    for item in items:
        _, labels, ignore = patch_arrays(item)
        annotated = np.ones(labels.shape, bool) if ignore is None else ~ignore
        values = labels[annotated]
        pixels += int(values.size)
        if instances:
            n = int(np.unique(values[values > 0]).size)
            objects += n
            whole += n if ignore is None or not ignore.any() else 0
            classes.update({0} if (values == 0).any() else set())
            classes.update({1} if (values > 0).any() else set())
        else:
            classes.update(int(v) for v in np.unique(values))
    return HeldOut(len(items), pixels, objects, frozenset(classes), whole)


def validation_is_meaningful(samples: Any, held: HeldOut | None = None) -> tuple[bool, str]:
    """Whether the held-out part gives figures worth showing, and why not (for the user).

    Rule: at least :data:`MIN_VALIDATION_PIXELS` annotated held-out pixels with both background
    and foreground among them, and in instance mode pieces of at least
    :data:`MIN_VALIDATION_OBJECTS` objects. Fewer than that, and the score jumps with one
    object's outline. ``held``: its :func:`held_out_counts`, when known.
    """
    h = held_out_counts(samples) if held is None else held
    instances = samples.mode == "instances"
    if not h.items:
        return False, "no held-out part"
    if h.pixels < MIN_VALIDATION_PIXELS:
        return False, (f"the held-out part has {h.pixels} annotated pixels (fewer than "
                       f"{MIN_VALIDATION_PIXELS})")
    if len(h.classes) < 2:
        return False, "the held-out part has only one class annotated"
    if instances and h.objects < MIN_VALIDATION_OBJECTS:
        return False, (f"the held-out part has {h.objects} object(s) (fewer than "
                       f"{MIN_VALIDATION_OBJECTS})")
    return True, f"{h.pixels} annotated pixels" + (f", {h.objects} objects" if instances else "")


def validation_chooses(samples: Any, held: HeldOut | None = None) -> tuple[bool, str]:
    """Whether the held-out part can choose the kept weights, and why not (for the user).

    Semantic mode: whenever it gives a figure (:func:`validation_is_meaningful`). Instance
    mode: only by AP@0.5 over at least :data:`MIN_CHOOSING_OBJECTS` objects of held-out
    pieces painted all over; the pixel IoU of a partly painted part cannot see objects merged
    or split, which fine-tuning is there to mend. ``held``: as for
    :func:`validation_is_meaningful`.
    """
    h = held_out_counts(samples) if held is None else held
    ok, why = validation_is_meaningful(samples, h)
    if not ok or samples.mode != "instances":
        return ok, why
    if h.whole_objects == 0:
        return False, ("the held-out part is not painted all over, so it cannot tell merged or "
                       "split objects")
    if h.whole_objects < MIN_CHOOSING_OBJECTS:
        return False, (f"the held-out part has {h.whole_objects} objects painted all over "
                       f"(fewer than {MIN_CHOOSING_OBJECTS} to choose between steps)")
    return True, f"{h.whole_objects} objects"


def validation_plan(samples: Any, validate_every: int, keep_best: bool
                    ) -> tuple[bool, bool, str]:
    """``(figures, chooses, note)``: whether the held-out part is scored during a run, whether
    its score chooses the kept weights, and what to tell the user about it ("" for nothing)."""
    if not validate_every:
        return False, False, ""
    held = held_out_counts(samples)
    meaningful, why = validation_is_meaningful(samples, held)
    if not meaningful:
        return False, False, (f"no validation score: {why}"
                              + ("; the last weights are kept" if keep_best else ""))
    if not keep_best:
        return True, False, ""
    chooses, why_not = validation_chooses(samples, held)
    return True, chooses, "" if chooses else f"the last weights are kept: {why_not}"


def validation_metrics(
    model: UNet,
    items: Iterable[Any],
    instances_mode: bool,
    logits: Callable[[np.ndarray], torch.Tensor],
    loss: Callable[[torch.Tensor, np.ndarray, np.ndarray | None], float],
) -> dict[str, float]:
    """Loss and metrics of ``model`` on the held-out ``items`` (model left in eval mode).

    Metrics: ``loss`` (the training loss), ``iou`` (foreground IoU in instance mode, mean
    IoU of the non-background classes in semantic mode) and, in instance mode on fully
    annotated items, ``ap50`` (average precision at IoU 0.5 of the instances).

    Parameters
    ----------
    model : UNet
    items : iterable
        The samples' validation items.
    instances_mode : bool
        Instance (else semantic) training.
    logits : callable
        Normalised ``(C, H, W)`` image -> logits ``(K, H, W)`` of the whole image.
    loss : callable
        ``(logits, labels, ignore)`` -> the training loss of one item.
    """
    from ..data.metrics import average_precision, iou_per_class, pixel_iou
    from ..inference.postprocess import instances_from_probability

    sums: dict[str, list[float]] = {"loss": [], "iou": [], "ap50": []}
    model.eval()
    with torch.no_grad():
        for item in items:
            image, labels, ignore = patch_arrays(item)
            out = logits(image)
            sums["loss"].append(loss(out, labels, ignore))
            probs = torch.softmax(out, 0).cpu().numpy()
            annotated = np.ones(labels.shape, bool) if ignore is None else ~ignore
            if instances_mode:
                fg = probs[1]
                gt_fg = (labels > 0) & annotated
                pred_fg = (fg > 0.5) & annotated
                sums["iou"].append(float(pixel_iou(gt_fg, pred_fg)))
                if ignore is None or not ignore.any():
                    pred = instances_from_probability(fg)
                    ap = average_precision(labels, pred, (0.5,))
                    sums["ap50"].append(float(_first(ap)))
            else:
                ious = iou_per_class(labels, probs.argmax(0), model.num_classes,
                                     None if ignore is None else ignore)[1:]
                if np.isfinite(ious).any():
                    sums["iou"].append(float(np.nanmean(ious)))
    return {k: float(np.mean(v)) for k, v in sums.items() if v}


def validation_score(metrics: dict[str, float]) -> float | None:
    """The validation score the best model is chosen by: AP@0.5 where measured (fully
    annotated held-out part), else the foreground / mean class IoU."""
    for name in ("ap50", "iou"):
        if name in metrics and math.isfinite(metrics[name]):
            return float(metrics[name])
    return None


def _first(value: Any) -> float:
    if isinstance(value, dict):
        return float(next(iter(value.values())))
    arr = np.asarray(value, dtype=float).ravel()
    return float(arr[0])
