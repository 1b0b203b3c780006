"""The Train dock (and its loss plot and session autosave) driven like a user would.

Tiny nets (depth 2, 4 base channels) on 64x64 synthetic images keep each training to seconds.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from napari.utils.notifications import NotificationSeverity, notification_manager

from napari_unet._widgets import CONVENTION_KEY
from napari_unet._widgets.loss_plot import LossPlot
from napari_unet._widgets.session import SESSION_DIR_ENV, Session
from napari_unet._widgets.train import (
    TrainWidget,
    arrange_image,
    labels_mode,
    preview_region,
)
from napari_unet.core.checkpoint import load_model
from napari_unet.core.data import normalize
from napari_unet.core.synthetic import synthetic_nuclei
from napari_unet.core.train import TrainConfig

TINY = {"base_channels": 4, "depth": 2}
LONG = 100_000  # iterations for runs that are stopped by the test


@pytest.fixture(autouse=True)
def _one_torch_thread(monkeypatch, tmp_path):
    # Two busy cores: one torch thread is many times faster than two fighting for them.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setattr("os.cpu_count", lambda: 2)  # the dock leaves one core to the GUI
    monkeypatch.setenv(SESSION_DIR_ENV, str(tmp_path / "sessions"))
    yield
    torch.set_num_threads(before)


def sparse_labels(instances: np.ndarray, annotated_cols: int) -> np.ndarray:
    """Sparse convention (0 = not annotated, 1 = background, 2.. = objects), left part only."""
    labels = np.where(instances > 0, instances + 1, 1).astype(np.int32)
    labels[:, annotated_cols:] = 0
    return labels


def open_dock(viewer, iterations=20, annotated_cols=40, seed=1):
    image, instances = synthetic_nuclei((64, 64), seed=seed)
    image_layer = viewer.add_image(image, name="cells")
    labels_layer = viewer.add_labels(sparse_labels(instances, annotated_cols), name="training",
                                     metadata={CONVENTION_KEY: "sparse"})
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet", "Train")
    widget.model_choice.set_source("small")
    widget.model_choice.overrides = dict(TINY)
    for name, value in (("iterations", iterations), ("tile_size", 64), ("batch_size", 2),
                        ("preview_every_s", 0.0), ("validate_every", 5)):
        widget.config_widgets[name].value = value
    return widget, image_layer, labels_layer, instances


def errors_since(start: int) -> list[str]:
    return [n.message for n in notification_manager.records[start:]
            if n.severity == NotificationSeverity.ERROR]


def foreground(model, image: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(normalize(image))[None, None]
    with torch.no_grad():
        return torch.softmax(model(x), 1)[0, 1].numpy()


# -- pure helpers -------------------------------------------------------------------------------
def test_arrange_image_puts_channels_before_the_plane():
    img = np.zeros((3, 8, 9))
    assert arrange_image(img, False, (8, 9))[1] == 0
    stack = np.zeros((5, 8, 9))
    out, axis = arrange_image(stack, False, (5, 8, 9))
    assert out is stack and axis is None
    zc = np.arange(5 * 2 * 8 * 9).reshape(5, 2, 8, 9)
    out, axis = arrange_image(zc, False, (5, 8, 9))
    assert axis == 1 and out.shape == (5, 2, 8, 9)
    cz = np.moveaxis(zc, 1, 0)  # (C, Z, H, W)
    out, axis = arrange_image(cz, False, (5, 8, 9))
    assert axis == 1 and np.array_equal(out, zc)
    rgb = np.arange(8 * 9 * 3).reshape(8, 9, 3)
    out, axis = arrange_image(rgb, True, (8, 9))
    assert axis == 0 and out.shape == (3, 8, 9) and out[2, 1, 1] == rgb[1, 1, 2]
    with pytest.raises(ValueError, match="does not match"):
        arrange_image(img, False, (8, 8))
    with pytest.raises(ValueError, match="2D or a 3D stack"):
        arrange_image(np.zeros((2, 2, 8, 9)), False, (2, 2, 8, 9))


def test_labels_mode_counts_classes():
    labels = np.array([[0, 1, 3], [255, 2, 0]])
    assert labels_mode("sparse", labels) == ("instances", 2)
    assert labels_mode("semantic", labels) == ("semantic", 4)  # 0..3, 255 ignored
    assert labels_mode("semantic-sparse", labels[:1]) == ("semantic", 3)  # painted 3 = class 2
    assert labels_mode("semantic-sparse", labels[:1, :2]) == ("semantic", 2)
    assert labels_mode("semantic-sparse", labels, ["bg", "a", "b", "c", "d"]) == ("semantic", 5)


def test_preview_region_follows_the_view_within_limits():
    # Zoomed in: the visible 100x80 box around (200, 300).
    assert preview_region((200, 300), (100, 80), (1000, 1000)) == (slice(150, 250),
                                                                    slice(260, 340))
    # Zoomed out on a big image: 512 px around the centre.
    assert preview_region((500, 500), (1000, 1000), (1000, 1000)) == (slice(244, 756),
                                                                      slice(244, 756))
    # Near the border: shifted inside; tiny view: at least 64 px.
    assert preview_region((5, 995), (10, 10), (1000, 1000)) == (slice(0, 64), slice(936, 1000))
    # Small image: the whole image.
    assert preview_region((20, 20), (500, 500), (40, 30)) == (slice(0, 40), slice(0, 30))


# -- loss plot ------------------------------------------------------------------------------------
def test_loss_plot_collects_and_smooths_points(qtbot):
    plot = LossPlot(smoothing=0.5)
    qtbot.addWidget(plot)
    plot.show()
    for step, loss in enumerate([4.0, 2.0, float("nan"), 1.0], start=1):
        plot.add_loss(step, loss)
    np.testing.assert_array_equal(plot.steps, [1, 2, 4])  # NaN dropped
    np.testing.assert_array_equal(plot.losses, [4.0, 2.0, 1.0])
    np.testing.assert_allclose(plot._smooth_line.get_ydata(), [])  # not drawn yet
    plot.redraw()
    np.testing.assert_allclose(plot._smooth_line.get_ydata(), [4.0, 3.0, 2.0])  # EMA by hand
    drawn = plot.draw_count
    plot.redraw()
    assert plot.draw_count == drawn  # nothing new, no redraw
    plot.add_validation(5, {"loss": 0.5, "iou": 0.2})
    plot.add_validation(6, {})
    assert plot.validation[0].tolist() == [5] and plot.validation[1].tolist() == [0.5]
    plot.clear()
    assert plot.steps.size == 0 and plot.validation[0].size == 0
    with pytest.raises(ValueError, match="max_fps"):
        LossPlot(max_fps=0)


def test_loss_plot_blits_while_the_axes_stay_put(qtbot):
    plot = LossPlot()
    qtbot.addWidget(plot)
    plot.show()
    plot.set_total(500)
    plot.add_loss(1, 1.0)
    plot.redraw()
    qtbot.waitUntil(lambda: plot.full_draw_count >= 1)
    full = plot.full_draw_count
    assert plot.axes.get_xlim() == (0.0, 500.0)  # the whole run at once
    for step in range(2, 60):
        plot.add_loss(step, 1.0 / step)  # 0.017..0.5: inside the initial 0.01..10
        plot.redraw()
    assert plot.full_draw_count == full  # all blits
    assert plot.axes.get_ylim() == pytest.approx((0.01, 10.0))
    plot.add_loss(60, 25.0)  # above 10: the axis grows by a decade, one full draw
    plot.redraw()
    assert plot.axes.get_ylim() == pytest.approx((0.01, 100.0))
    assert plot.full_draw_count == full + 1
    plot.set_total(None)
    plot.add_loss(250, 0.5)  # long runs: x doubles from 100
    plot.redraw()
    assert plot.axes.get_xlim() == (0.0, 400.0)


# -- session --------------------------------------------------------------------------------------
def test_session_labels_round_trip_with_convention(tmp_path):
    session = Session(tmp_path / "s")
    assert session.load_labels() is None
    labels = np.array([[0, 1, 2], [70000, 0, 3]])
    session.save_labels(labels, "sparse")
    back, convention = session.load_labels()
    assert convention == "sparse" and back.dtype == np.int32
    np.testing.assert_array_equal(back, labels)
    session.save_labels(labels[:, :2] % 5, "dense")  # replaced atomically, no temp left
    assert session.load_labels()[1] == "dense"
    assert sorted(p.name for p in session.folder.iterdir()) == ["training_labels.tif"]
    with pytest.raises(ValueError, match="convention"):
        session.save_labels(labels, "weird")
    with pytest.raises(ValueError, match="integers"):
        session.save_labels(labels.astype(float), "dense")


def test_session_folder_next_to_the_image_or_per_user(tmp_path):
    image_file = tmp_path / "data" / "cells.ome.tif"
    image_file.parent.mkdir()
    image_file.write_bytes(b"")
    assert Session.for_image("cells", image_file).folder == tmp_path / "data" / "cells.napari-unet"
    user = Session.for_image("my image/1", None).folder
    assert user == tmp_path / "sessions" / "my_image_1"  # the env var set by the fixture


# -- the dock --------------------------------------------------------------------------------------
@pytest.mark.gui
def test_dock_opens_from_the_manifest_and_binds_the_config(make_napari_viewer):
    viewer = make_napari_viewer()
    widget, image_layer, labels_layer, _ = open_dock(viewer)
    assert isinstance(widget, TrainWidget)
    assert widget.image_combo.currentText() == "cells"
    assert widget.labels_combo.currentText() == "training"
    assert widget.convention_combo.currentText() == "sparse"  # from the layer metadata
    assert widget.device_label.text() == "device: cpu"

    widget.preset_combo.setCurrentText("paper")
    paper = TrainConfig.paper()
    for name in ("batch_size", "tile_size", "lr", "w0", "sigma", "iterations"):
        assert widget.config_widgets[name].value == pytest.approx(getattr(paper, name)), name
    assert widget.augment_toggles["intensity"].value is False
    assert widget.config() == paper

    widget.preset_combo.setCurrentText("fast")
    widget.config_widgets["lr"].value = 0.00025
    widget.config_widgets["w0"].value = 7.5
    widget.augment_toggles["elastic"].value = False
    widget.augment_toggles["intensity"].value = False
    config = widget.config()
    assert config.optimizer == "adam" and config.lr == pytest.approx(0.00025)
    assert config.w0 == 7.5 and config.augment.elastic is False
    assert config.augment.flips is True and config.augment.has_intensity is False

    widget.convention_combo.setCurrentText("dense")
    assert labels_layer.metadata[CONVENTION_KEY] == "dense"  # remembered with the layer


@pytest.mark.gui
def test_train_20_steps_then_the_saved_model_predicts(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    widget, image_layer, labels_layer, instances = open_dock(viewer)
    # Paint programmatically as a user would: a background stroke and a new object.
    labels_layer.paint((60, 10), 1)
    labels_layer.paint((5, 5), int(labels_layer.data.max()) + 1)
    with qtbot.waitSignal(widget.job_finished, timeout=180_000):
        assert widget.start()
        assert not widget.start_button.isEnabled() and widget.stop_button.isEnabled()
        assert not widget.save_button.isEnabled()
    assert widget.worker is None and widget.start_button.isEnabled()
    assert widget.trainer.step == 20
    np.testing.assert_array_equal(widget.loss_plot.steps, np.arange(1, 21))
    assert np.isfinite(widget.loss_plot.losses).all()
    assert widget.loss_plot.validation[0].size >= 1  # validated every 5 steps
    assert widget.progress.value() == 20 and widget.progress.maximum() == 20

    with qtbot.waitSignal(widget.saved, timeout=60_000) as saved:
        widget.save_model(tmp_path / "mine.pt")
    model, meta = load_model(saved.args[0])
    assert meta["step"] == 20 and meta["mode"] == "instances"
    for a, b in zip(widget.trainer.model.state_dict().values(), model.state_dict().values(),
                    strict=True):
        assert torch.equal(a.cpu(), b)
    probs = foreground(model, image_layer.data)
    assert probs.shape == (64, 64) and np.isfinite(probs).all()
    assert 0.0 <= probs.min() and probs.max() <= 1.0
    # The labels were autosaved with the session, in their convention.
    restored, convention = widget.session.load_labels()
    assert convention == "sparse"
    np.testing.assert_array_equal(restored, labels_layer.data)


@pytest.mark.gui
def test_stop_mid_training_autosaves_a_model_that_predicts(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget, image_layer, _, _ = open_dock(viewer, iterations=LONG)
    assert widget.start()
    qtbot.waitUntil(lambda: widget.trainer is not None and widget.trainer.step >= 3,
                    timeout=120_000)
    with qtbot.waitSignal(widget.job_finished, timeout=120_000):
        widget.stop()
    assert widget.worker is None
    step = widget.trainer.step
    assert 3 <= step < LONG
    model, meta = load_model(widget.session.model_path)
    assert meta["step"] == step  # saved after the worker stopped: consistent
    assert foreground(model, image_layer.data).shape == (64, 64)
    # The next Start continues from the autosaved weights.
    assert widget.model_choice.current_source() == "file"
    assert widget.model_choice.spec().path == str(widget.session.model_path)
    assert widget.save_button.isEnabled() and widget.start_button.isEnabled()


@pytest.mark.gui
def test_live_preview_layer_updates_in_place(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget, image_layer, _, _ = open_dock(viewer, iterations=LONG)
    assert widget.start()
    qtbot.waitUntil(lambda: widget.preview_updates >= 1, timeout=120_000)
    layer = widget.preview_layer
    seen = []
    layer.events.data.connect(lambda e: seen.append(e))
    qtbot.waitUntil(lambda: len(seen) >= 2, timeout=120_000)
    widget.stop()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=120_000)
    previews = [lay for lay in viewer.layers if lay.name.endswith("U-Net preview")]
    assert previews == [layer]  # one layer, its data replaced
    assert layer.data.shape == (64, 64)  # the whole (small) view
    assert layer.data.dtype == np.float32
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
    before = samples.n_annotated_pixels
    assert before == 64 * 32
    edited = sparse_labels(instances, 48)  # annotate 16 more columns
    with qtbot.waitSignal(widget.labels_updated, timeout=60_000) as update:
        labels_layer.data = edited  # napari's data event, like a fill or an undo
    assert update.args == [64 * 48]
    assert samples.n_annotated_pixels == 64 * 48
    # ...and a brush stroke (napari's paint event) too.
    labels_layer.brush_size = 1
    with qtbot.waitSignal(widget.labels_updated, timeout=60_000) as update:
        labels_layer.paint((10, 60), 1)
    assert update.args == [64 * 48 + 1]
    steps_before = widget.trainer.step
    qtbot.waitUntil(lambda: widget.trainer.step > steps_before + 3, timeout=120_000)
    with qtbot.waitSignal(widget.job_finished, timeout=120_000):
        widget.stop()
    restored, _ = widget.session.load_labels()  # the edit was autosaved as well
    np.testing.assert_array_equal(restored, labels_layer.data)


@pytest.mark.gui
def test_bad_input_notifies_and_starts_nothing(make_napari_viewer):
    viewer = make_napari_viewer()
    widget, image_layer, labels_layer, _ = open_dock(viewer)

    def refused(match: str) -> None:
        start = len(notification_manager.records)
        assert widget.start() is False
        assert widget.worker is None and widget.trainer is None
        errors = errors_since(start)
        assert len(errors) == 1 and match in errors[0], errors

    small = viewer.add_labels(np.ones((32, 32), np.int32), name="other shape")
    widget.labels_combo.setCurrentText(small.name)
    refused("does not match image shape")
    empty = viewer.add_labels(np.zeros((64, 64), np.int32), name="empty")
    widget.labels_combo.setCurrentText(empty.name)
    refused("no annotation yet")
    only_background = viewer.add_labels(np.ones((64, 64), np.int32), name="background only",
                                        metadata={CONVENTION_KEY: "sparse"})
    widget.labels_combo.setCurrentText(only_background.name)
    refused("only one class annotated")
    widget.labels_combo.setCurrentText(labels_layer.name)
    widget.config_widgets["sigma"].value = 0.0
    refused("sigma must be")
    widget.config_widgets["sigma"].value = 5.0

    points = viewer.add_points([[1, 1]], name="points")
    with pytest.raises(ValueError, match="not an image layer"):
        widget._prepare_layers(points, labels_layer)
    viewer.layers.remove(image_layer)  # only non-image layers left
    assert widget.image_combo.count() == 0
    refused("choose an image layer")
    assert not any(lay.name.endswith("preview") for lay in viewer.layers)


@pytest.mark.gui
def test_closing_the_dock_stops_training_and_frees_it(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget, _, _, _ = open_dock(viewer, iterations=LONG)
    assert widget.start()
    qtbot.waitUntil(lambda: widget.trainer is not None and widget.trainer.step >= 2,
                    timeout=120_000)
    worker = widget.worker
    session = widget.session
    viewer.window.remove_dock_widget(widget)
    assert not worker.is_running and widget.worker is None
    assert widget.trainer is None and widget.samples is None  # memory released
    _, meta = load_model(session.model_path)  # the training was saved on the way out
    assert meta["step"] >= 2


@pytest.mark.gui
def test_closing_the_viewer_stops_training(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget, _, _, _ = open_dock(viewer, iterations=LONG)
    assert widget.start()
    qtbot.waitUntil(lambda: widget.trainer is not None and widget.trainer.step >= 1,
                    timeout=120_000)
    worker = widget.worker
    viewer.close()
    assert not worker.is_running and widget.trainer is None


@pytest.mark.gui
def test_restore_session_brings_back_labels_and_model(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget, image_layer, labels_layer, _ = open_dock(viewer, iterations=3)
    with qtbot.waitSignal(widget.job_finished, timeout=180_000):
        assert widget.start()
    painted = np.array(labels_layer.data)
    viewer.layers.remove(labels_layer)
    widget.model_choice.set_source("small")
    assert widget.restore_button.isEnabled()
    widget.restore_session()
    restored = viewer.layers[widget.labels_combo.currentText()]
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
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet", "Train")
    widget.model_choice.set_source("small")
    widget.model_choice.overrides = dict(TINY)
    for name, value in (("iterations", 4), ("tile_size", 64), ("batch_size", 1),
                        ("preview_every_s", 0.0), ("validate_every", 0)):
        widget.config_widgets[name].value = value
    viewer.dims.set_current_step(0, 2)
    with qtbot.waitSignal(widget.job_finished, timeout=180_000):
        assert widget.start()
    assert widget.samples.n_samples == 1  # the two empty slices are not training data
    assert widget.trainer.step == 4
    assert widget.preview_updates >= 1
    assert widget.preview_layer.data.shape == (64, 64)
    assert widget.preview_region == (2, slice(0, 64), slice(0, 64))  # the slice in view


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
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet", "Train")
    widget.labels_combo.setCurrentText("classes")
    assert widget.image_combo.currentText() == "cells"  # named by the labels layer
    assert widget.convention_combo.currentText() == "semantic-sparse"
    widget.model_choice.set_source("modified")
    widget.model_choice.overrides = dict(TINY)
    for name, value in (("iterations", 3), ("tile_size", 64), ("batch_size", 1),
                        ("validate_every", 0)):
        widget.config_widgets[name].value = value
    with qtbot.waitSignal(widget.job_finished, timeout=180_000):
        assert widget.start()
    model, meta = load_model(widget.session.model_path)
    assert model.num_classes == 3 and meta["mode"] == "semantic"
    assert meta["class_names"] == names
    assert meta["pixel_size"] == 0.5
