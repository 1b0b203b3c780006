"""``napari-unet predict``: segment one image file with overlap-tile prediction."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Prediction options shared by ``predict`` and ``batch``."""
    parser.add_argument("--model", default="default",
                        help="'default', a preset (original/modified/small) or a model file")
    parser.add_argument("--tta", action="store_true",
                        help="test-time augmentation: average 8 flips/rotations (8x slower)")
    parser.add_argument("--tile", type=int, default=None, metavar="PX",
                        help="input tile size (default: from the memory budget)")
    parser.add_argument("--batch-size", type=int, default=4, metavar="N",
                        help="tiles per forward pass (default 4)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--threshold", type=float, default=0.5,
                        help="foreground probability threshold (default 0.5)")
    parser.add_argument("--min-size", type=int, default=None, metavar="PX",
                        help="drop objects smaller than this many pixels")
    parser.add_argument("--no-split", action="store_true",
                        help="do not split touching objects by shape (watershed); for long or "
                             "irregular objects")
    parser.add_argument("--diameter", type=float, default=None, metavar="PX",
                        help="typical object diameter in the images (rescales to the model's)")
    parser.add_argument("--channel-axis", type=int, default=None,
                        help="axis of the channels (default: from the file)")


def predict_config_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return dict(tile_size=args.tile, batch_size=args.batch_size, tta=args.tta,
                device=args.device, threshold=args.threshold, min_size=args.min_size,
                split_touching=not args.no_split, object_diameter=args.diameter,
                channel_axis=args.channel_axis)


def load(spec: str):
    from .core.checkpoint import PRESETS, resolve_model

    counts = {} if spec in PRESETS else {"in_channels": None, "num_classes": None}
    return resolve_model(spec, **counts)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", required=True, help="input image (TIFF stack, PNG, ...)")
    parser.add_argument("--out", required=True, help="labels TIFF to write")
    add_common_arguments(parser)
    parser.add_argument("--uncertainty", default=None, metavar="U.tif",
                        help="also write the per-pixel uncertainty (float32 TIFF)")
    parser.add_argument("--probabilities", default=None, metavar="P.tif",
                        help="also write the class probabilities (float32 TIFF)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")


def _write_float(path: Path, data, axes: str, pixel_size, overwrite: bool) -> None:
    from .core.batch import _write_probabilities

    _write_probabilities(path, data, axes, pixel_size, overwrite)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .core.batch import _stack_layout
    from .core.events import Message, Progress
    from .core.io import read_image, write_labels
    from .core.tiling import PredictConfig, PredictionResult, predict

    image_path = Path(args.image)
    outputs = [Path(p) for p in (args.out, args.uncertainty, args.probabilities) if p]
    for out in outputs:
        if out.exists() and not args.overwrite:
            raise ValueError(f"{str(out)!r} already exists (use --overwrite to replace it)")
        if out.resolve() == image_path.resolve():
            raise ValueError(f"output {str(out)!r} is the input image")
        if not out.parent.is_dir():
            raise ValueError(f"folder {str(out.parent)!r} does not exist")
        if not os.access(out.parent, os.W_OK):
            raise ValueError(f"no permission to write to {str(out.parent)!r}")
    model, meta = load(args.model)
    data = read_image(image_path)
    label_axes, lead = _stack_layout(data.axes, tuple(data.array.shape))
    if lead is not None:
        raise ValueError(f"{image_path.name} has axes {data.axes}; one of Z/T at most is "
                         "supported here (use 'napari-unet batch' for hyperstacks)")
    kwargs = predict_config_kwargs(args)
    if kwargs["channel_axis"] is None:
        kwargs["channel_axis"] = data.channel_axis
    config = PredictConfig(uncertainty=bool(args.uncertainty),
                           keep_probabilities=bool(args.probabilities), **kwargs)
    result = None
    with tqdm(desc=image_path.name, unit="step", file=sys.stderr) as bar:
        for event in predict(model, data.array, config, meta):
            if isinstance(event, Progress):
                bar.total = event.total
                bar.n = event.step
                bar.refresh()
            elif isinstance(event, Message):
                tqdm.write(f"note: {event.text}", file=sys.stderr)
            elif isinstance(event, PredictionResult):
                result = event
    labels = result.instances if result.instances is not None else result.semantic
    written = write_labels(args.out, labels, label_axes, data.pixel_size,
                           overwrite=args.overwrite)
    if written.note:
        print(f"note: {written.note}", file=sys.stderr)
    if args.uncertainty:
        _write_float(Path(args.uncertainty), result.uncertainty[None], label_axes,
                     data.pixel_size, args.overwrite)
    if args.probabilities:
        _write_float(Path(args.probabilities), result.probabilities, label_axes,
                     data.pixel_size, args.overwrite)
    n = int(labels.max()) if labels.size else 0
    print(f"wrote {args.out} ({n} {'objects' if result.instances is not None else 'max class'}"
          f", device {result.device}, tile {result.tile_size[0]}x{result.tile_size[1]})")
    return 0
