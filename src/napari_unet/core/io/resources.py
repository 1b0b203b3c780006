"""How much memory a job may still allocate, and a check that names the sizes when it cannot.

A file can declare any size: a 35 KB compressed TIFF may claim a 65536 x 65536 plane. Reading
or allocating that must fail with a message saying so, before numpy asks for 16 GiB and the
process dies (or a huge temp file appears). "Available" is the smallest of what the system
has free (``MemAvailable``), what the process's address-space limit (``ulimit -v``) leaves,
and what its cgroup (container, cluster job) leaves.
"""

from __future__ import annotations

from pathlib import Path

from .outputs import format_bytes

_UNLIMITED = 1 << 62


def _meminfo_available() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil  # a dependency of distributed; macOS/Windows path

        return int(psutil.virtual_memory().available)
    except (ImportError, OSError):
        return _UNLIMITED


def _address_space_left() -> int:
    try:
        import resource
    except ImportError:  # Windows
        return _UNLIMITED
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft in (resource.RLIM_INFINITY, -1) or soft <= 0:
        return _UNLIMITED
    used = 0
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                used = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        pass
    return max(soft - used, 0)


def _cgroup_left() -> int:
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit == "max":
            return _UNLIMITED
        used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
        return max(int(limit) - used, 0)
    except (OSError, ValueError):
        return _UNLIMITED


def available_memory() -> int:
    """Bytes this process can still allocate, as far as the system tells (see module doc)."""
    return min(_meminfo_available(), _address_space_left(), _cgroup_left())


def check_memory(need_bytes: int, what: str) -> None:
    """Raise ``ValueError`` naming both sizes when ``need_bytes`` exceeds :func:`available_memory`.

    ``what`` completes "... needs N": e.g. ``"'big.tif' declares a 65536 x 65536 uint8 plane
    that"``.
    """
    have = available_memory()
    if need_bytes > have:
        raise ValueError(f"{what} needs {format_bytes(need_bytes)} of memory, but only "
                         f"{format_bytes(have)} is available")


def prediction_bytes(shape: tuple[int, ...], channel_axis: int | None, num_classes: int,
                     probabilities: bool, uncertainty: bool) -> int:
    """Memory the outputs of predicting one image take, all held until written: labels
    (int32), the foreground/class probabilities (twice when they are kept for a file) and the
    optional uncertainty map (float32)."""
    pixels = 1
    for i, n in enumerate(shape):
        if channel_axis is None or i != channel_axis % len(shape):
            pixels *= int(n)
    per_pixel = 4 + 4 * num_classes * (2 if probabilities else 1) + (4 if uncertainty else 0)
    return pixels * per_pixel


def check_prediction_memory(name: str, shape: tuple[int, ...], channel_axis: int | None,
                            num_classes: int, probabilities: bool, uncertainty: bool) -> None:
    """:func:`check_memory` for the outputs of predicting the image ``name`` (one message for
    ``predict`` and ``batch``)."""
    check_memory(prediction_bytes(shape, channel_axis, num_classes, probabilities, uncertainty),
                 f"predicting {name} ({' x '.join(map(str, shape))}) with its outputs")


__all__ = ["available_memory", "check_memory", "check_prediction_memory", "prediction_bytes"]
