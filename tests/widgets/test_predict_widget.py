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

    from napari_unet.core.checkpoint import save_model
    from napari_unet.core.model import UNet

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
    widget.form.set_value("uncertainty", True)
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
