import numpy as np
import pytest
import tifffile

from napari_unet._reader import layer_data, napari_get_reader
from napari_unet._writer import labels_axes_and_pixel_size, napari_write_labels
from napari_unet.core.io import read_image


@pytest.fixture
def zcyx_tiff(tmp_path):
    img = np.arange(3 * 2 * 16 * 20, dtype=np.uint16).reshape(3, 2, 16, 20)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, img, imagej=True, resolution=(1 / 0.25, 1 / 0.25),
                     metadata={"axes": "ZCYX", "spacing": 2.0, "unit": "um"})
    return path, img


def test_get_reader_only_for_images(tmp_path):
    assert napari_get_reader(str(tmp_path / "a.tif")) is not None
    assert napari_get_reader([str(tmp_path / "a.TIFF"), str(tmp_path / "b.png")]) is not None
    assert napari_get_reader(str(tmp_path / "a.czi")) is None
    assert napari_get_reader([str(tmp_path / "a.tif"), str(tmp_path / "b.npy")]) is None


def test_multichannel_stack_layer_data(zcyx_tiff):
    path, img = zcyx_tiff
    (data, kwargs, kind), = napari_get_reader(str(path))(str(path))
    assert kind == "image"
    np.testing.assert_array_equal(data, img)
    assert kwargs["channel_axis"] == 1
    assert kwargs["scale"] == pytest.approx((2.0, 0.25, 0.25))
    assert kwargs["name"] == ["stack [ch0]", "stack [ch1]"]
    assert kwargs["metadata"]["napari_unet_axes"] == "ZYX"


def test_integer_file_named_labels_opens_as_labels(tmp_path):
    path = tmp_path / "cells_labels.tif"
    tifffile.imwrite(path, np.ones((8, 8), np.uint16))
    _, kwargs, kind = layer_data(read_image(path), path)
    assert kind == "labels" and kwargs["name"] == "cells_labels"


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
def test_viewer_round_trip_keeps_data_and_scale(make_napari_viewer, zcyx_tiff, tmp_path):
    path, img = zcyx_tiff
    viewer = make_napari_viewer()
    layers = viewer.open(str(path), plugin="napari-unet")
    assert len(layers) == 2
    np.testing.assert_array_equal(layers[1].data, img[:, 1])
    assert tuple(layers[0].scale) == pytest.approx((2.0, 0.25, 0.25))

    labels = np.zeros(img[:, 0].shape, np.int32)
    labels[1, 3:9, 4:12] = 3
    layer = viewer.add_labels(labels, scale=layers[0].scale, name="objects")
    out = tmp_path / "objects.tif"
    layer.save(str(out), plugin="napari-unet")
    reopened, = viewer.open(str(out), plugin="napari-unet")
    np.testing.assert_array_equal(reopened.data, labels)
    assert tuple(reopened.scale) == pytest.approx((2.0, 0.25, 0.25))


def test_real_nuclei_sample_has_labels_and_pixel_size():
    from napari_unet._sample_data import nuclei_cells3d_sample

    (image, image_kw, image_kind), (labels, labels_kw, labels_kind) = nuclei_cells3d_sample()
    assert image_kind == "image" and labels_kind == "labels"
    assert image.shape == labels.shape == (256, 256)
    assert len(np.unique(labels)) - 1 == 20 and labels.max() == 20
    assert image_kw["scale"] == labels_kw["scale"] == pytest.approx((0.26, 0.26))
    assert "Allen Institute" in image_kw["metadata"]["credit"]
