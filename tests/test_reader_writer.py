import numpy as np
import pytest
import tifffile

from napari_unet._writer import labels_axes_and_pixel_size, napari_write_labels
from napari_unet.core.io.images import read_image


@pytest.fixture
def zcyx_tiff(tmp_path):
    img = np.arange(3 * 2 * 16 * 20, dtype=np.uint16).reshape(3, 2, 16, 20)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, img, imagej=True, resolution=(1 / 0.25, 1 / 0.25),
                     metadata={"axes": "ZCYX", "spacing": 2.0, "unit": "um"})
    return path, img


IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp", ".gif")


def test_napari_reads_plain_images_without_asking(tmp_path):
    """napari-unet contributes no reader: napari resolves each image to exactly one reader (its
    own, or another plugin the user installed), so it never shows "Choose reader"."""
    from pathlib import Path

    import npe2

    import napari_unet

    ours = npe2.PluginManifest.from_file(Path(napari_unet.__file__).with_name("napari.yaml"))
    assert not ours.contributions.readers
    pm = npe2.PluginManager.instance()
    pm.discover()
    for suffix in IMAGE_SUFFIXES:
        found = pm.iter_compatible_readers([str(tmp_path / f"a{suffix}")])
        readers = [r.plugin_name for r in found]
        assert ours.name not in readers and "napari" in readers, (suffix, readers)


def test_writer_axes_and_pixel_size():
    assert labels_axes_and_pixel_size(2, {"scale": (1.0, 1.0)}) == ("YX", None)
    assert labels_axes_and_pixel_size(3, {"scale": (2.0, 0.5, 0.5)}) == ("ZYX", (2.0, 0.5, 0.5))
    meta = {"scale": (1.0, 0.5, 0.5), "metadata": {"napari_unet_axes": "TYX"}}
    assert labels_axes_and_pixel_size(3, meta) == ("TYX", (0.5, 0.5))
    with pytest.raises(ValueError, match="5D"):
        labels_axes_and_pixel_size(5, {})


def test_writer_function_round_trip(tmp_path):
    labels = np.zeros((3, 10, 12), np.int32)
    labels[1, 2:5, 3:7] = 7
    out, = napari_write_labels(str(tmp_path / "l.tif"), labels, {"scale": (2.0, 0.5, 0.5)})
    back = read_image(out)
    np.testing.assert_array_equal(back.array, labels)
    assert back.axes == "ZYX" and back.pixel_size == pytest.approx((2.0, 0.5, 0.5))


@pytest.mark.gui
def test_napari_opens_tiff_and_docks_get_pixel_size(make_napari_viewer, zcyx_tiff, tmp_path,
                                                   monkeypatch, qtbot):
    """The napari reader path: viewer.open picks napari's reader with no question; the layer
    knows its file, so the docks find the axes and pixel size there; labels saved with our
    writer keep the pixel size."""
    from napari_unet._widgets.layer_info import layer_geometry
    from napari_unet._widgets.settings import ENV_VAR

    monkeypatch.setenv(ENV_VAR, str(tmp_path / "docks.ini"))  # not the user's settings
    path, img = zcyx_tiff
    viewer = make_napari_viewer()
    layer, = viewer.open(str(path))
    assert layer.source.reader_plugin == "napari"
    np.testing.assert_array_equal(layer.data, img)
    geometry = layer_geometry(layer)
    assert geometry.axes == "ZCYX" and geometry.channel_axis == 1
    assert geometry.pixel_size == pytest.approx(0.25) and geometry.origin == "file"

    _, predict = viewer.window.add_plugin_dock_widget("napari-original-unet", "Predict")
    predict.image_combo.value = layer
    assert predict.channel_combo.value == 1  # preselected from the file's axes
    assert predict._config(layer).pixel_size == pytest.approx(0.25)
    request, _ = predict._request_for(layer)
    config = predict._config(layer, request)
    assert config.channel_axis == 1 and config.axes == "ZCYX"
    assert config.z_spacing == pytest.approx(2.0 / 0.25)

    # predict one channel of the hyperstack: the labels layer knows its axes for the writer
    import torch

    from napari_unet.core.model.checkpoint import save_model
    from napari_unet.core.model.unet import UNet

    torch.manual_seed(0)
    save_model(tmp_path / "tiny.pt", UNet(1, 2, base_channels=4, depth=2))
    predict.model_choice.set_source("file", str(tmp_path / "tiny.pt"))
    predict.channel_pick.value = 0
    assert predict.run() is not None
    qtbot.waitUntil(lambda: not predict.runner.running, timeout=30000)
    labels_layer = viewer.layers["stack prediction"]
    assert labels_layer.data.shape == (3, 16, 20)
    assert labels_layer.metadata["napari_unet_axes"] == "ZYX"
    # napari's reader left the scale at 1: the pixel size from the file still reaches the file
    saved = tmp_path / "predicted.tif"
    napari_write_labels(str(saved), labels_layer.data, {
        "scale": tuple(labels_layer.scale), "metadata": dict(labels_layer.metadata)})
    from napari_unet.core.io.images import read_image

    back = read_image(saved)
    assert back.axes == "ZYX" and back.pixel_size == pytest.approx((2.0, 0.25, 0.25))

    png = tmp_path / "plane.png"
    import imageio.v3 as iio

    iio.imwrite(png, np.zeros((12, 14), np.uint8))
    plane, = viewer.open(str(png))
    assert plane.source.reader_plugin == "napari" and layer_geometry(plane).pixel_size is None

    labels = np.zeros(img[:, 0].shape, np.int32)
    labels[1, 3:9, 4:12] = 3
    out = tmp_path / "objects.tif"
    napari_write_labels(str(out), labels, {"scale": (2.0, 0.25, 0.25)})
    reopened, = viewer.open(str(out))
    np.testing.assert_array_equal(reopened.data, labels)
    assert layer_geometry(reopened).pixel_size == pytest.approx(0.25)


def test_scale_with_units_wins_over_the_file(tmp_path):
    from napari.layers import Image

    from napari_unet._widgets.layer_info import layer_geometry

    layer = Image(np.zeros((4, 4)), scale=(300.0, 300.0), units=("nm", "nm"))
    assert layer_geometry(layer).pixel_size == pytest.approx(0.3)
    assert layer_geometry(layer).origin == "scale"
    assert layer_geometry(Image(np.zeros((4, 4)))).pixel_size is None


def test_real_nuclei_sample_has_labels_and_pixel_size():
    from napari_unet._sample_data import nuclei_cells3d_sample

    (image, image_kw, image_kind), (labels, labels_kw, labels_kind) = nuclei_cells3d_sample()
    assert image_kind == "image" and labels_kind == "labels"
    assert image.shape == labels.shape == (256, 256)
    assert len(np.unique(labels)) - 1 == 20 and labels.max() == 20
    assert image_kw["scale"] == labels_kw["scale"] == pytest.approx((0.26, 0.26))
    assert "Allen Institute" in image_kw["metadata"]["credit"]
