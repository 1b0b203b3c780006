"""Layers -> training data for the Train dock (no viewer needed)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from napari_unet._widgets import CLASS_NAMES_KEY
from napari_unet._widgets.train_data import arrange_image, labels_mode, training_data


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


def _layer(data, **kw):
    base = dict(data=data, rgb=False, multiscale=False, scale=(1.0, 1.0), metadata={},
                name="layer")
    base.update(kw)
    return SimpleNamespace(**base)


def test_training_data_copies_the_labels_and_records_the_pixel_size():
    rng = np.random.default_rng(0)
    image = rng.random((32, 32)).astype(np.float32)
    labels = np.zeros((32, 32), np.int32)
    labels[:, :16] = 1  # background
    labels[4:10, 4:10] = 2  # one object
    painted = labels.copy()
    data = training_data(_layer(image, scale=(0.5, 0.5)), _layer(labels), "sparse")
    assert data.channel_axis is None and data.image is image
    assert data.samples.mode == "instances" and data.samples.num_classes == 2
    assert data.samples.pixel_size == 0.5
    labels[:] = 0  # painting goes on: the training set took a copy
    assert data.samples.n_annotated_pixels == 32 * 16
    assert training_data(_layer(image), _layer(painted), "sparse").samples.pixel_size is None


def test_training_data_names_semantic_classes_and_refuses_empty_labels():
    image = np.random.default_rng(1).random((32, 32)).astype(np.float32)
    labels = np.ones((32, 32), np.int32)  # semantic-sparse: class 0 painted as 1
    labels[8:16, 8:16] = 2
    labels[20:28, 20:28] = 3
    names = ["background", "a", "b"]
    data = training_data(_layer(image), _layer(labels, metadata={CLASS_NAMES_KEY: names}),
                         "semantic-sparse")
    assert data.samples.num_classes == 3 and data.samples.class_names == names
    with pytest.raises(ValueError, match="no annotation yet"):
        training_data(_layer(image), _layer(np.zeros((32, 32), np.int32), name="empty"),
                      "sparse")
