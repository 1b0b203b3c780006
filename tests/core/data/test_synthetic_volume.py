"""The seeded synthetic nuclei volume."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_unet.core.data.synthetic_volume import synthetic_nuclei_volume


def test_shape_dtypes_ids_and_seed():
    image, labels = synthetic_nuclei_volume((12, 80, 90), seed=4)
    assert image.shape == labels.shape == (12, 80, 90)
    assert image.dtype == np.float32 and labels.dtype == np.int32
    ids = np.unique(labels)
    np.testing.assert_array_equal(ids, np.arange(len(ids)))  # consecutive, 0 = background
    assert len(ids) > 5
    again_image, again_labels = synthetic_nuclei_volume((12, 80, 90), seed=4)
    np.testing.assert_array_equal(again_labels, labels)
    np.testing.assert_array_equal(again_image, image)
    assert not np.array_equal(synthetic_nuclei_volume((12, 80, 90), seed=5)[1], labels)


def test_nuclei_are_round_in_physical_units_with_two_fold_z_spacing():
    _, labels = synthetic_nuclei_volume((40, 128, 128), seed=0, layers=1)
    boxes = [b for b in ndi.find_objects(labels) if b is not None]
    z = np.array([b[0].stop - b[0].start for b in boxes], float)
    xy = np.array([max(b[1].stop - b[1].start, b[2].stop - b[2].start) for b in boxes], float)
    # z extent in slices ~ half the lateral extent in pixels (slices 2 px apart)
    ratio = np.median(z * 2.0 / xy)
    assert 0.5 < ratio < 1.2


def test_nuclei_are_brighter_than_background():
    image, labels = synthetic_nuclei_volume((10, 64, 64), seed=1)
    assert image[labels > 0].mean() > 2 * image[labels == 0].mean()


@pytest.mark.parametrize("kwargs", [{"shape": (0, 10, 10)}, {"z_spacing": 0.0}])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        synthetic_nuclei_volume(**kwargs)
