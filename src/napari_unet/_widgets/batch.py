"""Batch dock: segment every image of a folder into label TIFFs, from the File menu.

A thin view over ``core.inference.batch.batch_segment`` with the CLI's options (threshold, minimum
size,
object diameter, tiling, TTA, probabilities, suffix, overwrite): it checks the folders and the
model choice in the GUI thread (bad input starts nothing; replacing existing labels is confirmed
first), runs the batch generator in the docks' job process (or a worker thread while that
starts) with a progress bar, Stop and an entry in napari's activity panel, and ends with one
notification of how many images were done, skipped and failed. Settings (but never
"overwrite") are remembered between sessions.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from qtpy.QtWidgets import QFileDialog, QFormLayout, QLineEdit, QVBoxLayout, QWidget

from ..core.events import Message
from ._form import Field, Form, RunBlock, ask_yes_no, with_browse
from ._jobs import dock_process, notify_error, notify_info, notify_warning
from ._scroll import scroll_all_but
from .dock_jobs import batch_job
from .model_choice import ModelChoice, remember_file
from .predict import config_values, prediction_settings
from .settings import Binding, DockSettings
from .tooltips import tooltip

DOCK = "batch"


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


def batch_fields() -> tuple[Field, ...]:
    """The Batch dock's rows: the declared prediction settings, then what only this dock has
    (names are tooltip and settings keys)."""
    return (
        *prediction_settings(),
        Field("probabilities", "", "bool", False, text="also write probability TIFFs"),
        Field("suffix", "name suffix", "text", ""),
        Field("overwrite", "", "bool", False, text="replace existing labels files"),
    )


class BatchWidget(QWidget):
    """Input folder, output folder, model and options -> one label TIFF per image.

    ``confirm(text) -> bool`` asks before existing labels files are replaced (tests replace it).
    """

    def __init__(self, napari_viewer: Any = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.setObjectName("napari_unet_batch")
        self.confirm: Callable[[str], bool] = lambda text: ask_yes_no(self, text)
        self.input_edit = QLineEdit()
        self.input_edit.setObjectName("input_dir")
        self.input_edit.setPlaceholderText("folder with images (TIFF, PNG, ...)")
        self.output_edit = QLineEdit()
        self.output_edit.setObjectName("output_dir")
        self.output_edit.setPlaceholderText("folder for the label TIFFs")
        for edit in (self.input_edit, self.output_edit):
            edit.setToolTip(tooltip(DOCK, edit.objectName()))
        self.model_choice = ModelChoice(allow_new=False)
        self.form = Form(batch_fields(), DOCK)
        self.block = RunBlock("Segment folder", DOCK)
        self.run_button, self.stop_button = self.block.run_button, self.block.stop_button
        self.progress, self.status = self.block.progress, self.block.status

        layout = QVBoxLayout(self)
        folders = QFormLayout()
        folders.addRow("images", with_browse(self.input_edit,
                                             lambda: self._browse(self.input_edit),
                                             "input_browse", tooltip(DOCK, "input_browse")))
        folders.addRow("labels to", with_browse(self.output_edit,
                                                lambda: self._browse(self.output_edit),
                                                "output_browse", tooltip(DOCK, "output_browse")))
        layout.addLayout(folders)
        layout.addWidget(self.model_choice)
        layout.addLayout(self.form.layout)
        layout.addWidget(self.block)
        self.settings = DockSettings(DOCK, self.form, extras={
            "model": Binding(self.model_choice.state, self.model_choice.set_state,
                             self.model_choice.state()),
            "input_dir": Binding(self.input_edit.text, self.input_edit.setText, ""),
            "output_dir": Binding(self.output_edit.text, self.output_edit.setText, ""),
        })
        layout.addWidget(self.settings.reset_button())
        layout.addStretch(1)
        scroll_all_but(self, self.block)

        controls = [self.input_edit, self.output_edit, self.model_choice,
                    *self.form.widgets.values()]
        self.runner = self.block.runner(self._on_event, self._on_finished, controls,
                                        label="napari-unet: batch")
        self.runner.stop_on_destroy(self)
        dock_process().attach(self)  # the batch runs there once it is up (see _jobs)
        self.summary: Any = None
        self.run_button.clicked.connect(self.run)
        self.settings.restore()
        for signal in (self.model_choice.changed, self.input_edit.editingFinished,
                       self.output_edit.editingFinished):
            signal.connect(self.settings.save)

    def _browse(self, edit: QLineEdit) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a folder", edit.text())
        if folder:
            edit.setText(folder)
            self.settings.save()

    def options(self) -> dict[str, Any]:
        """``batch_segment`` overrides from the form (BatchConfig and PredictConfig fields)."""
        values = self.form.values()
        options = dict(config_values(self.form), probabilities=values["probabilities"],
                       suffix=values["suffix"].strip(), overwrite=values["overwrite"])
        return options

    def run(self) -> Any:
        """Check the inputs and start the worker; returns it, or None (with a notification)."""
        from ..core.inference.batch import BatchConfig
        from ..core.inference.batch_files import find_inputs, output_paths
        from ..core.inference.config import PredictConfig
        from ..core.io.outputs import confirm_overwrite

        if self.runner.running:
            notify_warning("a batch is already running")
            return None
        self.block.clear()
        options = self.options()
        try:
            src, dst = check_folders(self.input_edit.text(), self.output_edit.text())
            spec = self.model_choice.spec()
            files = find_inputs(src)
            predict_options = {k: v for k, v in options.items()
                               if k not in ("probabilities", "suffix", "overwrite")}
            BatchConfig(predict=PredictConfig(**predict_options), suffix=options["suffix"])
            outputs = output_paths(files, dst, options["suffix"], options["probabilities"],
                                   protected=[p for p in (spec.source_file(),) if p])
        except ValueError as err:
            notify_error(err)
            return None
        if options["overwrite"] and not confirm_overwrite(outputs, self.confirm):
            return None
        self.summary = None
        self.block.say(f"segmenting {len(files)} image(s) from {src} ...")
        remember_file(spec)
        return self.runner.start(*dock_process().background(batch_job, spec, src, dst, options))

    def stop(self) -> None:
        """Stop after the image being written (files already written stay)."""
        self.runner.stop()

    def _on_event(self, event: Any) -> None:
        from ..core.events import BatchSummary, FileDone, SliceProgress

        if isinstance(event, SliceProgress):
            self.block.say(f"{event.path.name}: {event.message or f'{event.step}/{event.total}'}")
        elif isinstance(event, FileDone):
            self.block.say(f"{event.path.name}: {event.status}"
                           + (f" ({event.message})" if event.message else ""))
        elif isinstance(event, Message):
            self.block.say(event.text)
        elif isinstance(event, BatchSummary):
            self.summary = event

    def _on_finished(self, status: str) -> None:
        if self.summary is not None:
            text = summary_text(self.summary)
            if status == "stopped":
                text = "stopped; " + text
            self.block.say(text)
            (notify_warning if self.summary.failed else notify_info)(text)
        elif status == "stopped":
            self.block.say("stopped; labels written so far are kept")
            notify_info("batch stopped; labels written so far are kept")
        else:
            self.block.say("failed (see the notification)")
