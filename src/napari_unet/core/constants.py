"""One home for names shared across the package: normalisation, architectures, modes.

Three copies of a default drift apart; everything that needs one of these imports it from here.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

#: Percentile normalisation used when a model records none: (x - p1) / (p99.8 - p1), per channel.
#: Read-only; call ``dict(DEFAULT_NORMALIZATION)`` for a copy to change.
DEFAULT_NORMALIZATION: MappingProxyType[str, Any] = MappingProxyType(
    {"method": "percentile", "low": 1.0, "high": 99.8}
)
NORMALIZATION_METHODS = ("percentile", "none")

#: Named architectures (``UNet.original()``, ``UNet.modified()``, ``UNet.small()``): a new,
#: untrained net. Training recipes ("fast", "paper", ...) are ``core.training.config.PRESETS``.
ARCHITECTURES = ("original", "modified", "small")

#: What a net's output means: instance segmentation (2 classes: background, foreground with
#: a separation gap between touching objects) or semantic classes.
MODES = ("instances", "semantic")

#: How prediction tiles overlap: "fast" keeps less than the receptive radius around each tile
#: (seam error measured on the shipped model, docs/tiling.md); "exact" keeps all of it
#: (stitched = un-tiled prediction to float rounding).
TILING_MODES = ("fast", "exact")
DEFAULT_TILING = "fast"

#: The shipped model's name wherever a model is chosen (CLI ``--model default``, the docks).
DEFAULT_MODEL = "default"


#: Objects whose diameter lies within these factors of the model's training diameter are
#: predicted at the image's own scale; others are rescaled to the nearer edge. Upscaling small
#: objects far (interpolated edges) and shrinking big ones to the training centre both lost
#: accuracy against stopping at the edge; upper edges of 1.25-1.75 tie (synthetic tuning
#: images prefer 1.25, real cells3d 1.5-1.75): docs/models.md, "The scale band".
SCALE_BAND = (0.5, 1.5)


#: Formats ``napari-unet export`` writes: name -> (module, function, what it is). A new format is
#: one entry here plus its module (a function ``(model, meta, path, config, sample) -> Path``);
#: named as text so that ``--help`` imports none of them.
EXPORT_FORMATS: dict[str, tuple[str, str, str]] = {
    "bioimageio": ("napari_unet.core.io.export.bioimageio", "export_bioimageio",
                   "BioImage Model Zoo package (.zip, format 0.5)"),
}

def mode_for_classes(num_classes: int) -> str:
    """The mode of a net with ``num_classes`` outputs: 2 classes means instances."""
    return "instances" if int(num_classes) == 2 else "semantic"


def default_class_names(num_classes: int) -> tuple[str, ...]:
    """``("background", "foreground")`` for 2 classes, else ``("background", "class 1", ...)``."""
    n = int(num_classes)
    if n == 2:
        return ("background", "foreground")
    return ("background", *(f"class {i}" for i in range(1, n)))


__all__ = [
    "ARCHITECTURES",
    "DEFAULT_MODEL",
    "DEFAULT_NORMALIZATION",
    "DEFAULT_TILING",
    "EXPORT_FORMATS",
    "MODES",
    "NORMALIZATION_METHODS",
    "SCALE_BAND",
    "TILING_MODES",
    "default_class_names",
    "mode_for_classes",
]
