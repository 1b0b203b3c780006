"""``napari-unet eval``: score a model on image/label pairs.

Predicts every image with overlap-tile prediction (``core.inference.prediction``) and compares the
instances
with the ground truth: foreground IoU and Dice, instance AP at IoU 0.5 and 0.75, and the split
rate of touching objects, per image and pooled over the data set (``core.data.evaluation``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from ._cli_common import (
    add_model_argument,
    add_overwrite_argument,
    load_model,
    model_file,
    plan,
)
from ._cli_settings import add_setting_options, settings_from_args
from ._cli_train import add_data_arguments, data_pairs, read_pair

COLUMNS = (("iou", "IoU"), ("dice", "Dice"), ("ap50", "AP@0.5"), ("ap75", "AP@0.75"),
           ("split_rate", "split rate"))


def _predict_config() -> type:
    from .core.inference.config import PredictConfig

    return PredictConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_argument(parser, default=None,
                       help="'default' or a model file (a preset would be untrained)")
    add_data_arguments(parser)
    parser.add_argument("--binary", action="store_true",
                        help="ground truth is binary: objects are its connected components")
    # the settings predict takes, so that eval scores what predict gives
    add_setting_options(parser, _predict_config(), exclude=("channel_axis", "channel"))
    parser.add_argument("--json", default=None, metavar="FILE",
                        help="also write the scores (per image and pooled) as JSON")
    add_overwrite_argument(parser, "--json file")


def run(args: argparse.Namespace) -> int:
    from .core.data.evaluation import evaluate_dataset
    from .core.data.metrics import evaluate
    from .core.inference.prediction import predict_image
    from .core.io.outputs import atomic_write
    from .core.training.labels import labels_to_instances

    pairs = data_pairs(args)
    # The scores file is checked before any prediction: never an input, never an existing
    # file without --overwrite (the ground truth and the model were replaced this way once).
    plan([args.json], [model_file(args.model), *(p for pair in pairs for p in pair)],
         args.overwrite)
    model, meta = load_model(args.model)
    if meta.mode != "instances":
        raise ValueError("eval scores instance segmentation; this is a semantic model")
    rows: list[tuple[str, dict[str, float]]] = []
    scored = []
    for image_path, labels_path in pairs:
        image, labels, channel_axis, _ = read_pair(image_path, labels_path, args.channel_axis)
        if labels.ndim != 2:
            raise ValueError(f"{labels_path.name}: eval takes 2D label images, got shape "
                             f"{labels.shape}")
        truth, _ = labels_to_instances(labels, "binary" if args.binary else "dense")
        result = predict_image(model, image, meta=meta, channel_axis=channel_axis,
                               keep_probabilities=False,
                               **settings_from_args(args, _predict_config(),
                                                    exclude=("channel_axis",)))
        pred = np.asarray(result.instances)
        rows.append((image_path.name, evaluate(truth, pred)))
        scored.append((truth, pred))
    pooled = evaluate_dataset(scored)
    width = max(len("pooled"), *(len(name) for name, _ in rows))
    print(f"{'image':<{width}}  " + "  ".join(f"{title:>10}" for _, title in COLUMNS)
          + f"  {'objects':>9}")
    for name, scores in [*rows, ("pooled" if len(rows) > 1 else "", pooled)]:
        if not name:
            continue
        cells = "  ".join(_fmt(scores[key]) for key, _ in COLUMNS)
        print(f"{name:<{width}}  {cells}  {scores['n_pred']:>4}/{scores['n_gt']:<4}")
    if args.json:
        payload = {"model": str(args.model), "pooled": _plain(pooled),
                   "images": {name: _plain(s) for name, s in rows}}
        with atomic_write(args.json, overwrite=args.overwrite, hint="--overwrite") as tmp:
            Path(tmp).write_text(json.dumps(payload, indent=2))
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


def _fmt(value: float) -> str:
    return f"{'n/a':>10}" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{value:>10.3f}"


def _plain(scores: dict[str, float]) -> dict[str, float | None]:
    return {k: (None if isinstance(v, float) and math.isnan(v) else float(v))
            for k, v in scores.items()}
