"""napari-unet: the original U-Net (Ronneberger, Fischer & Brox 2015) as a napari plugin.

The public API is re-exported lazily so ``import napari_unet`` stays cheap (no torch until used).
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version
from typing import Any

try:
    __version__ = _version("napari-original-unet")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without metadata
    __version__ = "0.0.0"

_EXPORTS = {
    "UNet": "napari_unet.core.model.unet",
    "ModelMeta": "napari_unet.core.model.meta",
    "save_model": "napari_unet.core.model.checkpoint",
    "load_model": "napari_unet.core.model.checkpoint",
    "resolve_model": "napari_unet.core.model.checkpoint",
    "resolve_device": "napari_unet.core.runtime.device",
    "weight_map": "napari_unet.core.training.weight_map",
    "TrainingSet": "napari_unet.core.training.trainingset",
    "TrainConfig": "napari_unet.core.training.trainer",
    "Trainer": "napari_unet.core.training.trainer",
    "train": "napari_unet.core.training.trainer",
    "PredictConfig": "napari_unet.core.inference.prediction",
    "predict": "napari_unet.core.inference.prediction",
    "predict_image": "napari_unet.core.inference.prediction",
    "batch_segment": "napari_unet.core.inference.batch",
    "export_bioimageio": "napari_unet.core.io.export.bioimageio",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'napari_unet' has no attribute {name!r}")
