"""When the held-out part of the paint can choose the kept weights, and when it cannot."""

from __future__ import annotations

from typing import Any

import numpy as np

from .sources import patch_arrays

#: A held-out part chooses the best model only with at least this many annotated pixels ...
MIN_VALIDATION_PIXELS = 2000
#: ... and, in instance mode, at least this many (parts of) objects and some background.
MIN_VALIDATION_OBJECTS = 3


def validation_is_meaningful(samples: Any) -> tuple[bool, str]:
    """Whether the held-out part can choose the best model, and why (for the user).

    Rule: at least :data:`MIN_VALIDATION_PIXELS` annotated held-out pixels with both background
    and foreground among them, and in instance mode pieces of at least
    :data:`MIN_VALIDATION_OBJECTS` objects. Fewer than that, and the score jumps with one
    object's outline: picking the "best" step would pick noise.
    """
    items = list(samples.validation_items())
    pixels, objects, classes = 0, 0, set()
    instances = samples.mode == "instances"
    for item in items:
        _, labels, ignore = patch_arrays(item)
        annotated = np.ones(labels.shape, bool) if ignore is None else ~ignore
        values = labels[annotated]
        pixels += int(values.size)
        if instances:
            objects += int(np.unique(values[values > 0]).size)
            classes.update({0} if (values == 0).any() else set())
            classes.update({1} if (values > 0).any() else set())
        else:
            classes.update(int(v) for v in np.unique(values))
    if not items:
        return False, "no held-out part"
    if pixels < MIN_VALIDATION_PIXELS:
        return False, (f"the held-out part has {pixels} annotated pixels (fewer than "
                       f"{MIN_VALIDATION_PIXELS})")
    if len(classes) < 2:
        return False, "the held-out part has only one class annotated"
    if instances and objects < MIN_VALIDATION_OBJECTS:
        return False, (f"the held-out part has {objects} object(s) (fewer than "
                       f"{MIN_VALIDATION_OBJECTS})")
    return True, f"{pixels} annotated pixels" + (f", {objects} objects" if instances else "")
