import numpy as np
from skimage.segmentation import find_boundaries

from napari_unet.core.metrics import touching_pairs
from napari_unet.core.synthetic import synthetic_dataset, synthetic_nuclei


def test_seeded_shapes_and_consecutive_ids():
    image, labels = synthetic_nuclei((96, 128), seed=3)
    again, labels_again = synthetic_nuclei((96, 128), seed=3)
    assert image.shape == labels.shape == (96, 128)
    assert image.dtype == np.float32 and labels.dtype == np.int32
    np.testing.assert_array_equal(image, again)
    np.testing.assert_array_equal(labels, labels_again)
    assert not np.array_equal(labels, synthetic_nuclei((96, 128), seed=4)[1])
    ids = np.unique(labels)
    np.testing.assert_array_equal(ids, np.arange(labels.max() + 1))
    assert labels.max() >= 10


def test_touching_clusters_are_separate_objects_with_a_dim_seam():
    image, labels = synthetic_nuclei((256, 256), radius=(9, 16), touching=0.9, seed=0,
                                     noise=0.0)
    assert len(touching_pairs(labels)) >= 10
    # Nuclei are brighter than background; their seams are dimmer than their centres.
    assert image[labels > 0].mean() > 2 * image[labels == 0].mean()
    seam = find_boundaries(labels, mode="inner") & (labels > 0)
    interior = (labels > 0) & ~find_boundaries(labels, mode="thick")
    assert image[seam].mean() < image[interior].mean()


def test_dataset_stacks_distinct_images():
    images, labels = synthetic_dataset(3, (64, 64), seed=1)
    assert images.shape == labels.shape == (3, 64, 64)
    assert not np.array_equal(images[0], images[1])
