"""The Train dock: pick image + training labels + model, train for a few minutes, watch it learn.

A thin view that wires small parts together:

- ``train_inputs.TrainInputs``: image / labels / convention choice;
- ``model_choice.ModelChoice``: the model to start from;
- ``train_form.TrainForm``: the settings, generated from ``TrainConfig`` (time budget first);
- ``train_run.RunPanel``: Start/Stop, progress, notes, Save/Export and the loss plot, which
  render the run's events; its ``_jobs.JobRunner`` runs the job in a worker thread;
- ``train_job.TrainJob``: the generator the worker runs;
- ``train_preview.LivePreview``: the live preview of the view;
- ``train_labels.LabelsFollower``: edits of the labels layer, once the painting pauses;
- ``train_io.BackgroundIO``: one background thread for saves and label updates, one callback
  per submission; ``train_saving``: file dialogs and the export work;
- ``train_session``: autosave folder and restore; ``settings.DockSettings``: remembered settings;
- ``train_lifecycle.CloseWatcher``: stops everything when the dock or the viewer closes;
- ``gc_freeze.FrozenHeap``: keeps the garbage collector's pauses short while a run goes.

Every GUI-thread handler is short: events only append to the loss plot (redrawn with the
progress bar), swap the preview layer's data, or set a label; saving and labels updates run on
the background thread. Stop asks the worker to quit at its next yield; the trainer is closed
(its batch worker processes end) and the model auto-saved once the worker has finished.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QApplication, QGroupBox, QLabel, QVBoxLayout, QWidget

from ..core.events import Preview
from ..core.runtime.device import resolve_device
from ..core.training.config import preset_for
from . import train_session
from ._jobs import notify_error, notify_info, notify_warning
from ._scroll import scroll_all_but
from .gc_freeze import FrozenHeap
from .model_choice import ModelChoice
from .recent_models import recent_models
from .settings import Binding, DockSettings
from .train_data import training_data
from .train_form import TrainForm
from .train_inputs import TrainInputs, same_layer
from .train_io import BackgroundIO
from .train_job import Started, TrainJob, warm_up_in_background
from .train_labels import LabelsFollower
from .train_lifecycle import CloseWatcher
from .train_preview import LivePreview
from .train_run import RunPanel, napari_is_dark, start_text
from .train_saving import ask_model_path, ask_package_path, export_package, saved_step


class TrainWidget(QWidget):
    """Dock widget that trains a U-Net on the painted labels of an image layer.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer (injected by napari).

    Notes
    -----
    Signals: ``saved(str)`` after a model file was written (explicit or auto-save),
    ``labels_updated(int)`` after the running training took new labels (annotated pixels),
    ``job_finished()`` when a training run has ended and its model was saved.
    """

    saved = Signal(str)
    labels_updated = Signal(int)
    job_finished = Signal()

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.trainer: Any = None
        self.samples: Any = None
        self.session: train_session.Session | None = None
        self.saved_from: tuple[int, bool] | None = None  # (step, best?) of the last save
        self.last_saved: Path | None = None  # the model file written last
        self._job: TrainJob | None = None
        self._run_labels: Any = None  # the labels layer the running job trains on
        self._run_session: train_session.Session | None = None  # where the run autosaves
        self._frozen: FrozenHeap | None = None  # short garbage collections during a run
        self._closed = False
        self._offered_sessions: set[str] = set()
        self._auto_choice = False
        self.io = BackgroundIO(parent=self)
        self.preview = LivePreview(napari_viewer, self)
        self.label_edits = LabelsFollower(self._on_labels_edited, parent=self)
        self._build_ui()
        self.settings = self._make_settings()
        scroll_all_but(self, self.run.block)  # the settings scroll, Start and Stop stay in view
        self.settings.restore()
        self.closer = CloseWatcher(self, self.shutdown)
        self.inputs.image_changed.connect(self._on_image_changed)
        self.inputs.labels_changed.connect(self._on_labels_changed)
        self.inputs.restore_button.clicked.connect(lambda *_: self.restore_session())
        self._on_image_changed(self.inputs.image_layer())
        self._on_labels_changed(self.inputs.labels_layer())
        self._update_buttons()
        warm_up_in_background()  # torch's lazy imports, while the user paints

    # -- UI -----------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        layout = QVBoxLayout(self)
        self.inputs = TrainInputs(self.viewer)
        self.model_choice = ModelChoice(allow_new=True)
        self.train_form = TrainForm(preset=preset_for(self._from_trained()))
        self.device_label = QLabel()
        self.run = RunPanel(self._save_dialog, self._export_dialog,
                            dark=napari_is_dark(self.viewer), on_predict=self.predict_with_model)
        for title, parts in (("Data", [self.inputs]), ("Model", [self.model_choice]),
                             ("Training", [self.train_form, self.device_label]),
                             ("Run", [self.run])):
            box = QGroupBox(title)
            box_layout = QVBoxLayout(box)
            for part in parts:
                box_layout.addWidget(part)
            layout.addWidget(box)
        layout.addStretch(1)
        self.start_button, self.stop_button = self.run.block.run_button, self.run.block.stop_button
        self.status_label, self.loss_plot = self.run.status_label, self.run.loss_plot
        self.jobs = self.run.runner(
            self._on_event, self._on_job_finished,
            controls=[*self.inputs.controls(), self.model_choice, *self.train_form.controls()])
        self.start_button.clicked.connect(lambda *_: self.start())
        # A model chosen by the user brings its recipe (the CLI picks it the same way);
        # ``activated`` is the user's choice only, not a restore or the switch to an autosave.
        self.model_choice.source.activated.connect(
            lambda *_: self.train_form.apply_preset(preset_for(self._from_trained())))
        self.train_form.form["device"].currentIndexChanged.connect(lambda *_: self._show_device())
        self._show_device()

    def _make_settings(self) -> DockSettings:
        choice = self.model_choice

        def set_source(value: Any) -> None:
            choice.set_source(str(value))  # ValueError for a source no longer offered

        extras = dict(self.train_form.bindings())
        extras["model_source"] = Binding(choice.current_source, set_source,
                                         choice.current_source())
        extras["model_upsampling"] = Binding(choice.upsampling.currentText,
                                             choice.upsampling.setCurrentText,
                                             choice.upsampling.currentText())
        extras["model_path"] = Binding(choice.path.text, choice.path.setText, "")
        settings = DockSettings("train", form=self.train_form.form, extras=extras)
        for signal in (*self.train_form.change_signals(), choice.changed):
            # Not the dock's own switch to the autosaved model: that is this image's session.
            signal.connect(lambda *_: None if self._auto_choice else settings.save())
        self.reset_button = settings.reset_button()
        self.layout().insertWidget(self.layout().count() - 1, self.reset_button)
        return settings

    def _from_trained(self) -> bool:
        return self.model_choice.current_source() in ("default", "file")

    def _show_device(self) -> None:
        try:
            device = resolve_device(self.train_form.form.value("device"))
            self.device_label.setText(f"device: {device.type}")
        except ValueError as err:
            self.device_label.setText(f"device: {err}")

    @property
    def worker(self) -> Any:
        """The worker of the running training, or None."""
        return self.jobs.worker

    def config(self) -> Any:
        """The TrainConfig of the current settings; ``ValueError`` for impossible values."""
        return self.train_form.config()

    # -- layers and session --------------------------------------------------------------------
    def _on_image_changed(self, layer: Any) -> None:
        if self._closed:
            return
        self.session = None if layer is None else train_session.session_for(layer)
        self._update_buttons()
        if (train_session.has_saved(self.session) and layer.name not in self._offered_sessions
                and self.worker is None):
            self._offered_sessions.add(layer.name)
            notify_info(f"An autosaved U-Net session exists for '{layer.name}' "
                        f"({self.session.folder}); click 'Restore autosaved session' in the "
                        "Train dock to continue it.")

    def _on_labels_changed(self, layer: Any) -> None:
        if self.worker is None and not self._closed:
            self.label_edits.follow(layer)
        self.preview.forget_deleted_layer()

    def restore_session(self) -> None:
        """Bring back the autosaved labels (as a new layer) and model of the chosen image."""
        image_layer, session = self.inputs.image_layer(), self.session
        if image_layer is None or session is None:
            notify_error("Cannot restore: choose an image layer first")
            return
        try:
            layer, model = train_session.restore(self.viewer, image_layer, session)
        except ValueError as err:
            notify_error(err)
            return
        if layer is not None:
            self.inputs.set_layers(labels=layer)
        if model is not None:
            self.model_choice.set_source("file", model)
        notify_info(f"Restored the U-Net session from {session.folder}")

    def _update_buttons(self) -> None:
        running = self.worker is not None
        self.run.enable_saving(not running and self.trainer is not None)
        self.inputs.restore_button.setEnabled(
            not running and train_session.has_saved(self.session))

    # -- start / stop ----------------------------------------------------------------------------
    def start(self) -> bool:
        """Check the inputs and start training; ``False`` (and one notification) if they are
        bad."""
        if self.worker is not None or self._closed:
            return False
        try:
            image_layer, labels_layer, data, config, spec = self._prepare()
        except ValueError as err:
            notify_error(f"Cannot train: {err}")
            return False
        self.closer.watch_window()  # docked by now, even in a viewer that was never shown
        self.samples, self.trainer, self.saved_from = data.samples, None, None
        self._run_labels = labels_layer
        self._run_session = self.session
        self.label_edits.follow(labels_layer)
        self.run.begin(config.iterations, start_text(spec.describe(), config,
                                                     data.samples.n_annotated_pixels))
        self.device_label.setText(f"device: {resolve_device(config.device).type}")
        self._autosave_labels(np.array(labels_layer.data, copy=True))
        self._offered_sessions.add(image_layer.name)  # its autosave is this run's own
        box = (self.preview.begin(image_layer, labels_layer)
               if self.train_form.preview.isChecked() else None)
        job = TrainJob(spec.build, data.samples, config, data.image, data.channel_axis, box)
        self._job = job
        self._frozen = FrozenHeap()
        self.jobs.start(job.events)
        self._update_buttons()
        return True

    def _prepare(self) -> tuple:
        from napari.layers import Image, Labels

        image_layer, labels_layer = self.inputs.image_layer(), self.inputs.labels_layer()
        if image_layer is None:
            raise ValueError("choose an image layer (open or add an image first)")
        if labels_layer is None:
            raise ValueError("choose a training labels layer (make one in the Annotate dock)")
        if not isinstance(image_layer, Image):
            raise ValueError(f"layer '{image_layer.name}' is not an image layer")
        if not isinstance(labels_layer, Labels):
            raise ValueError(f"layer '{labels_layer.name}' is not a labels layer")
        config = self.train_form.config()
        data = training_data(image_layer, labels_layer, self.inputs.convention(),
                             channel=self.inputs.channel())
        spec = self.model_choice.spec()
        resolve_device(config.device)  # an unavailable accelerator is refused here, not later
        return image_layer, labels_layer, data, config, spec

    def stop(self) -> None:
        """Ask the running training to stop after its current step (auto-saves the model)."""
        if self.worker is not None:
            self.status_label.setText("stopping after the current step...")
            self.jobs.stop()

    # -- worker events (GUI thread; each must stay short) ---------------------------------------
    def _on_event(self, event: Any) -> None:
        if isinstance(event, Started):
            self.trainer = event.trainer
            self.device_label.setText(f"device: {event.trainer.device.type}")
        elif isinstance(event, Preview):
            self.preview.show(event)
            self.run.refresh()  # the same window composition as the preview's
        else:
            self.run.add_event(event)

    def _on_job_finished(self, status: str) -> None:
        self.preview.end()
        self._thaw()
        job, self._job = self._job, None
        # The job's own trainer: its Started event may have been dropped by an early Stop.
        trainer = self.trainer = job.trainer if job is not None else self.trainer
        # The run's own session: the layer choice may have changed since (or the viewer is
        # closing and its layers are going away).
        session, self._run_session = self._run_session, None
        if self._closed:
            return
        self.loss_plot.redraw()  # the last points (the bar shows the end state by itself)
        if trainer is not None and trainer.step > 0 and session is not None:
            self.status_label.setText(f"{status} at step {trainer.step}; auto-saving the model")
            session.ensure_folder()
            self._save(trainer, session.model_path, autosave=True, job=job)
        else:
            if job is not None:
                self.io.submit(job.close, what="ending the training")
            self.status_label.setText(status)
            self.job_finished.emit()
        self._update_buttons()

    def _thaw(self) -> None:
        if self._frozen is not None:
            self._frozen.release()
            self._frozen = None

    # -- saving ----------------------------------------------------------------------------------
    def save_model(self, path: str | Path) -> None:
        """Write the trained model to ``path`` (atomic, in the background); emits ``saved``."""
        if self._can_write("save"):
            self._save(self.trainer, Path(path), autosave=False)

    def export_model(self, path: str | Path) -> None:
        """Write the trained model as a BioImage Model Zoo package ``path`` (.zip), in the
        background. The file dialog has already asked before replacing a file."""
        if self._can_write("export"):
            self.io.submit(export_package, self.trainer, Path(path),
                           on_done=lambda result: notify_info(f"Model exported to {result}"),
                           on_error=lambda err: notify_error(f"Exporting the model failed: {err}"),
                           what="exporting the model")

    def _can_write(self, verb: str) -> bool:
        """A trained model and no run in progress; else a message naming ``verb``."""
        if self.trainer is None:
            notify_error(f"Cannot {verb}: train a model first")
            return False
        if self.worker is not None:
            notify_error(f"Cannot {verb} while training runs: press Stop first")
            return False
        return True

    def _remember(self, path: Path) -> None:
        """Offer the model in the Predict and Batch docks (named after its image and time)."""
        layer = self.inputs.image_layer()
        name = layer.name if layer is not None else path.stem
        recent_models().add(path, f"{name}, trained {time.strftime('%H:%M')} ({path.name})")

    def predict_with_model(self) -> Any:
        """Open the Predict dock on this image with the model saved last; returns the dock."""
        if self.last_saved is None:
            return None
        _, dock = self.viewer.window.add_plugin_dock_widget("napari-original-unet", "Predict")
        dock.model_choice.set_source("file", str(self.last_saved))
        image = self.inputs.image_layer()
        if image is not None and image in dock.image_combo.choices:
            dock.image_combo.value = image
        return dock

    def _save_dialog(self) -> None:
        path = ask_model_path(self, self.session.folder if self.session else None)
        if path:
            self.save_model(path)

    def _export_dialog(self) -> None:
        path = ask_package_path(self, self.session.folder if self.session else None)
        if path:
            self.export_model(path)

    def _save(self, trainer: Any, path: Path, autosave: bool, job: TrainJob | None = None
              ) -> None:
        def work() -> Any:
            if job is not None:
                job.close()  # end the batch workers first: the save needs only the model
            return trainer.save(path)

        def done(result: Any) -> None:
            self.saved_from = saved_step(trainer)
            self.run.show_saved(*self.saved_from, str(result))
            self.last_saved = Path(result)
            self._remember(Path(result))
            self.saved.emit(str(result))
            if autosave:  # the next Start continues from these weights
                self._auto_choice = True
                try:
                    self.model_choice.set_source("file", str(result))
                finally:
                    self._auto_choice = False
                self.status_label.setText(f"model auto-saved to {result}")
                self.job_finished.emit()
            else:
                notify_info(f"Model saved to {result}")

        def failed(err: BaseException) -> None:
            notify_error(f"Saving the model failed: {err}")
            if autosave:
                self.job_finished.emit()

        self.io.submit(work, on_done=done, on_error=failed, what="saving the model")

    # -- paint while it trains -------------------------------------------------------------------
    def _on_labels_edited(self, layer: Any, snapshot: np.ndarray) -> None:
        if self._closed:
            return
        samples = self.samples
        if self.worker is not None and samples is not None and same_layer(layer,
                                                                          self._run_labels):
            def update() -> int:
                samples.update(0, snapshot)
                return samples.n_annotated_pixels

            self.io.submit(update, on_done=self.labels_updated.emit,
                           on_error=lambda err: notify_warning(
                               f"The running training could not take the new labels: {err}"),
                           what="updating the training labels")
        self._autosave_labels(snapshot)

    def _autosave_labels(self, snapshot: np.ndarray) -> None:
        if self.session is not None:
            self.io.submit(self.session.save_labels, snapshot, self.inputs.convention(),
                           on_error=lambda err: notify_warning(
                               f"Autosaving the training labels failed: {err}"),
                           what="autosaving the labels")

    # -- closing -----------------------------------------------------------------------------------
    def closeEvent(self, event: Any) -> None:  # noqa: N802 (Qt API)
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self, timeout_s: float = 30.0) -> None:
        """Stop the training (waiting up to ``timeout_s``), save its model, end its worker
        processes, free memory. Called when the dock or the viewer closes."""
        if self._closed:
            return
        try:  # the viewer may be removing its layers: the dock no longer follows them
            self.inputs.disconnect_viewer()
            self.label_edits.follow(None)
        except (RuntimeError, AttributeError, ValueError):
            pass  # the viewer is already being torn down
        if self.worker is not None:
            self.jobs.stop()
            deadline = time.monotonic() + timeout_s
            while self.worker is not None and time.monotonic() < deadline:
                # The worker stops at its next yield (one step); its finished handler, run
                # by processEvents, queues the auto-save on the background thread.
                QApplication.processEvents()
                time.sleep(0.01)
        self._closed = True
        self.label_edits.timer.stop()
        self.preview.end()
        self._thaw()
        self.loss_plot.stop()
        self.io.shutdown(wait=True)  # the auto-save (and the trainer's close) finish here
        if self._job is not None:  # the worker did not stop in time: end its processes anyway
            self._job.close()
            self._job = None
        self.trainer = None
        self.samples = None
        _release_accelerator_memory()


def _release_accelerator_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    mps = getattr(torch, "mps", None)
    if mps is not None and getattr(torch.backends, "mps", None) is not None \
            and torch.backends.mps.is_available():
        mps.empty_cache()


__all__ = ["TrainWidget"]
