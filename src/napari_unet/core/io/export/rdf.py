"""The description of a bioimage.io package: its ``rdf.yaml`` (axes, size rule and halo,
preprocessing, weights with their checksums, citation, licence and our own ``config``), its
``README.md`` and the zoo's rules for names and identifiers (see :mod:`.bioimageio` for what the
package holds and why)."""

from __future__ import annotations

import datetime
import hashlib
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ...constants import SCALE_BAND
from ...model.meta import ModelMeta
from ...model.unet import UNet
from .architecture import CALLABLE

#: What ``config.napari_unet.format`` says in our packages (how the loader recognises them).
PACKAGE_FORMAT = "napari-unet-bioimageio"
PACKAGE_FORMAT_VERSION = 1
RDF_FORMAT_VERSION = "0.5.4"
INPUT_ID = "raw"
OUTPUT_ID = "probabilities"
PAPER_DOI = "10.1007/978-3-319-24574-4_28"
PAPER_TEXT = ("Ronneberger O., Fischer P., Brox T. (2015). U-Net: Convolutional Networks for "
              "Biomedical Image Segmentation. MICCAI 2015, LNCS 9351, pp. 234-241.")
LICENSE = "BSD-3-Clause"
#: Package files, by role.
FILES = {"rdf": "rdf.yaml", "weights": "weights.pt", "architecture": "unet.py",
         "torchscript": "weights_torchscript.pt", "test_input": "test_input.npy",
         "test_output": "test_output.npy", "sample_input": "sample_input.tif",
         "sample_output": "sample_output.tif", "cover": "cover.png", "documentation": "README.md"}


# -- rdf.yaml ----------------------------------------------------------------------------------
def halo(model: UNet) -> int:
    """Pixels to drop at each tile border of a padded net: its receptive radius (the overlap
    that makes our tiled prediction equal the whole-image one), rounded up to a multiple of 8
    so that ``tile - 2 * halo`` stays a multiple of 16; 0 for valid nets (they crop themselves)."""
    from ...inference.tiles import receptive_radius

    if model.is_valid:
        return 0
    return int(math.ceil(receptive_radius(model) / 8) * 8)


def size_rule(model: UNet) -> tuple[int, int]:
    """``(min, step)`` of legal input sides: a valid net's legal tiles (188 + 16k at depth 4);
    for a padded net, multiples of 2**depth big enough to keep something after the halo."""
    step = model.divisor
    if model.is_valid:
        return model.valid_input_shape((1, 1))[0], step
    return 2 * halo(model) + step, step


def build_rdf(model: UNet, meta: ModelMeta, files: dict[str, bytes], authors: Sequence[str],
              description: str | None = None, tags: Sequence[str] = ()) -> dict[str, Any]:
    """The ``rdf.yaml`` content (plain values) for ``files`` (name -> bytes), crediting
    ``authors``; ``description`` None builds one from the meta; ``tags`` are added to ours."""
    from .... import __version__

    minimum, step = size_rule(model)
    space = {"scale": float(meta.pixel_size), "unit": "micrometer"} if meta.pixel_size else {}
    input_axes: list[dict[str, Any]] = [
        {"type": "batch"},
        {"type": "channel",
         "channel_names": [f"channel{i}" for i in range(model.in_channels)]},
        *({"type": "space", "id": a, "size": {"min": minimum, "step": step}, **space}
          for a in ("y", "x")),
    ]
    h = halo(model)
    output_space = []
    for a in ("y", "x"):
        size: dict[str, Any] = {"tensor_id": INPUT_ID, "axis_id": a}
        if model.is_valid:
            size["offset"] = -2 * model.context
        axis = {"type": "space", "id": a, "size": size, **space}
        if h:
            axis["halo"] = h
        output_space.append(axis)
    output_axes = [
        {"type": "batch"},
        {"type": "channel", "channel_names": [_identifier(n) for n in meta.class_names]},
        *output_space,
    ]
    norm = meta.normalization
    preprocessing = []
    if norm["method"] == "percentile":
        preprocessing.append({"id": "scale_range", "kwargs": {
            "axes": ["y", "x"], "min_percentile": float(norm["low"]),
            "max_percentile": float(norm["high"]), "eps": 1e-6}})
    weights: dict[str, Any] = {"pytorch_state_dict": {
        "source": FILES["weights"], "sha256": _sha256(files[FILES["weights"]]),
        "architecture": {"source": FILES["architecture"],
                         "sha256": _sha256(files[FILES["architecture"]]),
                         "callable": CALLABLE, "kwargs": dict(model.config)},
        "pytorch_version": _torch_version()}}
    if FILES["torchscript"] in files:
        weights["torchscript"] = {
            "source": FILES["torchscript"], "sha256": _sha256(files[FILES["torchscript"]]),
            "pytorch_version": _torch_version(), "parent": "pytorch_state_dict"}

    def tensor_file(role: str) -> dict[str, str]:
        return {"source": FILES[role], "sha256": _sha256(files[FILES[role]])}

    tags = ["unet", "segmentation", "2d", "pytorch", "napari-unet",
            "instance-segmentation" if meta.mode == "instances" else "semantic-segmentation",
            *tags]
    return {
        "type": "model",
        "format_version": RDF_FORMAT_VERSION,
        "name": _name(meta.name),
        "description": description or _description(model, meta),
        "authors": [{"name": a} for a in authors],
        "cite": [{"text": PAPER_TEXT, "doi": PAPER_DOI}],
        "license": LICENSE,
        "documentation": FILES["documentation"],
        "covers": [FILES["cover"]],
        "tags": list(dict.fromkeys(tags)),
        "timestamp": datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        .isoformat(),
        "inputs": [{
            "id": INPUT_ID,
            "description": "raw image, one 2D plane (channels first)",
            "axes": input_axes,
            "test_tensor": tensor_file("test_input"),
            "sample_tensor": tensor_file("sample_input"),
            "data": {"type": "float32"},
            "preprocessing": preprocessing,
        }],
        "outputs": [{
            "id": OUTPUT_ID,
            "description": "softmax probability of each class: "
                           + ", ".join(meta.class_names),
            "axes": output_axes,
            "test_tensor": tensor_file("test_output"),
            "sample_tensor": tensor_file("sample_output"),
            "data": {"type": "float32", "range": [0.0, 1.0]},
        }],
        "weights": weights,
        "config": {"napari_unet": {
            "format": PACKAGE_FORMAT,
            "format_version": PACKAGE_FORMAT_VERSION,
            "napari_unet_version": __version__,
            "architecture": dict(model.config),
            "meta": plain(meta.to_dict()),
        }},
    }


def plain(value: Any) -> Any:
    """``value`` with tuples as lists and numpy scalars as Python numbers (YAML-safe)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)  # e.g. a path recorded in a training config


# -- README.md and the zoo's names -------------------------------------------------------------
def documentation(model: UNet, meta: ModelMeta) -> str:
    from ...model.card import render_model_card

    minimum, step = size_rule(model)
    usage = [
        "",
        "## Using this package",
        "",
        f"- Input `{INPUT_ID}`: one 2D image, axes batch, channel, y, x "
        f"({model.in_channels} channel(s)); height and width {minimum} + {step}k pixels.",
        "- Preprocessing: " + (
            f"percentiles {meta.normalization['low']} and {meta.normalization['high']} of "
            "each channel of each image are mapped to 0 and 1 (`scale_range`)."
            if meta.normalization["method"] == "percentile" else "none (float32 input)."),
        f"- Output `{OUTPUT_ID}`: the softmax probability of each class "
        f"({', '.join(meta.class_names)}), same size as the input"
        + (f" less {2 * model.context} px (a valid-convolution net)." if model.is_valid
           else f"; tiles should drop a halo of {halo(model)} px on each side."),
        "- napari-unet (`napari-unet predict --model this.zip ...`, or the docks) loads the "
        "package with its own code and turns the probabilities into "
        + ("instance labels (threshold, separation of touching objects)."
           if meta.mode == "instances" else "a class map (argmax)."),
    ]
    if meta.object_diameter:
        low, high = SCALE_BAND
        usage.append(f"- Objects were about {meta.object_diameter:.1f} px across in the "
                     f"training images; rescale images whose objects are under {low:g}x or "
                     f"over {high:g}x that size to the nearer of those (napari-unet does that "
                     "when given an object diameter).")
    usage += [
        "",
        "## Validation",
        "",
        "The test tensors are a crop of a real nuclei image and what napari-unet's net makes of "
        "it; `bioimageio.core`'s `test_model` reproduces them from both weight formats. "
        + ("Scores on held-out data are in the evaluation table above."
           if meta.evaluation else "No held-out evaluation was recorded for this model."),
        "", "## Reference", "", PAPER_TEXT + f" https://doi.org/{PAPER_DOI}"]
    return render_model_card(model, meta) + "\n".join(usage) + "\n"


def _description(model: UNet, meta: ModelMeta) -> str:
    arch = model.config
    kind = "valid-convolution" if model.is_valid else "padded"
    task = "instance segmentation (foreground with separated touching objects)" \
        if meta.mode == "instances" else f"semantic segmentation into {model.num_classes} classes"
    text = (f"2D U-Net ({kind}, depth {arch['depth']}, {arch['base_channels']} base channels) "
            f"for {task}, exported by napari-unet.")
    if meta.training_data:
        text += f" Training data: {meta.training_data}"
    return text[:1000]


def _name(name: str) -> str:
    """The zoo allows letters, digits, spaces and ``_-()`` in names (5 to 128 characters)."""
    cleaned = "".join(c if c.isalnum() or c in " _-()" else " " for c in name)
    cleaned = " ".join(cleaned.split())[:128]
    return cleaned if len(cleaned) >= 5 else f"napari-unet {cleaned}".strip()


def _identifier(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c == "_" else "_" for c in name.strip())
    return cleaned or "class"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _torch_version() -> str:
    return torch.__version__.split("+")[0]


def channel_names(meta: ModelMeta) -> list[str]:
    """The output channel names an exported package gives ``meta``'s classes."""
    return [_identifier(n) for n in meta.class_names]


__all__ = ["FILES", "PACKAGE_FORMAT", "PACKAGE_FORMAT_VERSION", "build_rdf", "channel_names",
           "documentation", "halo", "plain", "size_rule"]
