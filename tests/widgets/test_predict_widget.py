import numpy as np
import pytest

from napari_unet._widgets import ROLE_KEY
from napari_unet._widgets.predict import PredictInput, place, prediction_input


# -- pure helpers ----------------------------------------------------------------------------
def test_prediction_input_whole_and_slice():
    data = np.zeros((4, 2, 16, 20))
    whole = prediction_input(data, 1, False, None)
    assert whole.array.shape == data.shape and whole.channel_axis == 1
    assert whole.in_channels == 2 and whole.out_shape == (4, 16, 20) and whole.index == ()
    one = prediction_input(data, 1, False, (3,))
    assert one.array.shape == (2, 16, 20) and one.channel_axis == 0 and one.index == (3,)
    rgb = prediction_input(np.zeros((8, 9, 3)), None, True, (0,))
    assert rgb.in_channels == 3 and rgb.channel_axis == 2 and rgb.out_shape == (8, 9)
    plain = prediction_input(np.zeros((5, 8, 9)), None, False, (2,))
    assert plain.array.shape == (8, 9) and plain.out_shape == (5, 8, 9)
    with pytest.raises(ValueError, match="no 2D plane"):
        prediction_input(np.zeros((3, 9)), 0, False, None)
    with pytest.raises(ValueError, match="current slice"):
        prediction_input(np.zeros((2, 3, 8, 9)), None, False, None)


def test_place_slice_into_stack():
    request = PredictInput(None, None, 1, (1,), (3, 2, 2))
    out = place(np.array([[1, 2], [3, 4]]), request)
    assert out.shape == (3, 2, 2) and out[1].tolist() == [[1, 2], [3, 4]] and out[0].max() == 0


# -- the dock ----------------------------------------------------------------------------------
@pytest.fixture
def tiny_model(tmp_path):
    import torch

    from napari_unet.core.model.checkpoint import save_model
    from napari_unet.core.model.unet import UNet

    torch.manual_seed(0)
    model = UNet(1, 2, base_channels=4, depth=2)
    path = tmp_path / "tiny.pt"
    save_model(path, model)
    return path


def _dock(viewer, model_path):
    _, widget = viewer.window.add_plugin_dock_widget("napari-original-unet", "Predict")
    widget.model_choice.set_source("file", str(model_path))
    return widget


def _wait(qtbot, widget):
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=20000)


@pytest.mark.gui
def test_predict_makes_labels_layer_with_image_shape(make_napari_viewer, qtbot, tiny_model):
    viewer = make_napari_viewer()
    image = np.random.default_rng(0).random((40, 48)).astype(np.float32)
    viewer.add_image(image, name="cells", scale=(0.5, 0.5))
    widget = _dock(viewer, tiny_model)
    widget.form.set_value("probabilities", True)
    widget.form.set_value("uncertainty_layer", True)
    worker = widget.run()
    assert worker is not None and not widget.run_button.isEnabled()
    assert widget.stop_button.isEnabled()
    _wait(qtbot, widget)
    labels = viewer.layers["cells prediction"]
    assert labels.data.shape == (40, 48) and labels.metadata[ROLE_KEY] == "prediction"
    assert tuple(labels.scale) == (0.5, 0.5)
    assert viewer.layers["cells probability"].data.shape == (40, 48)
    assert viewer.layers["cells uncertainty"].data.shape == (40, 48)
    assert widget.run_button.isEnabled() and not widget.stop_button.isEnabled()


@pytest.mark.gui
def test_predict_current_slice_of_stack(make_napari_viewer, qtbot, tiny_model):
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(1).random((3, 32, 32)).astype(np.float32),
                     name="stack")
    widget = _dock(viewer, tiny_model)
    widget.form.set_value("scope", "current slice")
    viewer.dims.set_point(0, 2)
    widget.run()
    _wait(qtbot, widget)
    assert viewer.layers["stack prediction"].data.shape == (3, 32, 32)


@pytest.mark.gui
def test_status_shows_where_the_run_is_and_keeps_what_makes_it_slower(
        make_napari_viewer, qtbot, tiny_model, monkeypatch):
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(1).random((3, 32, 32)).astype(np.float32),
                     name="stack")
    widget = _dock(viewer, tiny_model)
    widget.form.set_value("tta", True)
    said = []
    monkeypatch.setattr(widget.block, "say", said.append)
    widget.run()
    _wait(qtbot, widget)
    running = [text for text in said if text.startswith("predicting 'stack' with tiny.pt: ")]
    assert [t.split(": ")[1].split("\n")[0] for t in running][-1] == "slice 3/3"
    # the cost of TTA stays under the progress line; the model's name is said once, up front
    assert all("test-time augmentation" in t.split("\n", 1)[1] for t in running)
    assert not any(text.startswith("model: ") for text in said)


@pytest.mark.gui
def test_stop_ends_worker_and_writes_nothing(make_napari_viewer, qtbot, tiny_model):
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(2).random((30, 64, 64)).astype(np.float32),
                     name="stack")
    widget = _dock(viewer, tiny_model)
    widget.run()
    widget.stop()
    _wait(qtbot, widget)
    assert "stopped" in widget.status.text()
    assert [layer.name for layer in viewer.layers] == ["stack"]
    assert widget.run_button.isEnabled()


@pytest.mark.gui
def test_bad_input_notifies_and_starts_nothing(make_napari_viewer, tmp_path, tiny_model,
                                               monkeypatch):
    from napari_unet._widgets import _jobs

    errors = []
    monkeypatch.setattr(_jobs.notifications, "show_error", errors.append)
    viewer = make_napari_viewer()
    widget = _dock(viewer, tiny_model)
    assert widget.run() is None and "choose an image" in errors[-1]  # no image layer

    viewer.add_image(np.zeros((16, 16), np.float32), name="img")
    widget.model_choice.set_source("file", str(tmp_path / "missing.pt"))
    assert widget.run() is None and "does not exist" in errors[-1]

    widget.model_choice.set_source("file", str(tiny_model))
    viewer.add_labels(np.zeros((8, 8), np.int32), name="other")
    widget.output_combo.value = viewer.layers["other"]
    assert widget.run() is None and "shape (8, 8)" in errors[-1]

    viewer.add_labels(np.zeros((16, 16), np.int32), name="train",
                      metadata={"napari_unet_convention": "sparse"})
    assert "train" not in [c.name for c in widget.output_combo.choices if c is not None]
    assert not widget.runner.running
    assert [layer.name for layer in viewer.layers] == ["img", "other", "train"]


@pytest.mark.gui
def test_existing_layer_only_after_confirmation(make_napari_viewer, qtbot, tiny_model):
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(3).random((32, 32)).astype(np.float32), name="img")
    old = viewer.add_labels(np.full((32, 32), 9, np.int32), name="old result")
    widget = _dock(viewer, tiny_model)
    widget.output_combo.value = viewer.layers["old result"]
    widget.confirm = lambda text: False
    assert widget.run() is None and (old.data == 9).all()
    widget.confirm = lambda text: True
    widget.run()
    _wait(qtbot, widget)
    assert not (old.data == 9).any()  # replaced by the prediction (0 = background, ids)
    old.undo()  # one Ctrl+Z step brings the previous labels back
    assert (old.data == 9).all()
    assert "img prediction" not in [layer.name for layer in viewer.layers]


@pytest.mark.gui
def test_split_touching_checkbox_reaches_the_config(make_napari_viewer, tiny_model):
    viewer = make_napari_viewer()
    layer = viewer.add_image(np.zeros((16, 16), np.float32))
    widget = _dock(viewer, tiny_model)
    assert widget._config(layer).split_touching is True
    widget.form.set_value("split_touching", False)
    assert widget._config(layer).split_touching is False


# -- the docks' job process --------------------------------------------------------------------
@pytest.mark.gui
def test_prediction_runs_in_the_job_process_and_equals_the_thread(make_napari_viewer, qtbot,
                                                                  tiny_model, job_process):
    viewer = make_napari_viewer()
    image = np.random.default_rng(5).random((3, 40, 48)).astype(np.float32)
    viewer.add_image(image, name="cells")
    widget = _dock(viewer, tiny_model)
    widget.run()  # the process is ready: the job goes there
    assert job_process.process.busy
    _wait(qtbot, widget)
    assert not job_process.process.busy
    in_process = np.asarray(viewer.layers["cells prediction"].data).copy()
    viewer.layers.remove("cells prediction")
    job_process.process.close()  # not running: the next job runs in the worker thread
    widget.run()
    assert not job_process.process.busy
    _wait(qtbot, widget)
    np.testing.assert_array_equal(viewer.layers["cells prediction"].data, in_process)
    assert in_process.shape == (3, 40, 48) and in_process.max() > 0


@pytest.mark.gui
def test_stop_in_the_job_process_writes_nothing_and_the_process_goes_on(
        make_napari_viewer, qtbot, tiny_model, job_process):
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(2).random((60, 64, 64)).astype(np.float32),
                     name="stack")
    widget = _dock(viewer, tiny_model)
    pid = job_process.process.pid
    widget.run()
    qtbot.waitUntil(lambda: widget.progress.value() > 0, timeout=30000)  # slices under way
    widget.stop()
    _wait(qtbot, widget)
    assert "stopped" in widget.status.text()
    # the bar stays where the run got to, and says it stopped there
    assert 0 < widget.progress.value() < widget.progress.maximum()
    assert widget.progress.format() == "stopped at %p%"
    assert [layer.name for layer in viewer.layers] == ["stack"]
    qtbot.waitUntil(lambda: not job_process.process.busy, timeout=10000)
    # the same process takes the next job, once the stopped one has ended there
    viewer.layers["stack"].data = viewer.layers["stack"].data[:2]
    widget.run()
    _wait(qtbot, widget)
    assert viewer.layers["stack prediction"].data.shape == (2, 64, 64)
    assert job_process.process.pid == pid


def test_inputs_too_big_to_copy_stay_in_the_thread(monkeypatch, job_process):
    from napari_unet._widgets import _jobs

    request = PredictInput(np.zeros((64, 64), np.float32), None, 1, (), (64, 64))
    factory, on_stop = job_process.background(place, request)
    assert on_stop is not None and job_process.process.busy  # small: the process
    on_stop()  # (never iterated) gives the process back
    assert not job_process.process.busy
    monkeypatch.setattr(_jobs, "PROCESS_COPY_LIMIT", 1000)
    factory, on_stop = job_process.background(place, request)
    assert on_stop is None and not job_process.process.busy  # 16 kB: the worker thread


@pytest.mark.gui
def test_the_diameter_estimate_comes_back_from_the_job_process(make_napari_viewer, qtbot,
                                                               job_process):
    from napari_unet.core.data.synthetic import synthetic_nuclei

    viewer = make_napari_viewer()
    image, _ = synthetic_nuclei((192, 192), seed=3)
    viewer.add_image(image, name="nuclei")
    _, widget = viewer.window.add_plugin_dock_widget("napari-original-unet", "Predict")
    widget.model_choice.set_source("default")
    widget.estimate_diameter()
    assert job_process.process.busy
    _wait(qtbot, widget)
    assert "diameter" in widget.status.text() and "failed" not in widget.status.text()


@pytest.mark.gui
def test_closing_the_dock_mid_prediction_ends_the_process_without_an_error(
        make_napari_viewer, qtbot, tiny_model, job_process, monkeypatch):
    from napari_unet._widgets import _jobs

    errors = []
    monkeypatch.setattr(_jobs.notifications, "show_error", errors.append)
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(2).random((60, 64, 64)).astype(np.float32),
                     name="stack")
    widget = _dock(viewer, tiny_model)
    proc = job_process.process._proc
    runner = widget.runner
    widget.run()
    qtbot.waitUntil(lambda: widget.progress.value() > 0, timeout=30000)
    viewer.window.remove_dock_widget(widget.parent())  # the dock's close button
    widget.deleteLater()
    qtbot.waitUntil(lambda: not proc.is_alive(), timeout=10000)  # the last dock that used it
    qtbot.waitUntil(lambda: not runner.running, timeout=10000)
    assert errors == [] and [layer.name for layer in viewer.layers] == ["stack"]
