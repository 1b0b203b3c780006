"""Every tooltip of the docks, in one table (so wording stays consistent and none is missing).

Public API
----------
``TOOLTIPS : dict[str, dict[str, str]]``
    ``TOOLTIPS[dock][name]``: the tooltip of the control whose Qt object name is ``name`` in the
    dock ``dock`` (``"annotate"``, ``"predict"``, ``"batch"``, ``"train"``). The ``"model"``
    section belongs to the shared model picker (``model_choice.ModelChoice``) and
    ``"common"`` holds controls every dock has (``reset_settings``); both are looked up after
    the dock's own section.
``tooltip(dock, name) -> str``
    The entry; ``KeyError`` naming the missing entry (so a new control without a tooltip fails
    loudly in the tests, not silently in the GUI).
``apply_tooltips(root, dock)``
    Sets the tooltip of every child of ``root`` whose object name has an entry.
``controls_without_tooltip(root) -> list[str]``
    The interactive children of ``root`` (buttons, check boxes, spin boxes, combo boxes, line
    edits, sliders) that have no tooltip, described by object name or text; tests assert it is
    empty for each dock.

The Train dock's entries (``TOOLTIPS["train"]``) are keyed by the control's object name, which
for controls generated from ``TrainConfig`` is the config field's name.
"""

from __future__ import annotations

from qtpy.QtWidgets import (
    QAbstractButton,
    QAbstractScrollArea,
    QAbstractSlider,
    QAbstractSpinBox,
    QComboBox,
    QLineEdit,
    QWidget,
)

_COMMON = {
    "advanced_settings": "show or hide the settings that rarely need changing",
    "reset_settings": "put every setting of this dock back to its default (settings are "
                      "otherwise remembered between napari sessions)",
}

_MODEL = {
    "model_source": "the shipped default model, a model file (.pt, or a bioimage.io package "
                    "made by napari-unet export), or a new untrained net (Train dock)",
    "model_upsampling": "new nets only. transpose: the paper's 2x2 up-convolution; bilinear: "
                        "bilinear x2 then a 1x1 convolution",
    "model_path": "path of the model file",
    "model_browse": "choose the model file",
}

_PREDICT = {
    "image": "the image layer to segment",
    "estimate_diameter": "estimate the typical object diameter from the image",
    "own_normalization": "normalise the image with the percentiles below instead of the ones "
                         "the model was trained with",
    "norm_low": "intensity percentile mapped to 0 before the net sees the image",
    "norm_high": "intensity percentile mapped to 1 before the net sees the image",
    "scope": "predict the whole stack, or only the slice on screen (fast check)",
    "output": "write the labels into a new layer, or replace an existing (non-training) labels "
              "layer after confirmation",
    "probabilities": "also add the foreground probability as an image layer",
    "uncertainty_layer": "also add a per-pixel uncertainty layer: bright where the model is "
                         "unsure, so where to paint next",
    "run": "segment the image with the model (runs in the background; see napari's activity "
           "panel)",
    "stop": "stop the prediction at its next tile; nothing is written",
}

_BATCH = {
    "input_dir": "folder with the images to segment (TIFF, PNG, JPEG, ...)",
    "input_browse": "choose the folder with the images",
    "output_dir": "folder for the label TIFFs (created if missing); one file per image, with "
                  "the image's name and pixel size",
    "output_browse": "choose the folder for the labels",
    "probabilities": "also write <name>_probabilities.tif (float32, one channel per class)",
    "suffix": "appended to each image's name for its labels file (empty: the same name)",
    "overwrite": "replace labels files that already exist; otherwise they are skipped, so an "
                 "interrupted batch resumes. Never remembered between sessions",
    "run": "segment every image of the folder (runs in the background; see napari's activity "
           "panel)",
    "stop": "stop after the image being written; files written so far are kept",
}

_ANNOTATE = {
    "image": "the image to annotate; the training layer gets its shape, scale and position",
    "channel_axis": "axis of the image that holds channels (not painted); 'none' for "
                    "single-channel or RGB images",
    "mode": "instances: one id per object; classes: ids are the semantic classes named below",
    "class_names": "class names, background first, comma-separated",
    "create": "a new labels layer matching the image, with 0 = not annotated (ignored in "
              "training)",
    "training_labels": "the training labels layer to paint",
    "paint_background": "select label 1 (background) and the brush",
    "new_object": "select the next free object id and the brush",
    "paint_class_choice": "the class to paint",
    "paint_class": "select the chosen class and the brush",
    "prediction": "a labels layer predicted by a model, to correct instead of painting from "
                  "scratch",
    "slice_only": "for stacks: copy only the slice on screen",
    "use_prediction": "copy the prediction into the training labels (background -> 1, object "
                      "k -> k+1), then correct it and train again; Ctrl+Z undoes it",
}

#: Train dock entries (object name -> tooltip). The controls generated from TrainConfig and the
#: augmentation switches get the help of their setting declarations (:func:`tooltip`).
_TRAIN: dict[str, str] = {
    "image": "the image layer to train on",
    "training_labels": "the painted training labels (make them in the Annotate dock); edits "
                       "made while training reach the running training within a few steps",
    "convention": "sparse: 0 = not annotated, 1 = background, 2.. = objects (Annotate dock)\n"
                  "dense: 0 = background, 1.. = objects (full masks)\n"
                  "binary: 0 / non-zero, objects = connected components\n"
                  "semantic: ids are classes, 255 = ignore; semantic-sparse: class c painted "
                  "as c+1",
    "restore": "add the autosaved training labels of this image as a layer and continue from "
               "its autosaved model",
    "intensity": "random brightness, contrast and gamma changes",
    "live_preview": "show the model's foreground probability of the part of the image in view "
                    "while it trains",
    "run": "train in the background until the time budget or the step count is reached; the "
           "progress and time left show below, and the model is auto-saved next to the image",
    "stop": "stop after the current step; the model is auto-saved",
    "save": "save the trained model to a file of your choice",
    "predict_with": "open the Predict dock on this image with the model saved last (the "
                    "Predict and Batch docks also list it among their models)",
    "export": "write the trained model as a BioImage Model Zoo package (.zip) for deepImageJ, "
              "ilastik, QuPath or bioimageio.core; it loads here too",
}

TOOLTIPS: dict[str, dict[str, str]] = {
    "common": _COMMON,
    "model": _MODEL,
    "predict": _PREDICT,
    "batch": _BATCH,
    "annotate": _ANNOTATE,
    "train": _TRAIN,
}

_SHARED_SECTIONS = ("model", "common")


def settings_classes(dock: str) -> tuple[type, ...]:
    """The settings dataclasses whose declarations (``core.settings``) give ``dock``'s
    generated controls their help."""
    if dock in ("predict", "batch"):
        from ..core.inference.config import PredictConfig

        return (PredictConfig,)
    if dock == "train":
        from ..core.inference.config import PredictConfig
        from ..core.training.augment import AugmentConfig
        from ..core.training.config import TrainConfig

        return (TrainConfig, AugmentConfig, PredictConfig)  # the image's channel, as predicted
    return ()


def tooltip(dock: str, name: str) -> str:
    """The tooltip of control ``name`` in ``dock``: the dock's table, then the declared help
    of the setting of that name; ``KeyError`` naming a missing entry."""
    from ..core.settings import declared

    if dock not in TOOLTIPS:
        raise KeyError(f"no tooltip table for dock {dock!r}; known: {sorted(TOOLTIPS)}")
    for section in (dock, *_SHARED_SECTIONS):
        if name in TOOLTIPS[section]:
            return TOOLTIPS[section][name]
    for cls in settings_classes(dock):
        try:
            return declared(cls, name).setting.help
        except KeyError:
            continue
    raise KeyError(f"no tooltip for {name!r} in the {dock!r} dock: add it to "
                   "napari_unet._widgets.tooltips.TOOLTIPS")


def apply_tooltips(root: QWidget, dock: str) -> None:
    """Set the tooltip of every child of ``root`` whose object name has an entry."""
    for child in root.findChildren(QWidget):
        name = child.objectName()
        if not name:
            continue
        try:
            child.setToolTip(tooltip(dock, name))
        except KeyError:
            continue


_INTERACTIVE = (QAbstractButton, QAbstractSpinBox, QComboBox, QLineEdit, QAbstractSlider)
#: Parts of these (a spin box's editor, a combo box's popup list, a scroll bar) are not controls
#: of their own: the compound widget carries the tooltip.
_COMPOUND = (QAbstractSpinBox, QComboBox, QAbstractScrollArea)


def _inside_compound(widget: QWidget, root: QWidget) -> bool:
    parent = widget.parentWidget()
    while parent is not None and parent is not root:
        if isinstance(parent, _COMPOUND):
            return True
        parent = parent.parentWidget()
    return False


def controls_without_tooltip(root: QWidget) -> list[str]:
    """Interactive children of ``root`` without a tooltip (object name, text or class)."""
    missing = []
    for child in root.findChildren(QWidget):
        if not isinstance(child, _INTERACTIVE) or child.toolTip().strip():
            continue
        if _inside_compound(child, root):
            continue
        text = child.text() if hasattr(child, "text") and callable(child.text) else ""
        missing.append(child.objectName() or text or type(child).__name__)
    return missing


__all__ = ["TOOLTIPS", "apply_tooltips", "controls_without_tooltip", "tooltip"]
