"""Autosave and restore of a training session: the training labels and the model.

A session lives in a folder next to the image (``<image file name>.napari-unet/``, the full name:
``cell.1.tif`` and ``cell.2.tif`` get two sessions) when the image came from a file in a
writable folder, otherwise in a per-user folder (``$NAPARI_UNET_SESSION_DIR`` or
``~/.napari-unet/sessions``) under the layer's name plus a short hash of the resolved source
path, so same-named layers from different files do not share one. It holds

- ``training_labels.tif``: the labels, ImageJ-readable, with the label convention stored in the
  TIFF metadata so that the labels come back with their meaning;
- ``model.pt``: the model file written by ``core.model.checkpoint`` (atomic).

Every write goes through the output policy (:mod:`napari_unet.core.io.outputs`): a temporary file
in the same folder is renamed into place, so a crash while saving never destroys the previous
autosave, and temporary files left by a killed session are cleaned when the folder is next
used. This module has no Qt or napari code so that it can be tested and reused on its own.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from ..core.io.outputs import atomic_write, clean_stale_temps

SESSION_DIR_ENV = "NAPARI_UNET_SESSION_DIR"
LABELS_FILE = "training_labels.tif"
MODEL_FILE = "model.pt"
SUFFIX = ".napari-unet"
CONVENTIONS = ("sparse", "dense", "binary", "semantic", "semantic-sparse")


def user_session_root() -> Path:
    """The per-user folder holding sessions of images that have no writable file folder."""
    env = os.environ.get(SESSION_DIR_ENV)
    return Path(env) if env else Path.home() / ".napari-unet" / "sessions"


def _safe_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return cleaned or "unnamed"


@dataclass(frozen=True)
class Session:
    """The autosave folder of one image (it need not exist yet).

    Parameters
    ----------
    folder : Path
        Where the session's files go.
    """

    folder: Path

    @classmethod
    def for_image(cls, name: str, source_path: str | os.PathLike | None = None) -> Session:
        """Session of the image layer called ``name``, opened from ``source_path`` if any.

        Next to the image when its folder is writable (keyed by the file's full name), else in
        :func:`user_session_root` (keyed by the layer name and a hash of the resolved source).
        """
        if not isinstance(name, str):
            raise TypeError(f"layer name must be a string, got {type(name).__name__}")
        if source_path:
            src = Path(source_path)
            if src.parent.is_dir() and os.access(src.parent, os.W_OK):
                return cls(src.parent / f"{src.name}{SUFFIX}")
            digest = hashlib.sha1(str(src.resolve()).encode("utf-8", "surrogatepass"))
            return cls(user_session_root() / f"{_safe_name(name)}-{digest.hexdigest()[:10]}")
        return cls(user_session_root() / _safe_name(name))

    @property
    def labels_path(self) -> Path:
        return self.folder / LABELS_FILE

    @property
    def model_path(self) -> Path:
        return self.folder / MODEL_FILE

    def has_labels(self) -> bool:
        return self.labels_path.is_file()

    def has_model(self) -> bool:
        return self.model_path.is_file()

    def ensure_folder(self) -> Path:
        """Create the session folder (and parents) if needed, clear temporary files a killed
        session left in it; return it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        clean_stale_temps(self.folder)
        return self.folder

    def save_labels(self, labels: np.ndarray, convention: str) -> Path:
        """Atomically write the training ``labels`` (any shape, integer) and their convention.

        Parameters
        ----------
        labels : ndarray, integer
            The training labels layer's data, e.g. ``(H, W)`` or ``(Z, H, W)``.
        convention : str
            One of :data:`CONVENTIONS`.

        Returns
        -------
        Path
            The written file.
        """
        if convention not in CONVENTIONS:
            raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
        labels = np.asarray(labels)
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"training labels must be integers, got dtype {labels.dtype}")
        if labels.size and (labels.min() < 0 or labels.max() > np.iinfo(np.uint32).max):
            raise ValueError("training labels must be in 0..2**32-1 to be saved")
        dtype = np.uint16 if labels.size == 0 or labels.max() <= 65535 else np.uint32
        self.ensure_folder()
        # The autosave replaces its own previous file: overwrite is the point here.
        with atomic_write(self.labels_path, overwrite=True) as tmp:
            tifffile.imwrite(tmp, labels.astype(dtype, copy=False), compression="zlib",
                             metadata={"napari_unet_convention": convention})
        return self.labels_path

    def load_labels(self) -> tuple[np.ndarray, str] | None:
        """``(labels int32, convention)`` from the autosave, or None when there is none.

        Raises ``ValueError`` for a file that is not a readable labels TIFF.
        """
        if not self.has_labels():
            return None
        try:
            with tifffile.TiffFile(self.labels_path) as tif:
                data = tif.asarray()
                meta = tif.shaped_metadata[0] if tif.shaped_metadata else {}
        except Exception as err:  # truncated or foreign files
            raise ValueError(
                f"cannot read autosaved labels {str(self.labels_path)!r}: {err}") from err
        convention = meta.get("napari_unet_convention", "dense")
        if convention not in CONVENTIONS:
            convention = "dense"
        return data.astype(np.int32, copy=False), convention
