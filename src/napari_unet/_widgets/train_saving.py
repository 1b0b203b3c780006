"""Saving and exporting the Train dock's model: the file dialogs, which step a saved model holds,
and the export work that runs on the dock's background thread (``train_io.BackgroundIO``)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from qtpy.QtWidgets import QFileDialog, QWidget


def saved_step(trainer: Any) -> tuple[int, bool]:
    """``(step, is_best)``: which step the saved model holds (best validation step if the
    trainer keeps one, else the last step)."""
    best = getattr(trainer, "best_step", None)
    if best is not None:
        return int(best), True
    return int(trainer.step), False


def export_package(trainer: Any, path: Path) -> Path:
    """Write the trainer's model as a BioImage Model Zoo package ``path`` (.zip), replacing
    it: what "Save model" would write (the best weights if kept). Slow: not the GUI thread."""
    from ..core.io.export.bioimageio import ExportConfig, export_bioimageio
    from ..core.model.checkpoint import load_model

    with tempfile.TemporaryDirectory() as tmp:
        model, meta = load_model(trainer.save(Path(tmp) / "model.pt"))
    return export_bioimageio(model, meta, path, ExportConfig(overwrite=True))


def ask_model_path(parent: QWidget, folder: Path | None) -> str | None:
    """Ask where to save the model (starting in ``folder``); None when cancelled."""
    start = str(folder / "model.pt") if folder is not None else "model.pt"
    path, _ = QFileDialog.getSaveFileName(parent, "Save U-Net model", start, "Models (*.pt)")
    return path or None


def ask_package_path(parent: QWidget, folder: Path | None) -> str | None:
    """Ask where to export the model package (a .zip; the dialog asks before replacing a
    file); None when cancelled."""
    start = str(folder / "model.zip") if folder is not None else "model.zip"
    path, _ = QFileDialog.getSaveFileName(parent, "Export U-Net to the BioImage Model Zoo",
                                          start, "bioimage.io packages (*.zip)")
    if not path:
        return None
    return path if path.endswith(".zip") else path + ".zip"


__all__ = ["ask_model_path", "ask_package_path", "export_package", "saved_step"]
