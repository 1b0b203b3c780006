"""Self-describing model files: save, load, and the one place a model is picked by name or path.

A checkpoint is one ``torch.save`` of a dict holding only plain values (str, int, float, bool,
None, lists, tuples, dicts with str keys) and tensors:

``{"format": "napari-unet", "format_version": 1, "napari_unet_version": ..., "architecture":
model.config, "meta": ModelMeta.to_dict(), "state_dict": {...}, "optimizer_state": {...} | None,
"live_state_dict": {...} | None}``

(``live_state_dict``, optional: the weights the optimizer was stepping when ``state_dict`` holds
their moving average, so that such a run resumes exactly; files without it load as before.)

so it loads with ``torch.load(weights_only=True)``, which never executes pickled code. The meta
(:class:`~core.model.meta.ModelMeta`) describes how to use the net. Files are written to a
temporary file in the target folder and moved into place, so a crash never leaves half a model.

:func:`resolve_model` is the one model loader of the CLI, the docks and batch: a new net from an
architecture name, the shipped ``"default"`` model, or a model file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..constants import ARCHITECTURES, DEFAULT_MODEL
from ..inference.predictor import predicts_channels_last
from ..io.inputs import check_input_file
from ..io.outputs import OutputExists, atomic_write
from ..runtime.device import resolve_device
from .meta import ModelMeta
from .unet import UNet

FORMAT = "napari-unet"
FORMAT_VERSION = 1
#: Model files bigger than this are refused before reading (the paper's net is ~125 MB).
MAX_MODEL_BYTES = 4 * 2**30


@dataclass(frozen=True)
class Checkpoint:
    """Everything in a model file: the net (on the requested device), its meta, optimizer state.

    ``live_state``: when the net's weights are a moving average of a training run's
    (``TrainConfig.average``), the run's own current weights, which ``optimizer_state`` belongs
    to (CPU tensors); None otherwise.
    """

    model: UNet
    meta: ModelMeta
    optimizer_state: dict[str, Any] | None
    format_version: int = FORMAT_VERSION
    napari_unet_version: str | None = None
    live_state: dict[str, torch.Tensor] | None = None


def save_model(
    path: str | os.PathLike,
    model: UNet,
    meta: ModelMeta | Mapping[str, Any] | None = None,
    optimizer_state: dict[str, Any] | None = None,
    overwrite: bool = True,
    hint: str = "overwrite=True",
    live_state: Mapping[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``model`` with its ``meta`` (and optionally optimizer state, for resuming) to ``path``.

    Parameters
    ----------
    path : path-like
        Output file (``.pt``). Its folder must exist.
    model : UNet
        The net; its ``config`` and ``state_dict`` are stored (tensors moved to the CPU).
    meta : ModelMeta or dict, optional
        What the net is (see :class:`~napari_unet.core.model.meta.ModelMeta`); a dict is validated
        into one. None: the meta of an untrained net.
    optimizer_state : dict, optional
        ``optimizer.state_dict()``, stored so that training can resume exactly.
    overwrite : bool
        Replace an existing file (atomically). Without it a file that exists, or appears while
        the model is written (another run, the user), is never replaced; ``hint`` names how
        the user allows it (``"--overwrite"`` on the command line).
    live_state : mapping, optional
        When ``model`` holds a moving average of a run's weights: the run's current weights (a
        ``state_dict`` of the same net), which ``optimizer_state`` belongs to.

    Returns
    -------
    Path
        The written file.
    """
    path = Path(path)
    if not isinstance(model, UNet):
        raise TypeError(f"can only save napari-unet UNet models, got {type(model).__name__}")
    if path.is_dir():
        raise ValueError(f"cannot save model: {str(path)!r} is a folder")
    if not path.parent.is_dir():
        raise ValueError(f"cannot save model: folder {str(path.parent)!r} does not exist")
    if path.exists() and not overwrite:
        raise OutputExists(path, hint)
    meta = as_meta(meta, model)
    weights = model.state_dict()
    if live_state is not None:
        _check_live(live_state, weights)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "napari_unet_version": _version(),
        "architecture": dict(model.config),
        "meta": _plain(meta.to_dict(), "meta"),
        "state_dict": {k: v.detach().to("cpu").clone() for k, v in weights.items()},
        "optimizer_state": _to_cpu(optimizer_state) if optimizer_state is not None else None,
        "live_state_dict": None if live_state is None else
        {k: v.detach().to("cpu").clone() for k, v in live_state.items()},
    }
    with atomic_write(path, overwrite=overwrite, hint=hint) as tmp:
        torch.save(payload, tmp)
    return path


def as_meta(meta: ModelMeta | Mapping[str, Any] | None, model: UNet) -> ModelMeta:
    """``meta`` as a :class:`ModelMeta` that fits ``model`` (its number of classes)."""
    if meta is None:
        meta = ModelMeta.for_model(model)
    elif not isinstance(meta, ModelMeta):
        meta = ModelMeta.from_dict(meta, model=model)
    if len(meta.class_names) != model.num_classes:
        raise ValueError(f"the meta names {len(meta.class_names)} classes but the net has "
                         f"{model.num_classes}")
    return meta


def load_checkpoint(path: str | os.PathLike,
                    device: str | torch.device = "cpu") -> Checkpoint:
    """Read a model file written by :func:`save_model` (or ``"default"``, the shipped model).

    Raises ``ValueError`` when the file is missing, not a napari-unet model, corrupt or
    truncated, claims an architecture its weights do not fit, or was written by a newer format
    version. Loading never executes pickled code. On the CPU the net comes channels-last, the
    layout prediction runs in (its outputs equal the default layout's to float rounding).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"a model file must be a path, got {type(path).__name__}")
    target = _target(device)
    path = default_model_path() if str(path) == DEFAULT_MODEL else Path(path)
    from ..io.export.package import is_bioimageio_package, load_bioimageio_package

    if is_bioimageio_package(path):  # a BioImage Model Zoo package (.zip or folder)
        model, meta = load_bioimageio_package(path, target)
        return Checkpoint(_laid_out(model, target), meta, optimizer_state=None)
    check_input_file(path, "model file", " (a model package folder holds an rdf.yaml)")
    size = path.stat().st_size
    if size > MAX_MODEL_BYTES:
        raise ValueError(f"{str(path)!r} is {size / 2**30:.1f} GiB, more than any napari-unet "
                         f"model ({MAX_MODEL_BYTES / 2**30:.0f} GiB at most)")
    payload = _read_payload(path)
    version = payload.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version > FORMAT_VERSION:
        raise ValueError(
            f"{str(path)!r} has model format version {version!r}; this napari-unet reads up to "
            f"{FORMAT_VERSION} - please upgrade napari-unet"
        )
    try:
        model = _build(payload.get("architecture"), payload.get("state_dict"))
        meta = ModelMeta.from_dict(payload.get("meta"), model=model)
        meta = as_meta(meta, model)
        live = payload.get("live_state_dict")
        if live is not None:
            _check_live(live, model.state_dict())
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{str(path)!r} is not a valid napari-unet model: "
                         f"{_first_line(err)}") from None
    _laid_out(model.to(target), target)
    model.eval()
    optimizer_state = payload.get("optimizer_state")
    if optimizer_state is not None and not isinstance(optimizer_state, dict):
        optimizer_state = None
    return Checkpoint(model, meta, optimizer_state, version,
                      payload.get("napari_unet_version"), live)


def load_model(path: str | os.PathLike,
               device: str | torch.device = "cpu") -> tuple[UNet, ModelMeta]:
    """Load ``(model, meta)`` from ``path`` or ``"default"``; the model is in eval mode.

    ``device`` is "cpu", "auto", "cuda", "cuda:N", "mps" or a ``torch.device``; None means
    "auto"."""
    ckpt = load_checkpoint(path, device)
    return ckpt.model, ckpt.meta


def _target(device: str | torch.device | None) -> torch.device:
    """Where a loaded net goes: ``device`` checked by ``resolve_device`` (``TypeError`` or
    ``ValueError`` naming it, never torch's own error); None means "auto"."""
    return resolve_device("auto" if device is None else device)


def _laid_out(model: UNet, device: torch.device) -> UNet:
    """``model`` in the layout prediction runs it in on ``device``, so that predicting needs no
    copy of the net."""
    if predicts_channels_last(device):
        model.to(memory_format=torch.channels_last)
    return model


def default_model_path() -> Path:
    """Location of the shipped default model; ``ValueError`` if it is not installed."""
    path = Path(str(resources.files("napari_unet"))) / "models" / "default.pt"
    if not path.is_file():
        raise ValueError(
            "the default model is missing from this napari-unet installation "
            f"(expected {str(path)!r}); choose 'original', 'modified', 'small' or a model file"
        )
    return path


def model_source_of(spec: str | os.PathLike) -> Path | None:
    """The file or package folder a model spec loads (the installed file for ``"default"``):
    an input no output may replace. None for a new net's name, or a default not installed."""
    if str(spec) in ARCHITECTURES:
        return None
    if str(spec) == DEFAULT_MODEL:
        try:
            return default_model_path()
        except ValueError:  # loading it says so
            return None
    return Path(spec)


def resolve_model(
    spec: str | os.PathLike,
    in_channels: int | None = None,
    num_classes: int | None = None,
    device: str | torch.device = "cpu",
) -> tuple[UNet, ModelMeta]:
    """A net from an architecture name (new, He-initialised), ``"default"`` or a model file.

    The one model loader of the CLI, the docks and batch.

    Parameters
    ----------
    spec : str or path-like
        ``"original"`` (the paper's valid net), ``"modified"`` (padded), ``"small"`` (padded,
        half the channels), ``"default"`` (the shipped model) or a path to a saved model.
    in_channels, num_classes : int, optional
        Channels/classes of a new net (default 1 and 2); for a loaded net, if given, they must
        match its own.
    device : str or torch.device
        Where to put the net.

    Returns
    -------
    (UNet, ModelMeta)
    """
    if isinstance(spec, UNet):
        raise TypeError("resolve_model takes a name or a path; you already have a UNet")
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(f"a model must be 'default', one of {ARCHITECTURES} or a model file, "
                        f"got {type(spec).__name__}")
    target = _target(device)
    if isinstance(spec, str) and spec in ARCHITECTURES:
        model = getattr(UNet, spec)(in_channels=in_channels or 1,
                                    num_classes=num_classes or 2)
        return model.to(target), ModelMeta.for_model(model)
    model, meta = load_model(spec, target)
    for what, want, have in (("input channels", in_channels, model.in_channels),
                             ("classes", num_classes, model.num_classes)):
        if want is not None and want != have:
            hint = ("; choose one channel of the image (the channel setting, --channel on the "
                    "command line)" if what == "input channels" and have == 1 else "")
            raise ValueError(
                f"model {str(spec)!r} has {have} {what} but {want} are needed here{hint}"
            )
    return model, meta


# -- helpers -------------------------------------------------------------------------------
def _read_payload(path: Path) -> dict[str, Any]:
    """The checkpoint dict, or our own ``ValueError`` (never torch's advice to load unsafely)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for foreign bytes
        # UnpicklingError, RuntimeError ("PytorchStreamReader failed"), EOFError, zip errors,
        # ...; the text is torch's and may advise weights_only=False: never pass that on.
        raise ValueError(
            f"{str(path)!r} is not a valid napari-unet model file (it could not be read as one: "
            f"{type(err).__name__}); napari-unet never executes code stored in model files"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(
            f"{str(path)!r} is not a valid napari-unet model: it has no napari-unet header "
            "(a bare state_dict or another program's file?)"
        )
    return payload


def _build(architecture: Any, state_dict: Any) -> UNet:
    """The net of ``architecture`` with ``state_dict`` loaded, checked before allocating.

    The architecture is first built on torch's ``meta`` device (no memory), and every tensor of
    the file must match its shapes, so that a small file claiming a huge net fails fast.
    """
    if not _is_tensor_dict(state_dict):
        raise ValueError("its weights are missing or not tensors")
    with torch.device("meta"):
        skeleton = UNet.from_config(architecture)
    misfit = _shape_misfit(state_dict, skeleton.state_dict())
    if misfit:
        raise ValueError(f"its weights do not fit its architecture ({misfit})")
    model = UNet.from_config(architecture)
    model.load_state_dict(state_dict, strict=True)
    return model


def _check_live(live: Any, weights: Mapping[str, torch.Tensor]) -> None:
    """``ValueError`` unless ``live`` is a state_dict of tensors shaped like ``weights``."""
    misfit = _shape_misfit(live, weights) if _is_tensor_dict(live) else "not tensors"
    if misfit:
        raise ValueError(f"live_state must be a state_dict of the same net as model ({misfit})")


def _is_tensor_dict(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(v, torch.Tensor)
                                           for v in value.values())


def _shape_misfit(found: Mapping[str, torch.Tensor],
                  expected: Mapping[str, torch.Tensor]) -> str | None:
    """How the tensors ``found`` differ from ``expected`` in names or shapes (None: they fit)."""
    want = {k: tuple(v.shape) for k, v in expected.items()}
    have = {k: tuple(v.shape) for k, v in found.items()}
    if want.keys() != have.keys():
        missing = sorted(want.keys() - have.keys())
        extra = sorted(have.keys() - want.keys())
        return f"missing {missing[:3]}, unexpected {extra[:3]}"
    wrong = [k for k in want if want[k] != have[k]]
    if wrong:
        return f"{wrong[0]}: {have[wrong[0]]} instead of {want[wrong[0]]}"
    return None


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
    from ... import __version__

    return __version__


__all__ = [
    "Checkpoint",
    "as_meta",
    "default_model_path",
    "load_checkpoint",
    "load_model",
    "resolve_model",
    "save_model",
]
