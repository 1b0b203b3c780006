import numpy as np
import pytest

from napari_unet._widgets import CLASS_NAMES_KEY, CONVENTION_KEY, ROLE_KEY
from napari_unet._widgets.annotate import parse_class_names
from napari_unet._widgets.training_layers import is_training_layer


# -- pure helpers (no viewer) ----------------------------------------------------------------
def test_class_names():
    assert parse_class_names("background, nucleus;membrane") == ["background", "nucleus",
                                                                 "membrane"]
    with pytest.raises(ValueError, match="at least two"):
        parse_class_names("background")
    with pytest.raises(ValueError, match="distinct"):
        parse_class_names("a, a")


# -- the dock ----------------------------------------------------------------------------------
def _dock(viewer):
    _, widget = viewer.window.add_plugin_dock_widget("napari-original-unet", "Annotate")
    return widget


@pytest.mark.gui
def test_annotate_creates_matching_layer_and_buttons(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    image = viewer.add_image(np.random.rand(3, 24, 32).astype(np.float32), name="cells",
                             scale=(2.0, 0.5, 0.5), translate=(0, 4, 8))
    widget = _dock(viewer)
    assert widget.image_combo.value is image
    layer = widget.create_training_layer()
    assert layer.data.shape == (3, 24, 32) and layer.data.max() == 0
    assert tuple(layer.scale) == (2.0, 0.5, 0.5) and tuple(layer.translate) == (0, 4, 8)
    assert layer.metadata[CONVENTION_KEY] == "sparse" and is_training_layer(layer)
    assert widget.labels_combo.value.name == layer.name

    widget.paint_background()
    assert layer.selected_label == 1 and layer.mode == "paint"
    widget.new_object()
    assert layer.selected_label == 2
    layer.data[1, 0:4, 0:4] = 1
    layer.data[1, 10:14, 10:14] = 2
    layer.data[0, 5:7, 5:7] = 3
    widget.new_object()
    assert layer.selected_label == 4

    viewer.dims.set_point(0, 2.0)  # world z = 2.0 -> slice 1 at scale 2
    counts = widget.update_counts()
    assert counts == {"annotated": 36, "background": 16, "objects": 2}
    assert "this slice: 32 px, 1 objects" in widget.counts_label.text()


@pytest.mark.gui
def test_counts_update_on_paint(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((16, 16), np.float32), name="img")
    widget = _dock(viewer)
    layer = widget.create_training_layer()
    layer.paint((8, 8), 5)  # napari's own brush: emits the paint event
    qtbot.waitUntil(lambda: "objects" in widget.counts_label.text()
                    and not widget.counts_label.text().startswith("0 px"), timeout=3000)
    assert widget.update_counts()["objects"] == 1


@pytest.mark.gui
def test_multichannel_and_rgb_images(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((2, 20, 24), np.float32), name="two channels")
    widget = _dock(viewer)
    widget.channel_combo.value = 0
    layer = widget.create_training_layer()
    assert layer.data.shape == (20, 24)
    rgb = viewer.add_image(np.zeros((10, 12, 3), np.uint8), name="rgb", rgb=True)
    widget.image_combo.value = rgb
    assert widget.create_training_layer().data.shape == (10, 12)


@pytest.mark.gui
def test_class_mode(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((16, 16), np.float32), name="img")
    widget = _dock(viewer)
    widget.mode_combo.value = "semantic"
    widget.class_names_edit.setText("background, nucleus, membrane")
    widget._on_class_names_edited()
    layer = widget.create_training_layer()
    assert layer.metadata[CONVENTION_KEY] == "semantic-sparse"
    assert layer.metadata[CLASS_NAMES_KEY] == ["background", "nucleus", "membrane"]
    widget.class_combo.value = 2
    widget.paint_class()
    assert layer.selected_label == 3
    widget.class_combo.value = 0
    widget.paint_class()
    assert layer.selected_label == 1


@pytest.mark.gui
def test_use_prediction_new_layer_and_confirmed_slice(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((2, 8, 8), np.float32), name="img")
    pred = np.zeros((2, 8, 8), np.int32)
    pred[0, 1:3, 1:3] = 1
    pred[1, 4:6, 4:6] = 2
    viewer.add_labels(pred, name="img prediction", metadata={ROLE_KEY: "prediction"})
    widget = _dock(viewer)
    assert widget.labels_combo.value is None
    widget.slice_only.setChecked(False)
    layer = widget.use_prediction()  # no training layer yet: a new one
    np.testing.assert_array_equal(layer.data, pred + 1)
    assert is_training_layer(layer) and widget.labels_combo.value.name == layer.name

    # Existing annotations: only after confirmation, and only on the current slice.
    layer.data = np.zeros_like(layer.data)
    layer.data[1, 0, 0] = 1
    widget.slice_only.setChecked(True)
    viewer.dims.set_point(0, 1)
    widget.confirm = lambda text: False
    widget.use_prediction()
    assert layer.data.sum() == 1  # refused: unchanged
    widget.confirm = lambda text: True
    widget.use_prediction()
    np.testing.assert_array_equal(layer.data[1], pred[1] + 1)
    assert layer.data[0].max() == 0


@pytest.mark.gui
def test_use_prediction_is_undone_exactly_by_ctrl_z(make_napari_viewer):
    """One undo step after "use prediction" restores the painted labels exactly, an older
    brush stroke stays where it was, and redo brings the prediction back."""
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((3, 12, 12), np.float32), name="img")
    pred = np.zeros((3, 12, 12), np.int32)
    pred[:, 2:6, 2:6] = 1
    pred[:, 7:11, 6:10] = 2
    viewer.add_labels(pred, name="img prediction", metadata={ROLE_KEY: "prediction"})
    widget = _dock(viewer)
    widget.image_combo.value = viewer.layers["img"]
    layer = widget.create_training_layer()
    viewer.dims.set_point(0, 1)
    layer.brush_size = 1
    layer.paint((1, 0, 0), 1)  # older brush strokes (each its own undo step)
    layer.paint((1, 3, 3), 5)
    painted = layer.data.copy()
    assert painted[1, 3, 3] == 5 and painted[1, 0, 0] == 1

    widget.confirm = lambda text: True
    for slice_only in (True, False):
        widget.slice_only.setChecked(slice_only)
        widget.prediction_combo.value = viewer.layers["img prediction"]
        widget.use_prediction()
        expected = painted.copy()
        if slice_only:
            expected[1] = pred[1] + 1
        else:
            expected = pred + 1
        np.testing.assert_array_equal(layer.data, expected)
        viewer.layers.selection.active = layer
        layer.undo()  # what Ctrl+Z does on the active labels layer
        np.testing.assert_array_equal(layer.data, painted)
        layer.redo()
        np.testing.assert_array_equal(layer.data, expected)
        layer.undo()
    layer.undo()  # the older stroke comes off by itself, not replayed onto the prediction
    assert layer.data[1, 3, 3] == 0 and layer.data[1, 0, 0] == 1


@pytest.mark.gui
def test_bad_input_notifies(make_napari_viewer, monkeypatch):
    from napari_unet._widgets import _jobs

    errors = []
    monkeypatch.setattr(_jobs.notifications, "show_error", errors.append)
    viewer = make_napari_viewer()
    widget = _dock(viewer)
    assert widget.create_training_layer() is None  # no image
    widget.new_object()  # no training layer
    viewer.add_image(np.zeros((8, 8), np.float32), name="img")
    viewer.add_labels(np.zeros((4, 4), np.int32), name="small prediction")
    widget.create_training_layer()
    widget.prediction_combo.value = viewer.layers["small prediction"]
    n_layers = len(viewer.layers)
    assert widget.use_prediction() is None  # shape mismatch
    assert len(viewer.layers) == n_layers
    assert any("choose an image" in e for e in errors)
    assert any("create one first" in e for e in errors)
    assert any("shape (4, 4)" in e for e in errors)
