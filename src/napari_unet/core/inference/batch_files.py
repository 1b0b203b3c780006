"""The files of a batch: which inputs a folder, a glob pattern or a list names, the output
each one gets (named like its input, never replacing an input or another output), the output
folder, and the probabilities file written beside the labels."""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..io.outputs import OutputExists, PathLike, atomic_write, check_not_an_input

IMAGE_SUFFIXES = (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".png", ".jpg", ".jpeg", ".bmp")


def find_inputs(inputs: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """Files from a folder (its images, sorted), a glob pattern, one file, or a list of paths;
    ``TypeError`` naming ``inputs`` for anything else."""
    if isinstance(inputs, (str, os.PathLike)):
        text = str(inputs)
        path = Path(text)
        if path.is_dir():
            found = sorted(p for p in path.iterdir()
                           if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES)
                           and not p.name.startswith("."))
        elif any(ch in text for ch in "*?["):
            found = sorted(Path(p) for p in glob.glob(text) if Path(p).is_file())
        elif path.is_file():
            found = [path]
        else:
            raise ValueError(f"input {text!r} is not a file, a folder or a glob pattern that "
                             "matches files")
    elif isinstance(inputs, Sequence) and all(isinstance(p, (str, os.PathLike)) for p in inputs):
        found = [Path(p) for p in inputs]
    else:
        raise TypeError(f"inputs must be a folder, a glob pattern, a file or a list of files, "
                        f"got {inputs!r}"[:200])
    if not found:
        raise ValueError(f"no images found in {str(inputs)!r}")
    return found


def output_name(path: Path, suffix: str = "") -> str:
    """``cells.ome.tif`` -> ``cells<suffix>.tif``."""
    name = path.name
    lower = name.lower()
    for ext in IMAGE_SUFFIXES:
        if lower.endswith(ext):
            name = name[: -len(ext)]
            break
    else:
        name = path.stem
    return f"{name}{suffix}.tif"


def probabilities_path(output: Path) -> Path:
    """Where a labels file's probabilities go: ``<name>_probabilities.tif`` beside it."""
    return output.with_name(output.stem + "_probabilities.tif")


def output_paths(files: Sequence[Path], output_dir: Path, suffix: str,
                 probabilities: bool = False, protected: Sequence[PathLike] = ()) -> list[Path]:
    """Labels path per input; ``ValueError`` if an output (or, with ``probabilities``, its
    probabilities file) would replace an input (hard links count) or another output, is a
    folder, or would replace one of ``protected`` (the model's file or package folder) or
    anything in the installed package."""
    outputs = [output_dir / output_name(p, suffix) for p in files]
    by_path = {p.resolve(): p for p in files}
    by_inode = {key: p for p in files if (key := _inode(p)) is not None}
    written = list(zip(files, outputs, strict=True))
    if probabilities:
        written += [(src, probabilities_path(dst)) for src, dst in zip(files, outputs,
                                                                       strict=True)]
    for src, dst in written:
        replaced = by_path.get(dst.resolve()) or by_inode.get(_inode(dst))
        if replaced is not None and replaced.resolve() != src.resolve():
            raise ValueError(
                f"the output {str(dst)!r} of {str(src)!r} would replace {str(replaced)!r}, "
                "which is an input too (an earlier run's output in the input folder, or an "
                "image of that name): inputs are never replaced; move the earlier outputs away "
                "or write to another folder")
        if replaced is not None:
            raise ValueError(
                f"the output {str(dst)!r} would replace the input {str(replaced)!r}: the "
                "output folder holds the inputs (or links to them) under the same names; "
                "choose another output folder or a suffix")
        if dst.is_dir():
            raise ValueError(f"the output {str(dst)!r} is a folder; remove it or choose "
                             "another output folder")
        check_not_an_input(dst, protected)
    seen: dict[Path, Path] = {}
    for src, dst in written:
        if dst in seen:
            raise ValueError(f"{str(seen[dst])!r} and {str(src)!r} would both be written to "
                             f"{str(dst)!r}")
        seen[dst] = src
    return outputs


def leave_out_own_outputs(files: Sequence[Path], output_dir: Path, suffix: str,
                          overwrite: bool, probabilities: bool) -> tuple[list[Path], list[Path]]:
    """The inputs to segment, and those left out: files that are another input's output in
    this batch (its labels, or a probabilities file), left by an earlier run into the folder
    the inputs come from, which this run does not write (so a second run with ``suffix`` into
    the input folder resumes instead of refusing). A file this run would replace stays an
    input, and :func:`output_paths` refuses it: ``overwrite`` never reaches an input."""
    made: dict[Path, tuple[Path, bool]] = {}  # output -> (its input, written by this run)
    for src in files:
        labels = output_dir / output_name(src, suffix)
        made[labels.resolve()] = (src.resolve(), overwrite)
        made[probabilities_path(labels).resolve()] = (src.resolve(), overwrite and probabilities)
    keep, left_out = [], []
    for path in files:
        origin = made.get(path.resolve())
        if origin is not None and origin[0] != path.resolve() and not origin[1]:
            left_out.append(path)
        else:
            keep.append(path)
    return keep, left_out


def left_out_note(left_out: Sequence[Path]) -> str:
    """What :func:`leave_out_own_outputs` left out, in words."""
    names = ", ".join(p.name for p in left_out[:5])
    more = f" and {len(left_out) - 5} more" if len(left_out) > 5 else ""
    return (f"left out {len(left_out)} file(s) that are this batch's own outputs from an "
            f"earlier run: {names}{more}")


def _inode(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_dev, info.st_ino


def prepare_output_dir(output_dir: str | os.PathLike) -> Path:
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output {str(out)!r} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"cannot create the output folder {str(out)!r}: {err.strerror}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ValueError(f"no permission to write to the output folder {str(out)!r}")
    return out


def write_probabilities(path: Path, probs: Any, label_axes: str,
                        pixel_size: tuple[float, ...] | None, overwrite: bool) -> None:
    """Float32 ImageJ hyperstack with the classes as channels, written atomically."""
    from ..io.images import imagej_writer

    if not path.name.lower().endswith((".tif", ".tiff")):
        raise ValueError(f"probabilities are written as TIFF; {str(path)!r} needs a .tif suffix")
    if path.exists() and not overwrite:
        raise OutputExists(path)
    # (K, [lead...,] Y, X) -> ImageJ's T Z C Y X order: classes go just before Y, X
    data = np.moveaxis(np.asarray(probs, dtype=np.float32), 0, -3)
    axes = label_axes[:-2] + "CYX"
    order = sorted(range(len(axes)), key=lambda i: "TZCYX".index(axes[i]))
    data = np.transpose(data, order)
    axes = "".join(axes[i] for i in order)
    sizes = dict(zip([a for a in label_axes if a in "ZYX"], pixel_size or (), strict=False))
    with atomic_write(path, overwrite=overwrite) as tmp:
        imagej_writer(data, axes, sizes)(tmp)


__all__ = ["IMAGE_SUFFIXES", "find_inputs", "leave_out_own_outputs", "left_out_note",
           "output_name", "output_paths", "prepare_output_dir", "probabilities_path",
           "write_probabilities"]
