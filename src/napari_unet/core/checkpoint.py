"""Self-describing model files: save, load, and pick a model by name or path.

A checkpoint is one ``torch.save`` of a dict holding only plain values (str, int, float, bool,
None, lists, tuples, dicts with str keys) and tensors:

``{"format": "napari-unet", "format_version": 1, "napari_unet_version": ..., "architecture":
model.config, "meta": {...}, "state_dict": {...}, "optimizer_state": {...} | None}``

so it loads with ``torch.load(weights_only=True)``, which never executes pickled code. The meta
describes how to use the net: mode ("instances"/"semantic"), class names, normalisation spec,
pixel size, object diameter, training config and step. Files are written to a temporary file in
the target folder and moved into place with ``os.replace``, so a crash never leaves half a model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .atomic import atomic_path
from .model import UNet

FORMAT = "napari-unet"
FORMAT_VERSION = 1
PRESETS = ("original", "modified", "small")
DEFAULT_NORMALIZATION: dict[str, Any] = {"method": "percentile", "low": 1.0, "high": 99.8}
MODES = ("instances", "semantic")


@dataclass(frozen=True)
class Checkpoint:
    """Everything in a model file: the net (on the requested device), its meta, optimizer state."""

    model: UNet
    meta: dict[str, Any]
    optimizer_state: dict[str, Any] | None


def default_meta(model: UNet, **overrides: Any) -> dict[str, Any]:
    """Meta of a net that has not been trained yet (or is missing fields), with ``overrides``.

    Instance-mode nets have 2 classes (background, foreground); other class counts are semantic.
    """
    n = model.num_classes
    mode = "instances" if n == 2 else "semantic"
    meta: dict[str, Any] = {
        "mode": mode,
        "class_names": ["background", "foreground"] if n == 2
        else ["background", *(f"class {i}" for i in range(1, n))],
        "normalization": dict(DEFAULT_NORMALIZATION),
        "pixel_size": None,
        "object_diameter": None,
        "training": None,
        "step": 0,
    }
    meta.update(overrides)
    return meta


def save_model(
    path: str | os.PathLike,
    model: UNet,
    meta: dict[str, Any] | None = None,
    optimizer_state: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` with its ``meta`` (and optionally optimizer state, for resuming) to ``path``.

    Parameters
    ----------
    path : path-like
        Output file (``.pt``). Its folder must exist; an existing file is replaced atomically.
    model : UNet
        The net; its ``config`` and ``state_dict`` are stored (tensors moved to the CPU).
    meta : dict, optional
        Plain values describing the net (see :func:`default_meta` for the keys); missing keys
        are filled with defaults.
    optimizer_state : dict, optional
        ``optimizer.state_dict()``, stored so that training can resume exactly.

    Returns
    -------
    Path
        The written file.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"cannot save model: folder {str(path.parent)!r} does not exist")
    if path.is_dir():
        raise ValueError(f"cannot save model: {str(path)!r} is a folder")
    if not isinstance(model, UNet):
        raise ValueError(f"can only save napari-unet UNet models, got {type(model).__name__}")
    meta = default_meta(model, **_plain(dict(meta or {}), "meta"))
    if meta["mode"] not in MODES:
        raise ValueError(f"meta['mode'] must be one of {MODES}, got {meta['mode']!r}")
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "napari_unet_version": _version(),
        "architecture": dict(model.config),
        "meta": meta,
        "state_dict": {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()},
        "optimizer_state": _to_cpu(optimizer_state) if optimizer_state is not None else None,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> Checkpoint:
    """Read a model file written by :func:`save_model` (or ``"default"``, the shipped model).

    Raises ``ValueError`` when the file is missing, not a napari-unet model, corrupt/truncated,
    or written by a newer format version. Loading never executes pickled code.
    """
    path = default_model_path() if str(path) == "default" else Path(path)
    if not path.is_file():
        raise ValueError(f"model file {str(path)!r} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors, truncated zip archives, text files, ...
        raise ValueError(
            f"{str(path)!r} is not a valid napari-unet model: {_first_line(err)}"
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(
            f"{str(path)!r} is not a valid napari-unet model: it has no napari-unet header "
            "(a bare state_dict or another program's file?)"
        )
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"{str(path)!r} has model format version {version!r}; this napari-unet reads up to "
            f"{FORMAT_VERSION} - please upgrade napari-unet"
        )
    try:
        model = UNet.from_config(payload["architecture"])
        model.load_state_dict(payload["state_dict"], strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise ValueError(
            f"{str(path)!r} is not a valid napari-unet model: {_first_line(err)}"
        ) from err
    model.to(device)
    model.eval()
    meta = default_meta(model, **payload.get("meta", {}))
    meta.update(
        architecture=dict(model.config),
        in_channels=model.in_channels,
        num_classes=model.num_classes,
        format_version=version,
        napari_unet_version=payload.get("napari_unet_version"),
    )
    return Checkpoint(model, meta, payload.get("optimizer_state"))


def load_model(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[UNet, dict[str, Any]]:
    """Load ``(model, meta)`` from ``path`` or ``"default"``; the model is in eval mode.

    ``meta`` holds the saved meta plus ``architecture``, ``in_channels``, ``num_classes``,
    ``format_version`` and ``napari_unet_version``.
    """
    ckpt = load_checkpoint(path, device)
    return ckpt.model, ckpt.meta


def default_model_path() -> Path:
    """Location of the shipped default model; ``ValueError`` if it is not installed."""
    path = Path(str(resources.files("napari_unet"))) / "models" / "default.pt"
    if not path.is_file():
        raise ValueError(
            "the default model is missing from this napari-unet installation "
            f"(expected {str(path)!r}); choose 'original', 'modified', 'small' or a model file"
        )
    return path


def resolve_model(
    spec: str | os.PathLike,
    in_channels: int = 1,
    num_classes: int = 2,
    device: str | torch.device = "cpu",
) -> tuple[UNet, dict[str, Any]]:
    """A net from a preset name (new, He-initialised), ``"default"`` or a model file.

    Parameters
    ----------
    spec : str or path-like
        ``"original"`` (the paper's valid net), ``"modified"`` (padded), ``"small"`` (padded,
        half the channels), ``"default"`` (the shipped model) or a path to a saved model.
    in_channels, num_classes : int
        Channels/classes of a new net; for a loaded net they must match its own.
    device : str or torch.device
        Where to put the net.

    Returns
    -------
    (UNet, dict)
        The net and its meta (see :func:`load_model`).
    """
    if isinstance(spec, str) and spec in PRESETS:
        model = getattr(UNet, spec)(in_channels=in_channels, num_classes=num_classes)
        meta = default_meta(model, architecture=dict(model.config),
                            in_channels=model.in_channels, num_classes=model.num_classes)
        return model.to(device), meta
    model, meta = load_model(spec, device)
    for what, want, have in (("input channels", in_channels, model.in_channels),
                             ("classes", num_classes, model.num_classes)):
        if want is not None and want != have:
            raise ValueError(
                f"model {str(spec)!r} has {have} {what} but {want} are needed here"
            )
    return model, meta


# -- helpers -------------------------------------------------------------------------------
def _plain(value: Any, where: str) -> Any:
    """``value`` with numpy scalars/arrays made plain; ``ValueError`` for anything unpicklable
    by ``weights_only`` loading (objects, dataclasses, paths, ...)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, (list, tuple)):
        items = [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise ValueError(f"{where} keys must be str or int, got {k!r}")
            out[k] = _plain(v, f"{where}[{k!r}]")
        return out
    raise ValueError(
        f"{where} must hold only plain values (str, numbers, None, lists, dicts), "
        f"got {type(value).__name__}"
    )


def _to_cpu(state: Any) -> Any:
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu").clone()
    if isinstance(state, dict):
        return {k: _to_cpu(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_to_cpu(v) for v in state)
    return state


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _version() -> str:
    from .. import __version__

    return __version__


__all__ = [
    "Checkpoint",
    "default_meta",
    "default_model_path",
    "load_checkpoint",
    "load_model",
    "resolve_model",
    "save_model",
]
