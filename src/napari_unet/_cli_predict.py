"""``napari-unet predict``: segment one image file with overlap-tile prediction."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ._cli_common import (
    add_model_argument,
    add_out_argument,
    add_overwrite_argument,
    load_model,
    model_file,
    plan,
    run_job,
)
from ._cli_settings import add_setting_options, settings_from_args


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Prediction options shared by ``predict``, ``batch`` and ``eval``: the model and every
    declared setting of ``PredictConfig`` that has a flag."""
    from .core.inference.config import PredictConfig

    add_model_argument(parser)
    add_setting_options(parser, PredictConfig)


def predict_config_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    from .core.inference.config import PredictConfig

    return settings_from_args(args, PredictConfig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", required=True, help="input image (TIFF stack, PNG, ...)")
    add_out_argument(parser, "labels TIFF to write", metavar="LABELS.tif")
    add_common_arguments(parser)
    parser.add_argument("--uncertainty", nargs="?", const=True, default=None, metavar="U.tif",
                        help="also write the per-pixel uncertainty (float32 TIFF), to U.tif or "
                             "beside the labels as <name>_uncertainty.tif")
    parser.add_argument("--probabilities", nargs="?", const=True, default=None, metavar="P.tif",
                        help="also write the class probabilities (float32 TIFF), to P.tif or "
                             "beside the labels as <name>_probabilities.tif (as batch does)")
    add_overwrite_argument(parser)


def run(args: argparse.Namespace) -> int:
    from .core.inference.batch_files import write_probabilities
    from .core.inference.config import (
        PredictConfig,
        PredictionResult,
        file_settings,
        stack_layout,
    )
    from .core.inference.prediction import predict
    from .core.io.images import read_image, write_labels
    from .core.io.inputs import check_input_file
    from .core.io.outputs import check_free_space
    from .core.io.resources import check_prediction_memory, prediction_bytes

    image_path = check_input_file(args.image, "image file")
    out = Path(args.out)
    for name in ("uncertainty", "probabilities"):  # given without a file: beside the labels
        if getattr(args, name) is True:
            setattr(args, name, str(out.with_name(f"{out.stem}_{name}.tif")))
    # Everything about the outputs is checked before the model is loaded or a pixel predicted.
    plan([out, args.uncertainty, args.probabilities], [image_path, model_file(args.model)],
         args.overwrite)
    for flag in ("out", "uncertainty", "probabilities"):  # what the writers can write
        path = getattr(args, flag)
        if path and not str(path).lower().endswith((".tif", ".tiff")):
            raise ValueError(f"--{flag} {str(path)!r}: predict writes TIFF files; give a name "
                             "ending in .tif")
    model, meta = load_model(args.model)
    data = read_image(image_path)
    for note in data.notes:
        print(f"note: {note}", file=sys.stderr)
    label_axes, lead = stack_layout(data.axes, tuple(data.array.shape))
    if lead is not None:
        raise ValueError(f"{image_path.name} has axes {data.axes}; one of Z/T at most is "
                         "supported here (use 'napari-unet batch' for hyperstacks)")
    # as batch does: the file's channel axis, axes and z spacing where the options give none
    config = file_settings(PredictConfig(uncertainty=bool(args.uncertainty),
                                         keep_probabilities=bool(args.probabilities),
                                         **predict_config_kwargs(args)), data)
    shape = tuple(int(n) for n in data.array.shape)
    check_prediction_memory(image_path.name, shape, config.channel_axis, model.num_classes,
                            bool(args.probabilities), bool(args.uncertainty))
    # Room on disk for the files, uncompressed (the worst case), before predicting anything.
    pixels = prediction_bytes(shape, config.channel_axis, 0, False, False) // 4
    need = {out: 4 * pixels}
    for path, per_pixel in ((args.uncertainty, 4), (args.probabilities, 4 * model.num_classes)):
        if path:
            need[Path(path)] = per_pixel * pixels
    for folder in {p.resolve().parent for p in need}:
        check_free_space(folder, sum(n for p, n in need.items() if p.resolve().parent == folder),
                         f"the outputs of {image_path.name}")
    found = run_job(predict(model, data.array, config, meta), image_path.name)
    result = next(e for e in found if isinstance(e, PredictionResult))
    labels = result.instances if result.instances is not None else result.semantic
    written = write_labels(out, labels, label_axes, data.pixel_size, overwrite=args.overwrite)
    if written.note:
        print(f"note: {written.note}", file=sys.stderr)
    if args.uncertainty:
        write_probabilities(Path(args.uncertainty), result.uncertainty[None], label_axes,
                            data.pixel_size, args.overwrite)
    if args.probabilities:
        write_probabilities(Path(args.probabilities), result.probabilities, label_axes,
                            data.pixel_size, args.overwrite)
    n = int(labels.max()) if labels.size else 0
    print(f"wrote {out} ({n} {'objects' if result.instances is not None else 'max class'}"
          f", device {result.device}, tile {result.tile_size[0]}x{result.tile_size[1]})")
    return 0
