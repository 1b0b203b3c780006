"""Reading images and writing label images, with their axes and pixel size.

``read_image`` opens TIFF (ImageJ hyperstacks, OME-TIFF, plain multi-page) and the common 2D
formats (PNG, JPEG, BMP via imageio) and reports what the file says about its axes and pixel
size. ``write_labels`` writes instance/label images as ImageJ-compatible TIFF (uint16), or as
OME-TIFF (uint32) when there are more than 65,535 labels, because ImageJ TIFF cannot hold 32-bit
integers. Writes follow the output policy of :mod:`~napari_unet.core.io.outputs`: a temporary file
in the target folder is renamed into place, so a crash or a bad input never leaves a
half-written file. Reads check the size a file declares against the memory available before
allocating (:mod:`~napari_unet.core.io.resources`).

Pixel sizes are in micrometres, one value per spatial axis ("Z", "Y", "X") present in ``axes``,
in that order: ``(0.29, 0.26, 0.26)`` for a ``"ZCYX"`` stack, ``(0.26, 0.26)`` for ``"YX"``.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from .inputs import check_input_file
from .metadata import IMAGEJ_ORDER, SPATIAL, normalise_axes, plane_pixels, tiff_pixel_size
from .outputs import OutputExists, atomic_write, format_bytes
from .resources import check_memory

TIFF_SUFFIXES = (".tif", ".tiff", ".ome.tif", ".ome.tiff")
OTHER_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
# Files bigger than this are opened lazily (memory map or dask over tifffile's zarr store).
LAZY_BYTES = 512 * 2**20

@dataclass(frozen=True)
class ImageData:
    """An image as read from a file.

    Attributes
    ----------
    array : numpy.ndarray or dask.array.Array
        The pixels in the file's axis order; a memory map or dask array for big files.
    axes : str
        One letter per array axis from "TZCYX" (e.g. ``"ZCYX"``); RGB samples are ``"C"``.
    pixel_size : tuple of float or None
        Micrometres per pixel along each of "Z", "Y", "X" present in ``axes`` (in that order),
        or None when the file does not say.
    channel_axis : int or None
        Index of the ``"C"`` axis in ``array``, None for single-channel images.
    notes : tuple of str
        One line per value of the file's metadata that was not used (a pixel size of 0, an
        absurd z spacing: :mod:`.metadata`), each starting with the file's name.
    """

    array: Any
    axes: str
    pixel_size: tuple[float, ...] | None = None
    channel_axis: int | None = None
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.axes) != self.array.ndim:
            raise ValueError(f"axes {self.axes!r} do not match an array of {self.array.ndim} dims")
        if len(set(self.axes)) != len(self.axes) or set(self.axes) - set(IMAGEJ_ORDER):
            raise ValueError(f"axes must be distinct letters from {IMAGEJ_ORDER!r}, "
                             f"got {self.axes!r}")
        if self.pixel_size is not None:
            n = sum(a in SPATIAL for a in self.axes)
            if len(self.pixel_size) != n:
                raise ValueError(f"pixel_size {self.pixel_size} needs {n} values for axes "
                                 f"{self.axes!r}")

    @property
    def scale(self) -> tuple[float, ...]:
        """Per-axis scale of the array without its channel axis (what napari layers take):
        the pixel size on spatial axes, 1 on the others (and everywhere if unknown)."""
        letters = [a for a in self.axes if a in SPATIAL]
        sizes = dict(zip(letters, self.pixel_size or (), strict=False))
        return tuple(float(sizes.get(a, 1.0)) for a in self.axes if a != "C")


@dataclass(frozen=True)
class LabelsWritten:
    """What :func:`write_labels` wrote: the file, its format ("imagej"/"ome"), and a note for
    the user when something was changed to fit the format (None otherwise)."""

    path: Path
    format: str
    note: str | None = None


# -- reading ---------------------------------------------------------------------------------
def read_image(path: str | os.PathLike, lazy_bytes: int = LAZY_BYTES) -> ImageData:
    """Read an image file with its axes, pixel size and channel axis.

    Parameters
    ----------
    path : path-like
        A TIFF (ImageJ, OME or plain; multi-page stacks) or a PNG/JPEG/BMP/GIF file.
    lazy_bytes : int
        TIFFs whose pixels take more than this many bytes are opened lazily: a read-only
        memory map when the pixels are stored contiguously, otherwise a dask array over
        tifffile's zarr store (one chunk per page).

    Returns
    -------
    ImageData
        ``array`` in the file's axis order, e.g. ``(Z, C, Y, X)`` with ``axes="ZCYX"``.

    Raises
    ------
    ValueError
        The file does not exist, is not a regular file (a folder, a pipe, a device), cannot be
        opened, has an unsupported suffix, or is not a readable image (truncated or corrupt);
        the message names the file.
    """
    path = check_input_file(path, "image file")
    name = path.name.lower()
    if name.endswith(TIFF_SUFFIXES):
        return _read_tiff(path, lazy_bytes)
    if name.endswith(OTHER_SUFFIXES):
        return _read_other(path)
    raise ValueError(f"cannot read {str(path)!r}: supported suffixes are "
                     f"{', '.join(TIFF_SUFFIXES + OTHER_SUFFIXES)}")


class _LoggedErrors(logging.Handler):
    """Collects tifffile's logged errors: on a broken IFD chain it logs and carries on with
    fewer pages instead of raising, which would silently hand back part of a stack."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _read_tiff(path: Path, lazy_bytes: int) -> ImageData:
    errors = _LoggedErrors()
    logger = logging.getLogger("tifffile")
    logger.addHandler(errors)
    try:
        with tifffile.TiffFile(path) as tif:
            # Walk the page chain first: tifffile logs a circular IFD chain here, but building
            # the series from such a chain can loop forever (found by fuzzing).
            len(tif.pages)
            if errors.messages:
                raise RuntimeError(errors.messages[0].replace(repr(tif), "").strip())
            if not tif.series:  # e.g. a bare 8-byte header
                raise ValueError(f"cannot read {str(path)!r}: not a readable TIFF (no image in "
                                 f"its {format_bytes(path.stat().st_size)})")
            series = tif.series[0]
            if errors.messages:
                raise RuntimeError(errors.messages[0].replace(repr(tif), "").strip())
            axes = normalise_axes(series.axes)
            pixel_size, notes = tiff_pixel_size(tif, axes)
            nbytes = int(np.prod(series.shape, dtype=object)) * series.dtype.itemsize
            contiguous = series.dataoffset is not None
            _check_declared_size(path, series, nbytes, lazy_bytes, contiguous)
            if nbytes <= lazy_bytes:
                with warnings.catch_warnings():
                    # tifffile warns (and fills zeros) on truncated strips; that must fail.
                    warnings.simplefilter("error")
                    array = series.asarray()
            else:
                array = None
                _check_complete(path, series, nbytes)
        if array is None:
            array = _lazy_tiff(path, contiguous)
    except ValueError as err:
        if str(path) in str(err):
            raise
        raise ValueError(f"cannot read {str(path)!r}: not a readable TIFF ({err})") from err
    except PermissionError as err:
        raise ValueError(f"cannot read {str(path)!r} (permission denied)") from err
    except Exception as err:  # tifffile raises many kinds on corrupt/truncated files
        raise ValueError(
            f"cannot read {str(path)!r}: the TIFF is truncated or corrupt ({_first_line(err)})"
        ) from err
    finally:
        logger.removeHandler(errors)
    if array.ndim != len(axes):  # squeezed singleton axes
        array = array.reshape(series.shape)
    channel_axis = axes.index("C") if "C" in axes else None
    return ImageData(array, axes, pixel_size, channel_axis,
                     tuple(f"{path.name}: {note}" for note in notes))


def _check_declared_size(path: Path, series: Any, nbytes: int, lazy_bytes: int,
                         contiguous: bool) -> None:
    """Refuse, before anything is allocated, what the file declares but memory cannot hold.

    An eager read allocates the whole image; a lazy read of a compressed file decompresses one
    chunk (tile or strip) at a time, so that chunk must fit; a memory map allocates nothing.
    A compressed file of a few KB can declare gigabytes: the message names both sizes.
    """
    shape = " x ".join(str(s) for s in series.shape)
    if nbytes <= lazy_bytes:
        check_memory(nbytes, f"{str(path)!r} declares a {shape} {series.dtype} image "
                             f"({format_bytes(path.stat().st_size)} on disk) that")
        return
    if contiguous:
        return
    page = series.keyframe
    chunk = tuple(getattr(page, "chunks", ()) or page.shape)
    chunk_bytes = int(np.prod(chunk, dtype=object)) * series.dtype.itemsize
    check_memory(chunk_bytes, f"{str(path)!r} declares a {shape} {series.dtype} image "
                              f"({format_bytes(path.stat().st_size)} on disk) stored in "
                              f"compressed blocks of {' x '.join(map(str, chunk))}; one block")


def _check_complete(path: Path, series: Any, nbytes: int) -> None:
    """Lazy reads fail late; catch a truncated file now from where its pixel data ends."""
    size = path.stat().st_size
    if series.dataoffset is not None:
        end = series.dataoffset + nbytes
    else:
        last = series.pages[-1] if len(series.pages) else None
        offsets = getattr(last, "dataoffsets", ()) or ()
        counts = getattr(last, "databytecounts", ()) or ()
        end = max((o + c for o, c in zip(offsets, counts, strict=False)), default=0)
    if end > size:
        raise ValueError(f"cannot read {str(path)!r}: the TIFF is truncated "
                         f"(pixel data ends at byte {end}, file has {size})")


def _lazy_tiff(path: Path, contiguous: bool) -> Any:
    if contiguous:
        try:
            return tifffile.memmap(path, mode="r")
        except ValueError:
            pass  # not memory-mappable after all (e.g. byte order, tiles)
    import dask.array as da

    store = tifffile.imread(path, aszarr=True)
    return da.from_zarr(store)


def _read_other(path: Path) -> ImageData:
    import imageio.v3 as iio

    try:
        array = np.asarray(iio.imread(path))
    except Exception as err:
        raise ValueError(
            f"cannot read {str(path)!r}: not a readable image ({_first_line(err)})"
        ) from err
    if array.ndim == 2:
        return ImageData(array, "YX")
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        if array.shape[-1] == 4 and np.all(array[..., 3] == array[..., 3].flat[0]):
            array = array[..., :3]  # a constant alpha channel carries no information
        return ImageData(array, "YXC", None, 2)
    raise ValueError(f"cannot read {str(path)!r}: unexpected image shape {array.shape}")


# -- writing ---------------------------------------------------------------------------------
def write_labels(
    path: str | os.PathLike,
    labels: np.ndarray,
    axes: str = "YX",
    pixel_size: tuple[float, ...] | None = None,
    overwrite: bool = False,
) -> LabelsWritten:
    """Write a label image as ImageJ-compatible TIFF (uint16) or OME-TIFF (uint32), atomically.

    Parameters
    ----------
    path : path-like
        Output ``.tif``/``.tiff`` file; its folder must exist.
    labels : array of non-negative integers (or bool), shape matching ``axes``
        E.g. ``(Y, X)`` or ``(Z, Y, X)`` instance labels.
    axes : str
        One letter per axis from "TZCYX". Axes are reordered to ImageJ's "TZCYX" order if needed.
    pixel_size : tuple of float, optional
        Micrometres per pixel along each of "Z", "Y", "X" present in ``axes``.
    overwrite : bool
        Replace an existing file (atomically); otherwise an existing file is an error.

    Returns
    -------
    LabelsWritten
        The path, ``"imagej"`` (uint16) or ``"ome"`` (uint32, labels above 65,535), and a note
        when the format or axis order differs from what was asked for.

    Raises
    ------
    ValueError
        Missing folder, existing file without ``overwrite``, wrong suffix, axes that do not fit
        the array, negative or non-integer labels, labels above 2**32 - 1. Nothing is written.
    """
    path = Path(path)
    labels = np.asarray(labels)
    if not path.name.lower().endswith((".tif", ".tiff")):
        raise ValueError(f"labels are written as TIFF; {str(path)!r} needs a .tif suffix")
    if not path.parent.is_dir():
        raise ValueError(f"cannot write {str(path)!r}: folder {str(path.parent)!r} "
                         "does not exist")
    if path.is_dir():
        raise ValueError(f"cannot write labels: {str(path)!r} is a folder")
    if not isinstance(overwrite, bool):
        raise TypeError(f"overwrite must be True or False, got {overwrite!r}")
    if os.path.lexists(path) and not overwrite:
        raise OutputExists(path)
    axes = axes.upper()
    ImageData(labels, axes, pixel_size)  # same axis/pixel-size checks as for reading
    if labels.dtype == bool:
        labels = labels.astype(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            raise ValueError(f"labels must be integers, got {labels.dtype} with fractions")
    lo = labels.min() if labels.size else 0
    hi = int(labels.max()) if labels.size else 0
    if lo < 0:
        raise ValueError(f"labels must be >= 0, found {lo}")
    if hi > np.iinfo(np.uint32).max:
        raise ValueError(f"labels up to {hi} do not fit in 32 bits")

    # pixel_size follows the caller's axis order; keyed by letter it survives the transpose
    sizes = dict(zip([a for a in axes if a in SPATIAL], pixel_size or (), strict=False))
    notes: list[str] = []
    order = sorted(range(len(axes)), key=lambda i: IMAGEJ_ORDER.index(axes[i]))
    if order != list(range(len(axes))):
        new_axes = "".join(axes[i] for i in order)
        notes.append(f"axes reordered from {axes} to {new_axes}")
        labels = np.transpose(labels, order)
        axes = new_axes

    if hi > np.iinfo(np.uint16).max:
        fmt = "ome"
        notes.append(f"label ids up to {hi} exceed ImageJ's 16-bit limit; wrote uint32 OME-TIFF "
                     "(ImageJ TIFF cannot hold 32-bit integers)")
        writer = _ome_writer(labels.astype(np.uint32), axes, sizes)
    else:
        fmt = "imagej"
        writer = imagej_writer(labels.astype(np.uint16), axes, sizes)

    with atomic_write(path, overwrite=overwrite) as tmp:
        writer(tmp)
    return LabelsWritten(path, fmt, "; ".join(notes) or None)


def imagej_writer(data: np.ndarray, axes: str, sizes: dict[str, float]):
    """A function writing ``data`` (axes in ImageJ's TZCYX order) as an ImageJ hyperstack with
    the pixel sizes in ``sizes`` (µm, keyed by axis letter) to the path it is given."""
    metadata: dict[str, Any] = {"axes": axes}
    kwargs: dict[str, Any] = {}
    if "X" in sizes and "Y" in sizes:
        metadata["unit"] = "um"
        kwargs["resolution"] = (1.0 / sizes["X"], 1.0 / sizes["Y"])
    if "Z" in sizes:
        metadata["spacing"] = sizes["Z"]

    def write(target: str) -> None:
        tifffile.imwrite(target, data, imagej=True, metadata=metadata,
                         photometric="minisblack", compression="zlib", **kwargs)

    return write


def _ome_writer(data: np.ndarray, axes: str, sizes: dict[str, float]):
    metadata: dict[str, Any] = {"axes": axes}
    for a, value in sizes.items():
        metadata[f"PhysicalSize{a}"] = value
        metadata[f"PhysicalSize{a}Unit"] = "µm"

    def write(target: str) -> None:
        tifffile.imwrite(target, data, ome=True, metadata=metadata,
                         photometric="minisblack", compression="zlib")

    return write


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


__all__ = ["IMAGEJ_ORDER", "SPATIAL", "ImageData", "LabelsWritten", "plane_pixels", "read_image",
           "write_labels"]
