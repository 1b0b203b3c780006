import numpy as np
import pytest
from skimage.draw import disk

from napari_unet.core.data.classical import otsu_watershed


def test_splits_two_touching_disks_and_finds_a_lone_one():
    image = np.zeros((80, 120), np.float32)
    for center in [(40, 30), (40, 52), (40, 95)]:  # the first two overlap
        image[disk(center, 12, shape=image.shape)] = 1.0
    labels = otsu_watershed(image + np.random.default_rng(0).normal(0, 0.02, image.shape))
    assert labels.max() == 3
    assert len({labels[40, 25], labels[40, 57], labels[40, 95]}) == 3
    assert labels[5, 5] == 0


def test_flat_image_gives_no_objects_and_3d_is_rejected():
    assert otsu_watershed(np.ones((20, 20))).max() == 0
    with pytest.raises(ValueError, match="2D image"):
        otsu_watershed(np.zeros((2, 20, 20)))
