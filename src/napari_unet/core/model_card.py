"""A model card rendered from a checkpoint's meta, so card and model cannot disagree."""

from __future__ import annotations

import json
from typing import Any

EVALUATION_COLUMNS = ("iou", "dice", "ap50", "ap75", "split_rate", "n_gt", "n_images")


def render_model_card(meta: dict[str, Any], n_parameters: int) -> str:
    """Markdown model card of a saved model.

    Parameters
    ----------
    meta : dict
        The model's meta (``load_model``), with the architecture under ``"architecture"`` and,
        for shipped models, ``"name"``, ``"training_data"``, ``"evaluation"``
        (``{data set: {metric: value}}``) and ``"credits"``.
    n_parameters : int
        Trainable parameters of the net.
    """
    arch = meta.get("architecture", {})
    training = meta.get("training") or {}
    lines = [
        f"# Model card: {meta.get('name', 'napari-unet model')}",
        "",
        "Generated from the model file's metadata by `napari_unet.core.model_card`; "
        "do not edit by hand.",
        "",
        "## Model",
        f"- architecture: U-Net, {arch.get('padding')} convolutions, depth {arch.get('depth')}, "
        f"base channels {arch.get('base_channels')}, {arch.get('upsampling')} upsampling, "
        f"batch norm {arch.get('batch_norm')}, dropout {arch.get('dropout')}",
        f"- parameters: {n_parameters:,}",
        f"- input channels: {arch.get('in_channels')}; classes: "
        f"{', '.join(meta.get('class_names', []))} (mode: {meta.get('mode')})",
        f"- normalisation: `{json.dumps(meta.get('normalization'), sort_keys=True)}`",
        f"- object diameter at training: {_fmt(meta.get('object_diameter'))} px; "
        f"pixel size: {_fmt(meta.get('pixel_size'))}",
        "",
        "## Training",
        f"- data: {meta.get('training_data', 'not recorded')}",
        f"- steps: {meta.get('step')}; preset {training.get('preset')}, optimizer "
        f"{training.get('optimizer')}, lr {training.get('lr')}, "
        f"batch {training.get('batch_size')}, "
        f"tile {training.get('tile_size')}, loss {training.get('loss')} (w0 {training.get('w0')}, "
        f"sigma {training.get('sigma')}), seed {training.get('seed')}",
    ]
    evaluation = meta.get("evaluation") or {}
    if evaluation:
        lines += ["", "## Evaluation (held-out data, scores pooled over images)", "",
                  "| data | " + " | ".join(EVALUATION_COLUMNS) + " |",
                  "|---|" + "---|" * len(EVALUATION_COLUMNS)]
        for name, scores in evaluation.items():
            lines.append(f"| {name} | " + " | ".join(_fmt(scores.get(c)) for c in
                                                    EVALUATION_COLUMNS) + " |")
    if meta.get("credits"):
        lines += ["", "## Data credits", "", meta["credits"]]
    return "\n".join(lines) + "\n"


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return "n/a" if value != value else f"{value:.3f}"
    return str(value)
