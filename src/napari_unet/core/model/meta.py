"""What a model file says about its net: one typed, validated class.

:class:`ModelMeta` is stored in every checkpoint (as plain values, see ``to_dict``), rendered as
the model card, shown by the docks and the CLI, and written into BioImage Model Zoo packages.
The architecture itself (channels, classes, depth, ...) is not repeated here: it is the net's
``config`` (``UNet.from_config``).

Fields
------
mode : {"instances", "semantic"}
    Instance segmentation (2 classes, touching objects separated by a background gap) or
    semantic classes.
class_names : tuple of str
    One name per output class, background first.
normalization : dict
    How images are scaled before the net: ``{"method": "percentile", "low": 1.0,
    "high": 99.8}`` or ``{"method": "none"}``.
pixel_size : float or None
    Micrometres per pixel of the training images, when known.
object_diameter : float or None
    Median equivalent diameter (pixels) of the training objects, when known; prediction
    rescales images so their objects have this size.
training : dict or None
    The training settings (``TrainConfig.to_dict()``) of the last training run.
step : int
    Optimizer steps the weights have seen.
best_step : int or None
    When training kept the best model by its validation score: the step it came from.
name, training_data, credits : str
    Shown on the model card: a display name, a description of the training data, credits.
evaluation : dict or None
    Scores on held-out data, ``{data set: {metric: value}}``, plus anything a report adds.
channel : int or None
    For a one-channel net trained on one channel of multi-channel images: that channel, which
    prediction then takes from a multi-channel image unless told otherwise.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..constants import (
    DEFAULT_NORMALIZATION,
    MODES,
    NORMALIZATION_METHODS,
    default_class_names,
    mode_for_classes,
)


def check_normalization(spec: Mapping[str, Any] | None) -> dict[str, Any]:
    """A complete, validated normalisation spec (``None`` gives the default)."""
    if spec is None:
        return dict(DEFAULT_NORMALIZATION)
    if not isinstance(spec, Mapping):
        raise TypeError(f"normalization must be a dict, got {type(spec).__name__}")
    method = spec.get("method", "percentile")
    if method not in NORMALIZATION_METHODS:
        raise ValueError(f"normalization method must be one of {NORMALIZATION_METHODS}, "
                         f"got {method!r}")
    if method == "none":
        return {"method": "none"}
    try:
        low = float(spec.get("low", DEFAULT_NORMALIZATION["low"]))
        high = float(spec.get("high", DEFAULT_NORMALIZATION["high"]))
    except (TypeError, ValueError):
        raise TypeError(f"normalization percentiles must be numbers, got low="
                        f"{spec.get('low')!r}, high={spec.get('high')!r}") from None
    if not (0.0 <= low < high <= 100.0):
        raise ValueError(f"normalization percentiles must satisfy 0 <= low < high <= 100, "
                         f"got low={low}, high={high}")
    return {"method": "percentile", "low": low, "high": high}


@dataclass(frozen=True)
class ModelMeta:
    """Typed metadata of a model file (see the module docstring for the fields)."""

    mode: str = "instances"
    class_names: tuple[str, ...] = ("background", "foreground")
    normalization: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_NORMALIZATION))
    pixel_size: float | None = None
    object_diameter: float | None = None
    training: dict[str, Any] | None = None
    step: int = 0
    best_step: int | None = None
    name: str = "napari-unet model"
    training_data: str | None = None
    credits: str | None = None
    evaluation: dict[str, Any] | None = None
    channel: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"model mode must be one of {MODES}, got {self.mode!r}")
        names = self.class_names
        if isinstance(names, str) or not isinstance(names, (list, tuple)) \
                or not all(isinstance(n, str) for n in names):
            raise TypeError(f"class_names must be a sequence of strings, got {names!r}")
        if len(names) < 2:
            raise ValueError(f"a model needs at least 2 class names, got {list(names)}")
        if self.mode == "instances" and len(names) != 2:
            raise ValueError(f"an instance model has 2 classes (background, foreground), got "
                             f"{len(names)} class names")
        object.__setattr__(self, "class_names", tuple(names))
        object.__setattr__(self, "normalization", check_normalization(self.normalization))
        for name in ("pixel_size", "object_diameter"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"{name} must be a number or None, got {type(value).__name__}")
            if not (math.isfinite(float(value)) and value > 0):
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
            object.__setattr__(self, name, float(value))
        for name in ("step", "best_step", "channel"):
            value = getattr(self, name)
            if value is None and name in ("best_step", "channel"):
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        for name in ("training", "evaluation"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Mapping):
                raise TypeError(f"{name} must be a dict or None, got {type(value).__name__}")
            if value is not None:
                object.__setattr__(self, name, dict(value))
        if not isinstance(self.name, str):
            raise TypeError(f"name must be a string, got {type(self.name).__name__}")
        for name in ("training_data", "credits"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise TypeError(f"{name} must be a string or None, got {type(value).__name__}")

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def for_model(cls, model: Any, **overrides: Any) -> ModelMeta:
        """Meta of a net that has not been trained yet, with ``overrides``.

        ``model`` is a :class:`~napari_unet.core.model.unet.UNet` (its ``num_classes`` decides the
        mode and class names unless overridden).
        """
        n = int(model.num_classes)
        base: dict[str, Any] = {"mode": mode_for_classes(n),
                                "class_names": default_class_names(n)}
        base.update(overrides)
        return cls(**base)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None, model: Any = None) -> ModelMeta:
        """Rebuild from :meth:`to_dict` (a checkpoint's ``"meta"``); unknown keys are ignored
        (written by a newer version); bad values raise ``ValueError``/``TypeError`` naming the
        field. With ``model``, missing mode/class names come from its number of classes."""
        if values is None:
            values = {}
        if not isinstance(values, Mapping):
            raise TypeError(f"model meta must be a dict, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in values.items() if k in known}
        if isinstance(kwargs.get("class_names"), list):
            kwargs["class_names"] = tuple(kwargs["class_names"])
        if model is not None:
            return cls.for_model(model, **kwargs)
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Plain values only (str, numbers, None, lists, dicts): safe for ``weights_only``
        loading, JSON and YAML."""
        out = dataclasses.asdict(self)
        out["class_names"] = list(self.class_names)
        return out

    def replace(self, **changes: Any) -> ModelMeta:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)


__all__ = ["ModelMeta", "check_normalization"]
