"""``napari-unet predict``: segment one image file with overlap-tile prediction."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ._cli_common import (
    add_device_argument,
    add_model_argument,
    add_out_argument,
    add_overwrite_argument,
    load_model,
    model_file,
    plan,
    run_job,
)
from .core.constants import DEFAULT_TILING, TILING_MODES


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Prediction options shared by ``predict`` and ``batch``."""
    add_model_argument(parser)
    parser.add_argument("--tta", action="store_true",
                        help="test-time augmentation: average 8 flips/rotations (8x slower)")
    parser.add_argument("--tile", type=int, default=None, metavar="PX",
                        help="input tile size (default: from the memory budget)")
    parser.add_argument("--batch-size", type=int, default=None, metavar="N",
                        help="tiles per forward pass (default: chosen with the tile size to "
                             "compute the fewest pixels within the memory budget)")
    parser.add_argument("--tiling", choices=TILING_MODES, default=DEFAULT_TILING,
                        help="fast: tiles overlap by less than the receptive radius (seam "
                             "error measured, docs/tiling.md); exact: stitched = un-tiled "
                             f"(default {DEFAULT_TILING})")
    add_device_argument(parser)
    parser.add_argument("--threshold", type=float, default=0.5,
                        help="foreground probability threshold (default 0.5)")
    parser.add_argument("--min-size", type=int, default=None, metavar="PX",
                        help="drop objects smaller than this many pixels")
    parser.add_argument("--no-split", action="store_true",
                        help="do not split touching objects by shape (watershed); for long or "
                             "irregular objects")
    parser.add_argument("--diameter", type=_diameter, default=None, metavar="PX|auto",
                        help="typical object diameter in px: images whose objects lie "
                             "outside the model's size band are rescaled into it, inside it "
                             "to the training diameter when the model is surer of its "
                             "objects there; or 'auto' to estimate it with the model")
    parser.add_argument("--channel-axis", type=int, default=None,
                        help="axis of the channels (default: from the file)")
    parser.add_argument("--axes", default=None, metavar="LETTERS",
                        help="the image's axes from TZCYX, e.g. ZYX (default: from the file)")
    parser.add_argument("--3d", dest="volume", action="store_const", const=True, default=None,
                        help="a Z stack holds 3D objects: link them across slices (default "
                             "when the file says its stack is Z)")
    parser.add_argument("--stitch-threshold", type=float, default=None, metavar="IOU",
                        help="3D: link objects in neighbouring slices overlapping this much")
    parser.add_argument("--z-spacing", type=float, default=None, metavar="PX",
                        help="3D: distance between slices in lateral pixels (default: from the "
                             "file's voxel size, else 1)")
    parser.add_argument("--orthogonal-views", action=argparse.BooleanOptionalAction,
                        default=None,
                        help="3D (2.5D): also predict the XZ and YZ slices and keep a voxel "
                             "where all three views see an object; separates nuclei stacked "
                             "along z, about 3.5x slower (default: on wherever objects are "
                             "built in 3D; --no-orthogonal-views: XY slices only)")
    parser.add_argument("--block-size", type=int, default=None, metavar="PX",
                        help="planes bigger than this are labelled block by block")


def _diameter(text: str) -> float | str:
    if text == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a number of pixels or 'auto', got {text!r}") from None


def predict_config_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return dict(tile_size=args.tile, batch_size=args.batch_size, tta=args.tta,
                tiling=args.tiling,
                device=args.device, threshold=args.threshold, min_size=args.min_size,
                split_touching=not args.no_split, object_diameter=args.diameter,
                channel_axis=args.channel_axis, axes=args.axes, volume=args.volume,
                orthogonal_views=args.orthogonal_views,
                **{k: v for k, v in (("stitch_threshold", args.stitch_threshold),
                                     ("z_spacing", args.z_spacing),
                                     ("block_size", args.block_size)) if v is not None})


def load(spec: str):
    """``(UNet, ModelMeta)`` for ``--model`` (kept for ``batch``; see ``_cli_common``)."""
    return load_model(spec)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", required=True, help="input image (TIFF stack, PNG, ...)")
    add_out_argument(parser, "labels TIFF to write", metavar="LABELS.tif")
    add_common_arguments(parser)
    parser.add_argument("--uncertainty", default=None, metavar="U.tif",
                        help="also write the per-pixel uncertainty (float32 TIFF)")
    parser.add_argument("--probabilities", default=None, metavar="P.tif",
                        help="also write the class probabilities (float32 TIFF)")
    add_overwrite_argument(parser)


def implied_bytes(shape: tuple[int, ...], channel_axis: int | None, num_classes: int,
                  probabilities: bool, uncertainty: bool) -> int:
    """Memory the outputs of one image take in this command: labels (int32), the
    foreground/class probabilities, and the optional float maps, all held until written."""
    pixels = 1
    for i, n in enumerate(shape):
        if channel_axis is None or i != channel_axis % len(shape):
            pixels *= int(n)
    per_pixel = 4 + 4 * num_classes * (2 if probabilities else 1) + (4 if uncertainty else 0)
    return pixels * per_pixel


def run(args: argparse.Namespace) -> int:
    from .core.inference.batch import file_settings, stack_layout, write_probabilities
    from .core.inference.config import PredictConfig, PredictionResult
    from .core.inference.prediction import predict
    from .core.io.images import read_image, write_labels
    from .core.io.outputs import check_free_space
    from .core.io.resources import check_memory

    image_path = Path(args.image)
    if not image_path.is_file():
        raise ValueError(f"image file {str(image_path)!r} does not exist")
    out = Path(args.out)
    # Everything about the outputs is checked before the model is loaded or a pixel predicted.
    plan([out, args.uncertainty, args.probabilities], [image_path, model_file(args.model)],
         args.overwrite)
    model, meta = load(args.model)
    data = read_image(image_path)
    label_axes, lead = stack_layout(data.axes, tuple(data.array.shape))
    if lead is not None:
        raise ValueError(f"{image_path.name} has axes {data.axes}; one of Z/T at most is "
                         "supported here (use 'napari-unet batch' for hyperstacks)")
    # as batch does: the file's channel axis, axes and z spacing where the options give none
    config = file_settings(PredictConfig(uncertainty=bool(args.uncertainty),
                                         keep_probabilities=bool(args.probabilities),
                                         **predict_config_kwargs(args)), data)
    shape = tuple(int(n) for n in data.array.shape)
    check_memory(implied_bytes(shape, config.channel_axis, model.num_classes,
                               bool(args.probabilities), bool(args.uncertainty)),
                 f"predicting {image_path.name} ({' x '.join(map(str, shape))}) with its outputs")
    # Room on disk for the files, uncompressed (the worst case), before predicting anything.
    pixels = implied_bytes(shape, config.channel_axis, 0, False, False) // 4
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
