import numpy as np
from skimage.segmentation import find_boundaries

from napari_unet.core.data.metrics import touching_pairs
from napari_unet.core.data.synthetic import synthetic_dataset, synthetic_nuclei


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


# -- realistic styles --------------------------------------------------------------------------
import pytest  # noqa: E402

from napari_unet.core.data.synthetic import (  # noqa: E402
    LARGE_DIM,
    MITOTIC,
    NORMAL,
    STYLES,
    NucleiStyle,
    equivalent_diameters,
    place_nuclei,
    render_nuclei,
    varied_nuclei,
)

QUIET = NucleiStyle(texture=0.0, background=0.1)  # no noise sources: effects measurable alone


def _render(style, seed=0, radius=(8, 12), touching=0.3, noise=0.0, shape=(128, 128)):
    rng = np.random.default_rng(seed)
    layout = place_nuclei(shape, None, radius, touching, style, rng)
    return layout, render_nuclei(layout, style, rng, blur=(1.0, 1.0), noise=noise)


def test_plain_look_is_unchanged_by_the_style_option():
    # The project's tests and benchmarks rely on the plain images; style=None keeps them.
    image, labels = synthetic_nuclei((64, 80), seed=7)
    assert image.dtype == np.float32
    assert abs(float(image[labels == 0].mean()) - 0.1) < 0.05


@pytest.mark.parametrize("style", ["widefield", "confocal", NucleiStyle(irregularity=0.1)])
def test_styles_are_seeded_and_labels_consecutive(style):
    a = synthetic_nuclei((96, 96), seed=3, style=style)
    b = synthetic_nuclei((96, 96), seed=3, style=style)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    ids = np.unique(a[1])
    np.testing.assert_array_equal(ids, np.arange(a[1].max() + 1))
    assert not np.array_equal(a[0], synthetic_nuclei((96, 96), seed=4, style=style)[0])


@pytest.mark.parametrize("bits,dtype,top", [(8, np.uint8, 255), (12, np.uint16, 4095),
                                            (16, np.uint16, 65535)])
def test_bit_depths_give_camera_counts(bits, dtype, top):
    image, labels = synthetic_nuclei((96, 96), seed=1, style=NucleiStyle(bit_depth=bits,
                                                                         photons=100.0))
    assert image.dtype == dtype and int(image.max()) <= top
    # The brightest pixels sit at 20-90 % of the full range: no clipping, real dynamic range.
    assert 0.15 * top < np.percentile(image, 99.9) <= 0.95 * top
    assert image[labels > 0].mean() > image[labels == 0].mean()


def test_mitotic_nuclei_are_small_and_bright_large_ones_dim():
    style = replace_quiet(mitotic=0.3, large_dim=0.3, brightness_spread=0.0)
    layout, image = _render(style, seed=2, radius=(8, 10), touching=0.0, shape=(256, 256))
    kinds = layout.kinds[1:]
    assert {NORMAL, MITOTIC, LARGE_DIM} <= set(kinds.tolist())
    area = np.bincount(layout.labels.ravel())[1:]
    mean = np.bincount(layout.labels.ravel(), image.ravel())[1:] / area
    assert area[kinds == MITOTIC].mean() < 0.5 * area[kinds == NORMAL].mean()
    assert area[kinds == LARGE_DIM].mean() > 1.5 * area[kinds == NORMAL].mean()
    assert mean[kinds == MITOTIC].mean() > 1.5 * mean[kinds == NORMAL].mean()
    assert mean[kinds == LARGE_DIM].mean() < 0.8 * mean[kinds == NORMAL].mean()


def replace_quiet(**changes):
    from dataclasses import replace

    return replace(QUIET, **changes)


def test_nucleoli_darken_and_texture_varies_inside_nuclei():
    layout, flat = _render(QUIET, seed=5)
    _, spotted = _render(replace_quiet(nucleoli=3.0), seed=5)
    _, textured = _render(replace_quiet(texture=0.4), seed=5)
    interior = (layout.labels > 0) & ~find_boundaries(layout.labels, mode="thick")
    assert spotted[interior].min() < 0.8 * flat[interior].min()
    assert _within_std(textured, layout.labels, interior) > \
        1.5 * _within_std(flat, layout.labels, interior)


def _within_std(image, labels, where):
    """Mean over nuclei of the relative intensity spread inside each nucleus."""
    spreads = [image[where & (labels == i)].std() / image[where & (labels == i)].mean()
               for i in range(1, labels.max() + 1) if (where & (labels == i)).sum() > 20]
    return float(np.mean(spreads))


def test_vignetting_and_uneven_background():
    style = replace_quiet(vignetting=0.5)
    layout, image = _render(style, seed=0, radius=(3, 4), touching=0.0, shape=(200, 200))
    bg = ndi_far_background(layout.labels)
    centre, corner = np.zeros_like(bg), np.zeros_like(bg)
    centre[60:140, 60:140] = True
    corner[:30, :30] = corner[-30:, -30:] = True
    assert image[bg & corner].mean() < 0.85 * image[bg & centre].mean()
    layout, uneven = _render(replace_quiet(background_variation=0.8), seed=0, radius=(3, 4),
                             touching=0.0, shape=(200, 200))
    flat_bg = _render(QUIET, seed=0, radius=(3, 4), touching=0.0, shape=(200, 200))[1]
    far = ndi_far_background(layout.labels)
    assert uneven[far].std() > 3 * flat_bg[far].std()


def test_fewer_photons_mean_more_noise():
    def noise_level(photons):
        layout, image = _render(replace_quiet(photons=photons), seed=0, touching=0.0)
        interior = (layout.labels > 0) & ~find_boundaries(layout.labels, mode="thick")
        clean = _render(QUIET, seed=0, touching=0.0)[1]
        return np.std(image[interior] - clean[interior]) / clean[interior].mean()

    high, low = noise_level(2000.0), noise_level(5.0)
    assert low > 5 * high
    assert 0.2 < low < 0.8  # ~ 1/sqrt(5) relative shot noise at 5 photons


def test_haze_and_defocus_blur_without_changing_labels():
    layout, sharp = _render(QUIET, seed=1)
    layout2, hazy = _render(replace_quiet(haze=0.5, defocus=1.0), seed=1)
    np.testing.assert_array_equal(layout.labels, layout2.labels)
    bg = ndi_far_background(layout.labels)
    assert hazy[bg].mean() > sharp[bg].mean()
    edges = find_boundaries(layout.labels, mode="thick")
    assert np.abs(np.diff(hazy, axis=1))[edges[:, 1:]].mean() < \
        np.abs(np.diff(sharp, axis=1))[edges[:, 1:]].mean()


def ndi_far_background(labels):
    from scipy import ndimage as ndi

    return ndi.distance_transform_edt(labels == 0) > 3


def test_irregular_outlines_are_not_ellipses():
    layout, _ = _render(NucleiStyle(irregularity=0.15, texture=0.0), seed=0, touching=0.0,
                        radius=(15, 15))
    from skimage.measure import regionprops

    # A perfect disc fills its convex hull; wobbly outlines leave gaps (solidity < 1).
    solidity = [r.solidity for r in regionprops(layout.labels) if r.area > 300]
    assert solidity and min(solidity) < 0.97


def test_density_from_sparse_to_crowded_clusters():
    _, sparse = synthetic_nuclei((256, 256), n_objects=10, touching=0.0, seed=0, style=QUIET)
    _, crowded = synthetic_nuclei((256, 256), n_objects=300, touching=0.9, seed=0,
                                  style=QUIET)
    assert (sparse > 0).mean() < 0.1 < 0.35 < (crowded > 0).mean()
    assert len(touching_pairs(crowded)) > 10 * max(1, len(touching_pairs(sparse)))


def test_varied_images_cover_sizes_looks_and_bit_depths():
    medians, dtypes = [], set()
    for seed in range(12):
        image, labels = varied_nuclei((128, 128), seed=seed)
        assert image.shape == labels.shape == (128, 128) and labels.max() >= 1
        medians.append(np.median(equivalent_diameters(labels)))
        dtypes.add(image.dtype)
    assert min(medians) < 15 and max(medians) > 35
    assert len(dtypes) >= 2
    image, labels = varied_nuclei((128, 128), seed=0, diameter=20.0)
    assert 14 < np.median(equivalent_diameters(labels)) < 26


def test_equivalent_diameters():
    labels = np.zeros((20, 20), np.int32)
    labels[:4, :4] = 1  # area 16
    labels[10:13, 10:13] = 3  # area 9, id 2 absent
    np.testing.assert_allclose(equivalent_diameters(labels),
                               [2 * np.sqrt(16 / np.pi), 2 * np.sqrt(9 / np.pi)])


@pytest.mark.parametrize("bad", [dict(mitotic=1.5), dict(texture=-1), dict(photons=0),
                                 dict(bit_depth=10), dict(mitotic=0.6, large_dim=0.6)])
def test_bad_style_values_are_refused(bad):
    with pytest.raises(ValueError):
        NucleiStyle(**bad)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="style"):
        synthetic_nuclei((32, 32), style="nope")
    with pytest.raises(ValueError, match="radius"):
        synthetic_nuclei((32, 32), radius=(5, 2))
    assert set(STYLES) == {"widefield", "confocal"}
