"""Pick the torch device: CUDA, then Apple MPS, then CPU; the one place device names are checked."""

from __future__ import annotations

import re

import torch

DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")
_CUDA_INDEX = re.compile(r"cuda:\d+")


def check_device_name(name: object) -> str:
    """``name`` if it is a device name we understand, without touching any accelerator.

    Settings dataclasses call this in ``__post_init__``; whether the device exists is checked by
    :func:`resolve_device` when the job starts. ``TypeError`` for a non-string, ``ValueError``
    for an unknown name.
    """
    if isinstance(name, torch.device):
        name = str(name)
    if not isinstance(name, str):
        raise TypeError(f"device must be a string such as 'auto' or 'cpu', got "
                        f"{type(name).__name__}")
    if name not in DEVICE_CHOICES and not _CUDA_INDEX.fullmatch(name):
        raise ValueError(f"device must be one of {', '.join(DEVICE_CHOICES)} or cuda:N, "
                         f"got {name!r}")
    return name


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """Return the device for ``name``; ``"auto"`` prefers cuda, then mps, then cpu.

    Raises ``ValueError`` when an explicitly requested accelerator is not available.
    """
    name = check_device_name(name)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} was requested but no CUDA GPU is available")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r} was requested but only "
                             f"{torch.cuda.device_count()} CUDA device(s) exist")
    if name == "mps" and not _mps_available():
        raise ValueError("device 'mps' was requested but Apple MPS is not available")
    return torch.device(name)


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


__all__ = ["DEVICE_CHOICES", "check_device_name", "resolve_device"]
