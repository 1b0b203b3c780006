"""A model card rendered from a checkpoint's meta, so card and model cannot disagree."""

from __future__ import annotations

import json
from typing import Any

from .meta import ModelMeta
from .unet import UNet, count_parameters

EVALUATION_COLUMNS = ("iou", "dice", "ap50", "ap75", "split_rate", "n_gt", "n_images")


def render_model_card(model: UNet, meta: ModelMeta) -> str:
    """Markdown model card of a saved model: its architecture (``model.config``), its
    parameter count and its :class:`~napari_unet.core.model.meta.ModelMeta` (name, training data,
    evaluation ``{data set: {metric: value}}``, credits)."""
    arch = model.config
    training = meta.training or {}
    n_parameters = count_parameters(model)
    lines = [
        f"# Model card: {meta.name}",
        "",
        "Generated from the model file's metadata by `napari_unet.core.model.card`; "
        "do not edit by hand.",
        "",
        "## Model",
        f"- architecture: U-Net, {arch['padding']} convolutions, depth {arch['depth']}, "
        f"base channels {arch['base_channels']}, {arch['upsampling']} upsampling, "
        f"batch norm {arch['batch_norm']}, dropout {arch['dropout']}",
        f"- parameters: {n_parameters:,}",
        f"- input channels: {arch['in_channels']}; classes: "
        f"{', '.join(meta.class_names)} (mode: {meta.mode})",
        f"- normalisation: `{json.dumps(meta.normalization, sort_keys=True)}`",
        f"- object diameter at training: {_fmt(meta.object_diameter)} px; "
        f"pixel size: {_fmt(meta.pixel_size)}",
        "",
        "## Training",
        f"- data: {meta.training_data or 'not recorded'}",
        f"- steps: {meta.step}{_best(meta)}; preset {training.get('preset')}, optimizer "
        f"{training.get('optimizer')}, lr {training.get('lr')}, "
        f"batch {training.get('batch_size')}, "
        f"tile {training.get('tile_size')}, loss {training.get('loss')} (w0 {training.get('w0')}, "
        f"sigma {training.get('sigma')}), seed {training.get('seed')}",
    ]
    evaluation = {name: scores for name, scores in (meta.evaluation or {}).items()
                  if isinstance(scores, dict)}
    if evaluation:
        lines += ["", "## Evaluation (held-out data, scores pooled over images)", "",
                  "| data | " + " | ".join(EVALUATION_COLUMNS) + " |",
                  "|---|" + "---|" * len(EVALUATION_COLUMNS)]
        for name, scores in evaluation.items():
            lines.append(f"| {name} | " + " | ".join(_fmt(scores.get(c)) for c in
                                                    EVALUATION_COLUMNS) + " |")
    if meta.credits:
        lines += ["", "## Data credits", "", meta.credits]
    return "\n".join(lines) + "\n"


def _best(meta: ModelMeta) -> str:
    if meta.best_step is None or meta.best_step == meta.step:
        return ""
    return f" (weights from step {meta.best_step}, the best validation score)"


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return "n/a" if value != value else f"{value:.3f}"
    return str(value)
