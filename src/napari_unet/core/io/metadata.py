"""What a TIFF says about itself besides its pixels: axes, pixel size, planes.

Metadata comes from anywhere (a microscope, a script, a hostile file) and is checked before
anything is sized from it. A pixel size that is not a positive finite number (an OME-TIFF's
``PhysicalSizeX="0"`` or ``"-1"``) is no pixel size. A z spacing outside
:data:`Z_SPACING_RANGE` times the pixel width (a 74 KB stack declaring a z spacing of 1e6 µm
would make the side views of a 3D prediction 2,000,000 planes tall) is taken as unknown, as if
the file did not give it; the user can still set one. Each dropped value comes back as a
one-line note for the user; the file itself is still read.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

import tifffile

SPATIAL = "ZYX"
IMAGEJ_ORDER = "TZCYX"
#: A z spacing from a file is used when it lies within these multiples of the pixel width.
Z_SPACING_RANGE = (1e-3, 1e3)

_UNIT_TO_UM = {
    "um": 1.0, "µm": 1.0, "\\u00B5m": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0,
    "micrometre": 1.0, "nm": 1e-3, "nanometer": 1e-3, "mm": 1e3, "millimeter": 1e3,
    "cm": 1e4, "m": 1e6, "pixel": None, "pixels": None, "": None,
}


def normalise_axes(axes: str) -> str:
    """tifffile's axis letters -> ours: samples are channels; unknown stacking axes (tifffile's
    I, Q, ...) become Z, or T then Z when there are two."""
    axes = axes.replace("S", "C") if "C" not in axes else axes
    unknown = [i for i, a in enumerate(axes) if a not in IMAGEJ_ORDER]
    free = [a for a in "TZ" if a not in axes]
    if len(unknown) > len(free):
        raise ValueError(f"cannot map TIFF axes {axes!r} onto {IMAGEJ_ORDER!r}")
    out = list(axes)
    for i, letter in zip(unknown, free[len(free) - len(unknown):], strict=True):
        out[i] = letter
    if len(set(out)) != len(out):
        raise ValueError(f"cannot map TIFF axes {axes!r} onto {IMAGEJ_ORDER!r}")
    return "".join(out)


def tiff_pixel_size(tif: tifffile.TiffFile, axes: str
                    ) -> tuple[tuple[float, ...] | None, tuple[str, ...]]:
    """Micrometres per pixel along the spatial ``axes`` (Z, Y, X order) or None, and the
    notes on values the file gives that were not used."""
    sizes: dict[str, float] = {}
    notes: list[str] = []
    if tif.is_ome and tif.ome_metadata:
        sizes = _ome_sizes(tif.ome_metadata, notes)
    elif tif.is_imagej and tif.imagej_metadata is not None:
        meta = tif.imagej_metadata
        factor = _UNIT_TO_UM.get(str(meta.get("unit", "")).strip().lower())
        if factor is not None:
            xy = _resolution_um(tif.pages.first, factor)
            if xy is not None:
                sizes["Y"], sizes["X"] = xy
            if "spacing" in meta:
                spacing = _number(meta["spacing"], "z spacing", notes)
                if spacing is not None:
                    sizes["Z"] = spacing * factor
    else:
        # Plain TIFF: only centimetre resolution means a physical pixel size; inch resolution
        # (72/300 dpi) is print metadata that most microscopy software leaves at a default.
        page = tif.pages.first
        if page.resolutionunit == tifffile.RESUNIT.CENTIMETER:
            xy = _resolution_um(page, 1e4)
            if xy is not None:
                sizes["Y"], sizes["X"] = xy
    sizes = _plausible(sizes, notes)
    if "X" not in sizes or "Y" not in sizes:
        return None, tuple(notes)
    # A Z spacing the file does not give is left at 1 (unknown), not guessed from XY.
    return tuple(float(sizes.get(a, 1.0)) for a in axes if a in SPATIAL), tuple(notes)


def _plausible(sizes: dict[str, float], notes: list[str]) -> dict[str, float]:
    """``sizes`` without the values that cannot be right (one note for the pixel size, one
    for the z spacing)."""
    bad = {a: v for a, v in sizes.items() if not (math.isfinite(v) and v > 0)}
    kept = {a: v for a, v in sizes.items() if a not in bad}
    lateral = {a: sizes[a] for a in "YX" if a in sizes}
    if lateral and (set(lateral) & set(bad) or len(lateral) == 1):
        said = ", ".join(f"{a} {v:g} µm" for a, v in lateral.items())
        notes.append(f"the file's pixel size ({said}) is not a size: no pixel size used")
        kept.pop("X", None)
        kept.pop("Y", None)
    if "Z" in bad:
        notes.append(f"the file's z spacing of {bad['Z']:g} µm is not a size: taken as unknown")
    if "Z" in kept and "X" in kept:
        ratio = kept["Z"] / kept["X"]
        low, high = Z_SPACING_RANGE
        if not low <= ratio <= high:
            notes.append(f"the file's z spacing of {kept['Z']:g} µm is {ratio:.3g} times its "
                         f"pixel width (outside {low:g} to {high:g}): taken as unknown")
            del kept["Z"]
    return kept


def _number(value: object, what: str, notes: list[str]) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        notes.append(f"the file gives a {what} of {str(value)[:40]!r}, which is not a number: "
                     "ignored")
        return None


def _resolution_um(page: tifffile.TiffPage, unit_um: float) -> tuple[float, float] | None:
    """(Y, X) micrometres per pixel from the resolution tags (pixels per unit)."""
    x_res, y_res = page.get_resolution()
    if not x_res or not y_res or x_res <= 0 or y_res <= 0:
        return None
    if x_res == 1 and y_res == 1 and unit_um == 1e4:
        return None  # the tag default: nothing was recorded
    return unit_um / float(y_res), unit_um / float(x_res)


def _ome_sizes(xml: str, notes: list[str]) -> dict[str, float]:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return {}
    pixels = next((el for el in root.iter() if el.tag.endswith("Pixels")), None)
    if pixels is None:
        return {}
    sizes: dict[str, float] = {}
    for a in SPATIAL:
        value = pixels.get(f"PhysicalSize{a}")
        if value is None:
            continue
        factor = _UNIT_TO_UM.get(pixels.get(f"PhysicalSize{a}Unit", "µm").strip().lower())
        number = _number(value, f"PhysicalSize{a}", notes)
        if factor is not None and number is not None:
            sizes[a] = number * factor
    return sizes


def plane_pixels(path: Path) -> int | None:
    """Pixels of a single-plane TIFF (no Z/T axis); None for stacks and other formats.

    Raises the reader's ``OSError``/``ValueError`` for an unreadable file (never a silent 0,
    which would switch the huge-plane path off unnoticed).
    """
    if not path.name.lower().endswith((".tif", ".tiff")):
        return None
    with tifffile.TiffFile(path) as tif:
        if not tif.series:
            raise ValueError(f"{path.name}: no image found in the TIFF file")
        series = tif.series[0]
        axes, shape = series.axes, series.shape
    if "Y" not in axes or any(a not in "YXCS" for a in axes if shape[axes.index(a)] > 1):
        return None
    return int(shape[axes.index("Y")] * shape[axes.index("X")])


__all__ = ["IMAGEJ_ORDER", "SPATIAL", "Z_SPACING_RANGE", "normalise_axes", "plane_pixels",
           "tiff_pixel_size"]
