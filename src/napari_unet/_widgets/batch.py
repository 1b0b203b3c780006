"""Batch dock: segment every image of a folder into label TIFFs, from the File menu.

A thin view over ``core.batch.batch_segment``: it checks the folders and the model choice in the
GUI thread (bad input starts nothing), runs the batch generator in a worker with a progress bar
and Stop, and ends with a notification of how many images were done, skipped and failed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from qtpy.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..core.events import Message, Progress
from ._jobs import JobRunner, notify_error, notify_info, notify_warning
from .model_choice import ModelChoice, ModelSpec


def check_folders(input_dir: str, output_dir: str) -> tuple[Path, Path]:
    """The two folders as paths; ``ValueError`` naming the problem (output may be created)."""
    if not input_dir.strip():
        raise ValueError("choose an input folder with images")
    if not output_dir.strip():
        raise ValueError("choose an output folder for the labels")
    src, dst = Path(input_dir.strip()).expanduser(), Path(output_dir.strip()).expanduser()
    if not src.is_dir():
        raise ValueError(f"input folder {str(src)!r} does not exist")
    if dst.exists() and not dst.is_dir():
        raise ValueError(f"output {str(dst)!r} is a file, not a folder")
    if not dst.parent.is_dir():
        raise ValueError(f"cannot create output folder {str(dst)!r}: "
                         f"{str(dst.parent)!r} does not exist")
    if dst.resolve() == src.resolve():
        raise ValueError("write the labels to another folder than the images")
    return src, dst


def summary_text(summary: Any) -> str:
    """One line for the final notification, e.g. ``"batch: 3 done, 1 skipped, 0 failed"``."""
    text = (f"batch: {len(summary.done)} done, {len(summary.skipped)} skipped, "
            f"{len(summary.failed)} failed")
    if summary.failed:
        first = summary.failed[0]
        text += f" (first failure: {_describe(first)})"
    return text


def _describe(item: Any) -> str:
    if isinstance(item, tuple) and len(item) == 2:
        return f"{Path(str(item[0])).name}: {item[1]}"
    return str(item)


def batch_job(spec: ModelSpec, input_dir: Path, output_dir: Path, tta: bool) -> Iterator[Any]:
    """The worker's generator: load the model, then yield the core batch engine's events."""
    from ..core.batch import batch_segment

    model, meta = spec.build(None, num_classes=None, device="cpu")
    yield Message(f"model: {spec.describe()}")
    yield from batch_segment(model, input_dir, output_dir, meta=meta, tta=tta)


class BatchWidget(QWidget):
    """Input folder, output folder, model, TTA -> one label TIFF per image."""

    def __init__(self, napari_viewer: Any = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.setObjectName("napari_unet_batch")
        self.input_edit = QLineEdit()
        self.input_edit.setPlaceholderText("folder with images (TIFF, PNG, ...)")
        self.output_edit = QLineEdit()
        self.output_edit.setPlaceholderText("folder for the label TIFFs")
        self.model_choice = ModelChoice(allow_new=False)
        self.tta_check = QCheckBox("test-time augmentation (8x slower, smoother)")
        self.run_button = QPushButton("Segment folder")
        self.stop_button = QPushButton("Stop")
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status = QLabel("")
        self.status.setWordWrap(True)

        layout = QVBoxLayout(self)
        form = QFormLayout()
        form.addRow("images", self._with_browse(self.input_edit))
        form.addRow("labels to", self._with_browse(self.output_edit))
        layout.addLayout(form)
        layout.addWidget(self.model_choice)
        layout.addWidget(self.tta_check)
        row = QHBoxLayout()
        row.addWidget(self.run_button)
        row.addWidget(self.stop_button)
        layout.addLayout(row)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addStretch(1)

        controls = [self.run_button, self.input_edit, self.output_edit, self.model_choice,
                    self.tta_check]
        self.runner = JobRunner(self._on_event, self._on_finished, controls, self.stop_button)
        self.runner.stop_on_destroy(self)
        self.summary: Any = None
        self.run_button.clicked.connect(self.run)
        self.stop_button.clicked.connect(self.stop)

    def _with_browse(self, edit: QLineEdit) -> QWidget:
        box = QWidget()
        row = QHBoxLayout(box)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(edit)
        button = QPushButton("Browse...")
        button.clicked.connect(lambda: self._browse(edit))
        row.addWidget(button)
        return box

    def _browse(self, edit: QLineEdit) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a folder", edit.text())
        if folder:
            edit.setText(folder)

    def run(self) -> Any:
        """Check the inputs and start the worker; returns it, or None (with a notification)."""
        if self.runner.running:
            notify_warning("a batch is already running")
            return None
        try:
            src, dst = check_folders(self.input_edit.text(), self.output_edit.text())
            spec = self.model_choice.spec()
            from ..core.batch import find_inputs

            n_files = len(find_inputs(src))
        except ValueError as err:
            notify_error(err)
            return None
        self.summary = None
        self.progress.setRange(0, 0)
        self.status.setText(f"segmenting {n_files} image(s) from {src} ...")
        tta = self.tta_check.isChecked()
        return self.runner.start(lambda: batch_job(spec, src, dst, tta))

    def stop(self) -> None:
        """Stop after the image being written (files already written stay)."""
        self.runner.stop()

    def _on_event(self, event: Any) -> None:
        from ..core.batch import BatchSummary, FileDone, SliceProgress

        if isinstance(event, Progress):  # files finished, of all files
            self.progress.setRange(0, max(1, event.total))
            self.progress.setValue(event.step)
        elif isinstance(event, SliceProgress):
            self.status.setText(f"{event.path.name}: slice {event.step}/{event.total}")
        elif isinstance(event, FileDone):
            self.status.setText(f"{event.path.name}: {event.status}"
                                + (f" ({event.message})" if event.message else ""))
        elif isinstance(event, Message):
            self.status.setText(event.text)
        elif isinstance(event, BatchSummary):
            self.summary = event

    def _on_finished(self, status: str) -> None:
        self.progress.setRange(0, 1)
        self.progress.setValue(1 if status == "done" else 0)
        if self.summary is not None:
            text = summary_text(self.summary)
            if status == "stopped":
                text = "stopped; " + text
            self.status.setText(text)
            (notify_warning if self.summary.failed else notify_info)(text)
        elif status == "stopped":
            self.status.setText("stopped; labels written so far are kept")
            notify_info("batch stopped; labels written so far are kept")
        else:
            self.status.setText("failed (see the notification)")
