"""``napari-unet export``: write a model as a BioImage Model Zoo (bioimage.io) package.

The package (``core.io.export.bioimageio``) runs in deepImageJ, ilastik, QuPath and
bioimageio.core, and ``--model PACKAGE.zip`` loads it back here with the same labels.
"""

from __future__ import annotations

import argparse
from typing import Any

from ._cli_common import (
    add_model_argument,
    add_out_argument,
    add_overwrite_argument,
    model_file,
    plan,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .core.constants import EXPORT_FORMATS

    add_model_argument(parser, help="'default' (the shipped model) or a model file to export")
    parser.add_argument("--format", choices=tuple(EXPORT_FORMATS), default="bioimageio",
                        help="what to write: " + "; ".join(
                            f"{name}: {what}" for name, (_, _, what) in EXPORT_FORMATS.items())
                        + " (default: bioimageio)")
    add_out_argument(parser, "the package to write, NAME.zip", metavar="NAME.zip")
    parser.add_argument("--author", action="append", default=None, metavar="NAME",
                        help="who to credit in the package (repeat for several; default: "
                             "napari-unet developers)")
    parser.add_argument("--description", default=None,
                        help="one paragraph describing the model (default: built from the "
                             "model's metadata)")
    parser.add_argument("--sample", default=None, metavar="IMAGE",
                        help="2D image (channels first if several) for the test tensors and "
                             "the cover (default: a crop of the shipped nuclei sample)")
    parser.add_argument("--no-torchscript", dest="torchscript", action="store_false",
                        help="write only the pytorch_state_dict weights")
    add_overwrite_argument(parser, "package")


def run(args: argparse.Namespace) -> int:
    from importlib import import_module

    from .core.constants import ARCHITECTURES, EXPORT_FORMATS
    from .core.io.export import ExportConfig
    from .core.model.checkpoint import resolve_model

    if args.model in ARCHITECTURES:
        raise ValueError(f"'{args.model}' would be a new, untrained net; export 'default' or "
                         "a trained model file")
    config = ExportConfig(authors=tuple(args.author) if args.author else ExportConfig().authors,
                          description=args.description, torchscript=args.torchscript,
                          overwrite=args.overwrite)
    inputs = [p for p in (model_file(args.model), args.sample) if p]
    plan([args.out], inputs, args.overwrite)  # before any work: never an input, never clobber
    sample = None if args.sample is None else read_sample(args.sample)
    model, meta = resolve_model(args.model)
    module, function, what = EXPORT_FORMATS[args.format]
    path = getattr(import_module(module), function)(model, meta, args.out, config, sample=sample)
    print(f"wrote {path} ({what})")
    return 0


def read_sample(path: str) -> Any:
    """One 2D plane, ``(H, W)`` or ``(C, H, W)``, from an image file."""
    import numpy as np

    from .core.io.images import read_image

    image = read_image(path)
    if set(image.axes) - set("CYX"):
        raise ValueError(f"--sample must be one 2D plane (axes YX or CYX), {path!r} has axes "
                         f"{image.axes}")
    order = "CYX" if "C" in image.axes else "YX"
    return np.transpose(np.asarray(image.array), [image.axes.index(a) for a in order])
