"""The Train dock (and its loss plot and session autosave) driven like a user would.

Tiny nets (depth 2, 8 base channels) on 64x64 synthetic images keep each training to seconds.
Batch preparation runs in a thread here (``workers=0``) except in the tests about the worker
processes, which use the dock's own setting (spawned processes).
"""

from __future__ import annotations

import gc
import multiprocessing
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from napari.utils import progress
from napari.utils.notifications import NotificationSeverity, notification_manager
from qtpy.QtGui import QColor

from napari_unet._widgets import CONVENTION_KEY, train_form
from napari_unet._widgets.loss_plot import LossPlot
from napari_unet._widgets.session import SESSION_DIR_ENV, Session
from napari_unet._widgets.tooltips import controls_without_tooltip
from napari_unet._widgets.train import TrainWidget
from napari_unet.core.data.synthetic import synthetic_nuclei
from napari_unet.core.events import Progress
from napari_unet.core.model.checkpoint import load_model
from napari_unet.core.normalize import normalize
from napari_unet.core.settings import declared
from napari_unet.core.training.config import TrainConfig

TINY = {"base_channels": 8, "depth": 2}
LONG = 100_000  # iterations for runs that are stopped by the test


@pytest.fixture(autouse=True)
def _small_machine(monkeypatch, tmp_path):
    # Two busy cores: one torch thread is many times faster than two fighting for them.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setattr("os.cpu_count", lambda: 2)  # the dock leaves one core to the GUI
    monkeypatch.setenv(SESSION_DIR_ENV, str(tmp_path / "sessions"))
    monkeypatch.setattr(train_form, "hidden_settings", lambda: {"workers": 0})  # processes
    # only where tested
    yield
    torch.set_num_threads(before)


def sparse_labels(instances: np.ndarray, annotated_cols: int) -> np.ndarray:
    """Sparse convention (0 = not annotated, 1 = background, 2.. = objects), left part only."""
    labels = np.where(instances > 0, instances + 1, 1).astype(np.int32)
    labels[:, annotated_cols:] = 0
    return labels


def add_dock(viewer) -> TrainWidget:
    """The dock as napari makes it from the manifest entry (checked below), docked."""
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Train")
    return widget


def test_manifest_names_the_dock():
    import yaml

    from napari_unet import _widgets

    manifest = yaml.safe_load((Path(_widgets.__file__).parent.parent / "napari.yaml")
                              .read_text())
    names = {c["id"]: c["python_name"] for c in manifest["contributions"]["commands"]}
    assert "napari_unet._widgets.train:TrainWidget" in names.values()


def configure(widget, **values):
    for name, value in values.items():
        widget.train_form.set_value(name, value)


def open_dock(viewer, iterations=20, annotated_cols=40, seed=1, **settings):
    image, instances = synthetic_nuclei((64, 64), seed=seed)
    image_layer = viewer.add_image(image, name="cells")
    labels_layer = viewer.add_labels(sparse_labels(instances, annotated_cols), name="training",
                                     metadata={CONVENTION_KEY: "sparse"})
    _, widget = viewer.window.add_plugin_dock_widget("napari-original-unet", "Train")
    widget.model_choice.set_source("small")
    widget.model_choice.overrides = dict(TINY)
    configure(widget, **{"minutes": None, "iterations": iterations, "tile_size": 64,
                         "batch_size": 2, "preview_every_s": 0.0, "validate_every": 5,
                         "device": "cpu", **settings})
    return widget, image_layer, labels_layer, instances


def errors_since(start: int) -> list[str]:
    return [n.message for n in notification_manager.records[start:]
            if n.severity == NotificationSeverity.ERROR]


def foreground(model, image: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(normalize(image))[None, None]
    with torch.no_grad():
        return torch.softmax(model(x), 1)[0, 1].numpy()


def worker_processes() -> list[psutil.Process]:
    """Live processes spawned by multiprocessing from this test process, except its shared
    helpers (resource tracker, forkserver); Xvfb and other children are not ours."""
    out = []
    for child in psutil.Process().children(recursive=True):
        try:
            cmd = " ".join(child.cmdline())
            if child.status() == psutil.STATUS_ZOMBIE:
                continue
        except psutil.NoSuchProcess:
            continue
        if "multiprocessing" not in cmd or "resource_tracker" in cmd or "forkserver" in cmd:
            continue
        out.append(child)
    return out


def no_workers_left() -> bool:
    return not multiprocessing.active_children() and not worker_processes()


# -- loss plot ------------------------------------------------------------------------------------
def test_dock_repaints_bar_status_and_plot_together_every_2_s_and_with_previews(
        make_napari_viewer, monkeypatch):
    # Each dock repaint re-composes the window with the GL canvas (30-50 ms under software
    # OpenGL), so the events of the steps in between only update the dock's state.
    from napari_unet._widgets import train_run
    from napari_unet.core.events import LossReport, Preview

    widget = add_dock(make_napari_viewer())
    now = [100.0]
    monkeypatch.setattr(train_run.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(widget.preview, "show", lambda event: None)
    bar, plot = widget.run.block.progress, widget.loss_plot
    redraws = []
    monkeypatch.setattr(plot, "redraw", lambda: redraws.append(len(plot.steps)))

    def step(i: int, total: int = 50) -> None:
        widget.jobs._on_yielded(LossReport(i, 1.0 / i, 1e-3))
        widget.jobs._on_yielded(Progress(i, total, eta_s=10.0, rate=1.5))

    step(1)  # the first step is shown at once
    assert bar.value() == 1 and "step 1 / 50" in widget.status_label.text()
    assert redraws == [1]
    now[0] += 1.0
    step(2)
    now[0] += 0.9
    step(3)
    assert bar.value() == 1 and "step 1 / 50" in widget.status_label.text()
    assert redraws == [1] and len(plot.steps) == 3
    widget.jobs._on_yielded(Preview(3, np.zeros((8, 8), np.float32)))  # repaints the rest
    assert bar.value() == 3 and "step 3 / 50" in widget.status_label.text()
    assert redraws == [1, 3]
    now[0] += 2.0
    step(4)  # 2 s after the last repaint
    assert bar.value() == 4 and redraws == [1, 3, 4]
    step(50)  # the last step is shown at once
    assert bar.value() == 50 and "step 50 / 50" in widget.status_label.text()


def test_loss_plot_collects_and_smooths_points(qtbot):
    plot = LossPlot(smoothing=0.5)
    qtbot.addWidget(plot)
    plot.show()
    for step, loss in enumerate([4.0, 2.0, float("nan"), 1.0], start=1):
        plot.add_loss(step, loss)
    np.testing.assert_array_equal(plot.steps, [1, 2, 4])  # NaN dropped
    np.testing.assert_array_equal(plot.losses, [4.0, 2.0, 1.0])
    np.testing.assert_allclose(plot.smoothed, [4.0, 3.0, 2.0])  # EMA by hand
    plot.redraw()
    drawn = plot.draw_count
    plot.redraw()
    assert plot.draw_count == drawn  # nothing new, no redraw
    plot.add_validation(5, {"loss": 0.5, "iou": 0.2})
    plot.add_validation(6, {})
    assert plot.validation[0].tolist() == [5] and plot.validation[1].tolist() == [0.5]
    plot.add_validation(7, {"iou": 0.4})
    assert plot.validation_name == "validation iou"
    plot.clear()
    assert plot.steps.size == 0 and plot.validation[0].size == 0
    with pytest.raises(ValueError, match="max_fps"):
        LossPlot(max_fps=0)


def test_loss_plot_axes_move_in_coarse_steps(qtbot):
    plot = LossPlot()
    qtbot.addWidget(plot)
    plot.show()
    plot.set_total(500)
    for step in range(1, 60):
        plot.add_loss(step, 1.0 / step)  # 0.017..1: inside the initial 0.01..10
    plot.redraw()
    assert plot.limits == ((0.0, 500.0), (0.01, 10.0))  # the whole run at once
    plot.add_loss(60, 25.0)  # above 10: the axis grows by a whole decade
    plot.redraw()
    assert plot.limits[1] == pytest.approx((0.01, 100.0))
    plot.add_loss(61, 0.0)  # a loss of 0 cannot go on a log axis: drawn on its bottom edge
    plot.redraw()
    plot.grab()
    assert plot.limits[1] == pytest.approx((0.01, 100.0))
    plot.set_total(None)
    plot.add_loss(130, 1.0)  # no total: x doubles from 100
    plot.redraw()
    assert plot.limits[0] == (0.0, 200.0)


def test_loss_plot_paints_its_curves(qtbot):
    """The curves reach the screen: the training colour appears where the loss is drawn."""
    plot = LossPlot(dark=False)
    qtbot.addWidget(plot)
    plot.resize(320, 200)
    plot.show()

    def near(colour, target: str) -> bool:  # antialiased lines blend with the background
        t = QColor(target)
        return abs(colour.red() - t.red()) + abs(colour.green() - t.green()) \
            + abs(colour.blue() - t.blue()) < 90

    def found(image, target: str, rows) -> bool:
        return any(near(image.pixelColor(x, y), target) for x in range(0, 320) for y in rows)

    # no curve yet (the legend's sample line sits in the top rows)
    assert not found(plot.grab().toImage(), "#4c9be8", range(40, 200))
    plot.set_total(100)
    for step in range(1, 101):
        plot.add_loss(step, 1.0)
    plot.add_validation(50, {"loss": 0.1})
    plot.redraw()
    qtbot.waitUntil(lambda: plot.paint_count > 0)
    image = plot.grab().toImage()
    # loss 1 on a 0.01..10 log axis lies 2/3 up the frame (MARGINS: top 8, bottom 30)
    y = round(8 + (200 - 8 - 30) * (1 - 2 / 3))
    assert found(image, "#4c9be8", (y - 1, y, y + 1))
    assert not found(image, "#4c9be8", range(y + 20, 160))  # nothing below the curve
    assert found(image, "#f39c12", range(0, 200))  # the validation point


# -- session --------------------------------------------------------------------------------------
def test_session_labels_round_trip_with_convention(tmp_path):
    session = Session(tmp_path / "s")
    assert session.load_labels() is None
    labels = np.array([[0, 1, 2], [70000, 0, 3]])
    session.save_labels(labels, "sparse")
    back, convention = session.load_labels()
    assert convention == "sparse" and back.dtype == np.int32
    np.testing.assert_array_equal(back, labels)


# -- the dock --------------------------------------------------------------------------------------
@pytest.mark.gui
def test_dock_form_is_generated_from_the_config_with_a_tooltip_on_every_control(
        make_napari_viewer):
    viewer = make_napari_viewer()
    widget, _, labels_layer, _ = open_dock(viewer)
    assert isinstance(widget, TrainWidget)
    assert widget.inputs.image_combo.currentText() == "cells"
    assert widget.inputs.labels_combo.currentText() == "training"
    assert widget.inputs.convention_combo.currentText() == "sparse"  # from the layer metadata
    assert widget.device_label.text() == "device: cpu"
    # (scroll bars inside the combo boxes' pop-up lists are not controls of the dock)
    assert [c for c in controls_without_tooltip(widget) if c != "QScrollBar"] == []

    widget.train_form.apply_preset("paper")
    paper = TrainConfig.paper()
    for name in ("batch_size", "tile_size", "lr"):
        assert widget.train_form.form.value(name) == pytest.approx(getattr(paper, name)), name
    assert widget.train_form.form.value("iterations") == 20  # not part of a recipe
    assert widget.train_form.augment["intensity"].isChecked() is False
    config = widget.config()
    assert config.preset == "paper" and config.optimizer == "sgd"
    assert config.augment == paper.augment and config.minutes is None

    configure(widget, minutes=2.5, lr=0.00025, w0=7.5)
    widget.train_form.augment["elastic"].setChecked(False)
    config = widget.config()
    assert config.minutes == 2.5 and config.lr == pytest.approx(0.00025) and config.w0 == 7.5
    assert config.augment.elastic is False and config.augment.flips == paper.augment.flips

    widget.inputs.convention_combo.setCurrentText("dense")
    assert labels_layer.metadata[CONVENTION_KEY] == "dense"  # remembered with the layer


@pytest.mark.gui
def test_train_to_the_step_count_then_the_saved_model_predicts(make_napari_viewer, qtbot,
                                                              tmp_path):
    viewer = make_napari_viewer()
    widget, image_layer, labels_layer, _ = open_dock(viewer)
    threads_before = torch.get_num_threads()
    labels_layer.paint((60, 10), 1)  # a background stroke, as a user would
    with qtbot.waitSignal(widget.job_finished, timeout=180_000):
        assert widget.start()
        assert not widget.start_button.isEnabled() and widget.stop_button.isEnabled()
        assert not widget.run.save_button.isEnabled()
        # nothing animates while training (an animation repaints the window around the
        # OpenGL canvas): no napari activity entry (its spinner), no "busy" bar
        assert not [p for p in progress._all_instances if "training" in p.desc]
        assert widget.run.block.progress.maximum() > 0
    assert widget.worker is None and widget.start_button.isEnabled()
    assert torch.get_num_threads() == threads_before  # the job put torch's setting back
    assert widget.trainer.step == 20
    np.testing.assert_array_equal(widget.loss_plot.steps, np.arange(1, 21))
    # 40 painted columns of 64 x 64 hold out too little paint to measure: no validation
    # figure that would mislead, and the dock says why
    assert widget.loss_plot.validation[0].size == 0
    assert "no validation score" in widget.run.note_label.text()
    assert widget.run.block.progress.value() == widget.run.block.progress.maximum()
    step, _best = widget.saved_from
    assert f"step {step}" in widget.run.saved_label.text()

    with qtbot.waitSignal(widget.saved, timeout=60_000) as saved:
        widget.save_model(tmp_path / "mine.pt")
    model, meta = load_model(saved.args[0])
    assert meta.mode == "instances" and meta.step == step
    assert str(saved.args[0]) in widget.run.saved_label.text()  # the whole path, selectable
    # the trained model is offered by Predict (one click away) and Batch, newest first
    predict = widget.predict_with_model()
    assert predict.model_choice.spec().path == str((tmp_path / "mine.pt").resolve())
    assert predict.model_choice.source.currentText().startswith("cells, trained")
    assert predict.image_combo.value is image_layer
    _, batch = viewer.window.add_plugin_dock_widget("napari-original-unet", "Batch segment")
    offered = [batch.model_choice.source.itemText(i)
               for i in range(batch.model_choice.source.count())]
    assert offered[0] == "Shipped default model" and offered[-1] == "Model file..."
    assert offered[1].endswith("(mine.pt)") and offered[2].endswith("(model.pt)")  # autosave
    probs = foreground(model, image_layer.data)
    assert probs.shape == (64, 64) and np.isfinite(probs).all()
    restored, convention = widget.session.load_labels()  # autosaved with the session
    assert convention == "sparse"
    np.testing.assert_array_equal(restored, labels_layer.data)

    # Export to the BioImage Model Zoo: the package loads back as the same net.
    package = tmp_path / "mine.zip"
    widget.export_model(package)
    qtbot.waitUntil(package.exists, timeout=120_000)
    zoo_model, zoo_meta = load_model(package)
    assert zoo_meta.step == step and zoo_model.config == model.config
    np.testing.assert_allclose(foreground(zoo_model, image_layer.data), probs, atol=1e-6)


@pytest.mark.gui
def test_time_budget_ends_training_and_saves(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget, _, _, _ = open_dock(viewer, iterations=LONG, minutes=0.01, validate_every=0)
    assert widget.config().minutes == 0.01
    with qtbot.waitSignal(widget.job_finished, timeout=180_000):
        assert widget.start()
    assert 0 < widget.trainer.step < LONG  # the budget ended it, not the step count
    assert gc.get_freeze_count() == 0  # the heap frozen for the run is given back
    assert "time budget" in widget.run.note_label.text()
    _, meta = load_model(widget.session.model_path)
    assert meta.step == widget.trainer.step


@pytest.mark.gui
@pytest.mark.slow
def test_stop_and_closing_the_viewer_end_the_worker_processes(make_napari_viewer, qtbot,
                                                              monkeypatch):
    monkeypatch.setattr(train_form, "hidden_settings", lambda: {"workers": "auto"})  # the
    # dock's own setting
    viewer = make_napari_viewer()
    widget, image_layer, _, _ = open_dock(viewer, iterations=LONG)
    assert widget.config().workers == "auto"
    assert widget.start()
    qtbot.waitUntil(lambda: widget.trainer is not None and widget.trainer.step >= 3,
                    timeout=180_000)
    assert worker_processes()  # batches come from spawned processes
    with qtbot.waitSignal(widget.job_finished, timeout=120_000):
        widget.stop()
    assert widget.worker is None
    qtbot.waitUntil(no_workers_left, timeout=30_000)
    step = widget.trainer.step
    model, meta = load_model(widget.session.model_path)
    assert meta.step == step  # saved after the worker stopped: consistent
    assert foreground(model, image_layer.data).shape == (64, 64)
    # The next Start continues from the autosaved weights...
    assert widget.model_choice.current_source() == "file"
    assert widget.model_choice.spec().path == str(widget.session.model_path)

    # ...and closing the viewer mid-run ends the run and its processes, saving it.
    assert widget.start()
    qtbot.waitUntil(lambda: widget.trainer is not None and widget.trainer.step > step,
                    timeout=180_000)
    assert worker_processes()
    worker, session = widget.worker, widget.session
    viewer.close()
    assert not worker.is_running and widget.trainer is None and widget.samples is None
    qtbot.waitUntil(no_workers_left, timeout=30_000)
    _, meta = load_model(session.model_path)  # the training was saved on the way out
    assert meta.step > step


@pytest.mark.gui
def test_closing_the_dock_stops_training_and_frees_it(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget, _, _, _ = open_dock(viewer, iterations=LONG)
    assert widget.start()
    qtbot.waitUntil(lambda: widget.trainer is not None and widget.trainer.step >= 2,
                    timeout=120_000)
    assert gc.get_freeze_count() > 0  # short garbage collections while it runs
    worker = widget.worker
    viewer.window.remove_dock_widget(widget)
    assert not worker.is_running and widget.worker is None
    assert widget.trainer is None and widget.samples is None  # memory released
    assert gc.get_freeze_count() == 0


@pytest.mark.gui
def test_live_preview_layer_updates_in_place(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget, _, _, _ = open_dock(viewer, iterations=LONG)
    assert widget.start()
    qtbot.waitUntil(lambda: widget.preview.updates >= 1, timeout=120_000)
    layer = widget.preview.layer
    seen = []
    layer.events.data.connect(lambda e: seen.append(e))
    qtbot.waitUntil(lambda: len(seen) >= 2, timeout=120_000)
    widget.stop()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)
    previews = [lay for lay in viewer.layers if lay.name.endswith("U-Net preview")]
    assert previews == [layer]  # one layer, its data replaced
    assert layer.data.shape == (64, 64) and layer.data.dtype == np.float32
    assert 0.0 <= layer.data.min() and layer.data.max() <= 1.0
    assert viewer.layers.selection.active is not layer  # painting stays on the labels


@pytest.mark.gui
def test_label_edits_reach_the_running_training(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget, _, labels_layer, instances = open_dock(viewer, iterations=LONG, annotated_cols=32)
    assert widget.start()
    qtbot.waitUntil(lambda: widget.trainer is not None and widget.trainer.step >= 2,
                    timeout=120_000)
    samples = widget.samples
    assert samples.n_annotated_pixels == 64 * 32
    version = samples.version
    with qtbot.waitSignal(widget.labels_updated, timeout=60_000) as update:
        labels_layer.data = sparse_labels(instances, 48)  # napari's data event (fill, undo)
    assert update.args == [64 * 48]
    assert samples.n_annotated_pixels == 64 * 48 and samples.version > version
    labels_layer.brush_size = 1
    with qtbot.waitSignal(widget.labels_updated, timeout=60_000) as update:
        labels_layer.paint((10, 60), 1)  # ...and a brush stroke (napari's paint event)
    assert update.args == [64 * 48 + 1]
    steps_before = widget.trainer.step
    qtbot.waitUntil(lambda: widget.trainer.step > steps_before + 3, timeout=120_000)
    with qtbot.waitSignal(widget.job_finished, timeout=120_000):
        widget.stop()
    restored, _ = widget.session.load_labels()  # the edit was autosaved as well
    np.testing.assert_array_equal(restored, labels_layer.data)


@pytest.mark.gui
def test_bad_input_and_failures_are_shown_once(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget, image_layer, labels_layer, _ = open_dock(viewer)

    def refused(match: str) -> None:
        start = len(notification_manager.records)
        assert widget.start() is False
        assert widget.worker is None and widget.trainer is None
        errors = errors_since(start)
        assert len(errors) == 1 and match in errors[0], errors

    small = viewer.add_labels(np.ones((32, 32), np.int32), name="other shape")
    widget.inputs.labels_combo.setCurrentText(small.name)
    refused("does not match image shape")
    empty = viewer.add_labels(np.zeros((64, 64), np.int32), name="empty")
    widget.inputs.labels_combo.setCurrentText(empty.name)
    refused("no annotation yet")
    only_background = viewer.add_labels(np.ones((64, 64), np.int32), name="background only",
                                        metadata={CONVENTION_KEY: "sparse"})
    widget.inputs.labels_combo.setCurrentText(only_background.name)
    refused("only one class annotated")
    widget.inputs.labels_combo.setCurrentText(labels_layer.name)
    configure(widget, sigma=0.0)
    refused("sigma must be")
    configure(widget, sigma=5.0)

    # A failure inside the running job (an impossible net): one toast, not two or three.
    widget.model_choice.overrides = {"depth": 0}
    start = len(notification_manager.records)
    with qtbot.waitSignal(widget.job_finished, timeout=60_000):
        assert widget.start()
    assert len(errors_since(start)) == 1
    assert widget.start_button.isEnabled()

    viewer.layers.remove(image_layer)  # only non-image layers left
    assert widget.inputs.image_combo.count() == 0
    widget.model_choice.overrides = dict(TINY)
    refused("choose an image layer")
    assert not any(lay.name.endswith("preview") for lay in viewer.layers)


@pytest.mark.gui
def test_settings_survive_a_fresh_widget_and_reset(make_napari_viewer):
    viewer = make_napari_viewer()
    first = TrainWidget(viewer)
    first.train_form.apply_preset("paper")
    configure(first, minutes=7.5, lr=0.002, validate_every=20)
    first.train_form.augment["flips"].setChecked(False)
    first.train_form.preview.setChecked(False)
    first.model_choice.set_source("modified")
    first.shutdown()

    second = TrainWidget(viewer)
    config = second.config()
    assert config.preset == "paper" and config.minutes == 7.5
    assert config.lr == pytest.approx(0.002) and config.validate_every == 20
    assert config.augment.flips is False and not second.train_form.preview.isChecked()
    assert second.model_choice.current_source() == "modified"
    second.settings.reset()
    fresh = second.config()
    assert fresh.minutes == declared(TrainConfig, "minutes").setting.dock_default == 3.0
    assert fresh.preset == second.train_form.default_preset
    assert fresh.augment.flips is True and second.train_form.preview.isChecked()
    second.shutdown()


@pytest.mark.gui
def test_restore_session_brings_back_labels_and_model(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget, _, labels_layer, _ = open_dock(viewer, iterations=3)
    with qtbot.waitSignal(widget.job_finished, timeout=180_000):
        assert widget.start()
    painted = np.array(labels_layer.data)
    viewer.layers.remove(labels_layer)
    widget.model_choice.set_source("small")
    assert widget.inputs.restore_button.isEnabled()
    widget.restore_session()
    restored = viewer.layers[widget.inputs.labels_combo.currentText()]
    assert restored is not labels_layer
    np.testing.assert_array_equal(restored.data, painted)
    assert restored.metadata[CONVENTION_KEY] == "sparse"
    assert widget.model_choice.current_source() == "file"
    assert widget.model_choice.spec().path == str(widget.session.model_path)


@pytest.mark.gui
def test_stack_trains_on_its_annotated_slices_and_previews_the_current_one(
        make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    planes = [synthetic_nuclei((64, 64), seed=s) for s in (1, 2, 3)]
    stack = np.stack([p[0] for p in planes])
    labels = np.zeros((3, 64, 64), np.int32)
    labels[1] = sparse_labels(planes[1][1], 64)  # only the middle slice is annotated
    viewer.add_image(stack, name="stack")
    viewer.add_labels(labels, name="stack labels", metadata={CONVENTION_KEY: "sparse"})
    _, widget = viewer.window.add_plugin_dock_widget("napari-original-unet", "Train")
    widget.model_choice.set_source("small")
    widget.model_choice.overrides = dict(TINY)
    configure(widget, minutes=None, iterations=4, tile_size=64, batch_size=1,
              preview_every_s=0.0, validate_every=0, device="cpu")
    viewer.dims.set_current_step(0, 2)
    with qtbot.waitSignal(widget.job_finished, timeout=180_000):
        assert widget.start()
    assert widget.samples.n_samples == 1  # the two empty slices are not training data
    assert widget.trainer.step == 4
    assert widget.preview.updates >= 1
    assert widget.preview.layer.data.shape == (64, 64)
    assert widget.preview.region == (2, slice(0, 64), slice(0, 64))  # the slice in view


@pytest.mark.gui
def test_semantic_labels_train_a_multi_class_model_with_its_names(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    image, instances = synthetic_nuclei((64, 64), seed=5)
    viewer.add_image(image, name="other image")
    viewer.add_image(image, name="cells", scale=(0.5, 0.5))
    # semantic-sparse: 0 = not annotated, class c painted as c + 1 (background 1, two classes).
    labels = np.where(instances > 0, 2 + (instances % 2), 1).astype(np.int32)
    labels[:, 48:] = 0
    names = ["background", "even", "odd"]
    viewer.add_labels(labels, name="classes", scale=(0.5, 0.5), metadata={
        CONVENTION_KEY: "semantic-sparse", "napari_unet_class_names": names,
        "napari_unet_image": "cells"})
    _, widget = viewer.window.add_plugin_dock_widget("napari-original-unet", "Train")
    widget.inputs.labels_combo.setCurrentText("classes")
    assert widget.inputs.image_combo.currentText() == "cells"  # named by the labels layer
    assert widget.inputs.convention_combo.currentText() == "semantic-sparse"
    widget.model_choice.set_source("modified")
    widget.model_choice.overrides = dict(TINY)
    configure(widget, minutes=None, iterations=3, tile_size=64, batch_size=1,
              validate_every=0, device="cpu")
    with qtbot.waitSignal(widget.job_finished, timeout=180_000):
        assert widget.start()
    model, meta = load_model(widget.session.model_path)
    assert model.num_classes == 3 and meta.mode == "semantic"
    assert tuple(meta.class_names) == tuple(names)
    assert meta.pixel_size == 0.5


@pytest.mark.gui
def test_an_rgb_image_trains_on_the_chosen_channel(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    image, instances = synthetic_nuclei((64, 64), seed=1)
    rgb = np.stack([np.zeros_like(image), image, np.zeros_like(image)], axis=-1)
    viewer.add_image(rgb, name="cells", rgb=True)
    viewer.add_labels(sparse_labels(instances, 40), name="training",
                      metadata={CONVENTION_KEY: "sparse"})
    _, widget = viewer.window.add_plugin_dock_widget("napari-original-unet", "Train")
    widget.model_choice.set_source("small")
    widget.model_choice.overrides = dict(TINY)
    configure(widget, minutes=None, iterations=2, tile_size=64, batch_size=1, device="cpu",
              validate_every=0, preview_every_s=0.0)
    combo = widget.inputs.channel_combo
    assert [combo.itemText(i) for i in range(combo.count())] == [
        "all 3 channels", "channel 0", "channel 1", "channel 2"]
    combo.setCurrentIndex(2)
    assert widget.inputs.channel() == 1
    with qtbot.waitSignal(widget.job_finished, timeout=120_000):
        assert widget.start()
    assert widget.trainer.model.in_channels == 1  # one channel, as the default model takes
    assert widget.trainer.meta().channel == 1  # recorded: prediction takes it by default


def test_fine_tuning_the_shipped_model_keeps_its_gaps_with_sparse_paint_only(
        make_napari_viewer, qtbot):
    # the same dock and settings for both workflows: a corrected prediction (every pixel
    # painted) has no unpainted gap to keep; a few painted objects keep the model's gaps
    viewer = make_napari_viewer()
    image, instances = synthetic_nuclei((128, 128), touching=1.0, seed=7)
    viewer.add_image(image, name="cells")
    corrected = np.where(instances > 0, instances + 1, 1).astype(np.int32)
    labels_layer = viewer.add_labels(corrected, name="training",
                                     metadata={CONVENTION_KEY: "sparse"})
    _, widget = viewer.window.add_plugin_dock_widget("napari-original-unet", "Train")
    widget.model_choice.set_source("default")
    configure(widget, minutes=None, iterations=2, batch_size=1, validate_every=0,
              device="cpu")
    assert widget.config().preset == "finetune" and widget.config().keep_gaps == 3
    with qtbot.waitSignal(widget.job_finished, timeout=180_000):
        assert widget.start()
    assert widget.trainer.step == 2
    assert "already separates" not in widget.run.note_label.text()

    sparse = np.zeros_like(corrected)
    one = instances == np.unique(instances[instances > 0])[0]
    sparse[one] = 2
    sparse[:6, :6] = 1
    labels_layer.data = sparse
    with qtbot.waitSignal(widget.job_finished, timeout=180_000):
        assert widget.start()
    assert "unpainted pixels between objects the model already separates are kept as " \
           "background" in widget.run.note_label.text()
