import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_unet.core.data.synthetic import synthetic_nuclei
from napari_unet.core.training.augment import (
    AugmentConfig,
    augment,
    elastic_deform,
    elastic_displacement,
)


@pytest.fixture(scope="module")
def sample():
    image, labels = synthetic_nuclei((64, 64), seed=3)
    ignore = np.zeros(labels.shape, bool)
    ignore[:, :10] = True
    return image[None], labels, ignore


def _interior(labels: np.ndarray) -> np.ndarray:
    """Pixels whose 3x3 neighbourhood holds a single label value."""
    return (ndi.maximum_filter(labels, 3, mode="reflect")
            == ndi.minimum_filter(labels, 3, mode="reflect"))


def test_warp_keeps_image_and_labels_aligned(sample):
    _, labels, ignore = sample
    image = labels.astype(np.float32)[None]  # an image equal to its own label map
    config = AugmentConfig(elastic_sigma=6.0, rotation=20.0, shift=5.0, brightness=(0, 0),
                           contrast=(1, 1), gamma=(1, 1))
    rng = np.random.default_rng(0)
    out_image, out_labels, _ = augment(image, labels, ignore, rng, config)
    assert not np.array_equal(out_labels, labels)  # something moved
    # The interior mask travels with the same map; where the source pixel was interior, linear
    # interpolation only mixes equal values, so the image must equal the label exactly.
    rng = np.random.default_rng(0)
    _, moved_interior, _ = augment(image, _interior(labels).astype(np.int32), ignore, rng, config)
    inside = moved_interior.astype(bool)
    assert inside.mean() > 0.5
    np.testing.assert_allclose(out_image[0][inside], out_labels[inside], atol=1e-4)
    # And almost everywhere the rounded image is the label.
    assert (np.round(out_image[0]) == out_labels).mean() > 0.9


def test_elastic_deform_alignment_and_ids():
    _, labels = synthetic_nuclei((48, 56), seed=5)
    image = np.stack([labels, 2 * labels]).astype(np.float32)
    interior = _interior(labels).astype(np.int32)
    out, out_labels, _ = elastic_deform(image, labels, rng=np.random.default_rng(1), sigma=5.0)
    _, moved_interior, _ = elastic_deform(image, interior, rng=np.random.default_rng(1),
                                          sigma=5.0)
    inside = moved_interior.astype(bool)
    np.testing.assert_allclose(out[0][inside], out_labels[inside], atol=1e-4)
    np.testing.assert_allclose(out[1][inside], 2 * out_labels[inside], atol=1e-4)
    assert set(np.unique(out_labels)) <= set(np.unique(labels))
    assert out.shape == image.shape and out.dtype == np.float32


def test_ids_survive_and_none_invented(sample):
    image, labels, ignore = sample
    rng = np.random.default_rng(7)
    before = set(np.unique(labels).tolist())
    for _ in range(5):
        _, out_labels, out_ignore = augment(image, labels, ignore, rng,
                                            AugmentConfig(elastic_sigma=15.0, rotation=45.0))
        assert set(np.unique(out_labels).tolist()) <= before
        assert out_labels.dtype == labels.dtype
        assert out_ignore.dtype == bool and out_ignore.any() and not out_ignore.all()


def test_identity_config_returns_inputs_exactly(sample):
    image, labels, ignore = sample
    out = augment(image, labels, ignore, np.random.default_rng(0), AugmentConfig.none())
    np.testing.assert_array_equal(out[0], image)
    np.testing.assert_array_equal(out[1], labels)
    np.testing.assert_array_equal(out[2], ignore)
    assert out[0].dtype == np.float32 and out[1].dtype == labels.dtype


def test_zero_displacement_warp_is_identity(sample):
    image, labels, ignore = sample
    config = AugmentConfig(elastic_sigma=0.0, flips=False, rot90=False, rotation=0.0,
                           brightness=(0, 0), contrast=(1, 1), gamma=(1, 1))
    assert not config.has_warp
    out = augment(image, labels, ignore, np.random.default_rng(0), config)
    np.testing.assert_array_equal(out[0], image)


def test_flips_and_rot90_keep_pixel_multiset(sample):
    image, labels, ignore = sample
    config = AugmentConfig(elastic=False, rotation=0.0, brightness=(0, 0), contrast=(1, 1),
                           gamma=(1, 1))
    rng = np.random.default_rng(2)
    seen = set()
    for _ in range(12):
        out_image, out_labels, out_ignore = augment(image, labels, ignore, rng, config)
        np.testing.assert_array_equal(np.sort(out_image, axis=None), np.sort(image, axis=None))
        np.testing.assert_array_equal(np.sort(out_labels, axis=None), np.sort(labels, axis=None))
        assert out_ignore.sum() == ignore.sum()
        # Flips/quarter turns are exact, so the pixel-to-label pairing is kept too.
        pairs = np.sort(out_image[0].ravel() * 1000 + out_labels.ravel())
        np.testing.assert_array_equal(pairs, np.sort(image[0].ravel() * 1000 + labels.ravel()))
        seen.add(out_image.tobytes())
    assert len(seen) > 3  # several of the 8 orientations occur


def test_rot90_keeps_shape_of_non_square_patch():
    image = np.arange(6 * 10, dtype=np.float32).reshape(1, 6, 10)
    labels = np.arange(60, dtype=np.int32).reshape(6, 10)
    config = AugmentConfig(elastic=False, flips=False, rotation=0.0, brightness=(0, 0),
                           contrast=(1, 1), gamma=(1, 1))
    rng = np.random.default_rng(0)
    for _ in range(6):
        out_image, out_labels, _ = augment(image, labels, None, rng, config)
        assert out_image.shape == (1, 6, 10)
        assert (np.array_equal(out_labels, labels)
                or np.array_equal(out_labels, labels[::-1, ::-1]))
        np.testing.assert_array_equal(out_image[0], out_labels.astype(np.float32))


def test_same_seed_same_result(sample):
    image, labels, ignore = sample
    a = augment(image, labels, ignore, np.random.default_rng(11))
    b = augment(image, labels, ignore, np.random.default_rng(11))
    c = augment(image, labels, ignore, np.random.default_rng(12))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])


def test_intensity_changes_image_only(sample):
    image, labels, ignore = sample
    config = AugmentConfig(elastic=False, flips=False, rot90=False, rotation=0.0,
                           brightness=(0.5, 0.5), contrast=(1, 1), gamma=(1, 1))
    out_image, out_labels, out_ignore = augment(image, labels, ignore,
                                                np.random.default_rng(0), config)
    np.testing.assert_allclose(out_image, image + 0.5, atol=1e-6)
    np.testing.assert_array_equal(out_labels, labels)
    np.testing.assert_array_equal(out_ignore, ignore)
    config = AugmentConfig(elastic=False, flips=False, rot90=False, rotation=0.0,
                           brightness=(0, 0), contrast=(2, 2), gamma=(1, 1))
    out_image, _, _ = augment(image, labels, ignore, np.random.default_rng(0), config)
    mean = image.mean()
    np.testing.assert_allclose(out_image, mean + 2 * (image - mean), atol=1e-5)
    config = AugmentConfig(elastic=False, flips=False, rot90=False, rotation=0.0,
                           brightness=(0, 0), contrast=(1, 1), gamma=(2, 2))
    ramp = np.linspace(-1, 3, 5, dtype=np.float32).reshape(1, 1, 5)  # min -1, max 3
    out_image, _, _ = augment(ramp, np.zeros((1, 5), np.int32), None,
                              np.random.default_rng(0), config)
    np.testing.assert_allclose(out_image.ravel(), -1 + 4 * np.array([0, .25, .5, .75, 1]) ** 2,
                               atol=1e-6)


def test_mirrored_border_follows_np_pad_symmetric():
    # A pure shift by +3 columns samples column x - 3: at the left border this must read the
    # np.pad(mode="symmetric") extension, the one mirror convention of the project.
    image = np.arange(8, dtype=np.float32)[None, None].repeat(4, axis=1)
    labels = np.tile(np.arange(8, dtype=np.int32), (4, 1))
    config = AugmentConfig(elastic=False, flips=False, rot90=False, rotation=0.0, shift=3.0,
                           brightness=(0, 0), contrast=(1, 1), gamma=(1, 1))

    class FixedShift:  # rng stand-in that draws the maximum shift in x and none in y
        def uniform(self, low, high, size=None):
            return np.array([0.0, high]) if size == 2 else 0.0

    out_image, out_labels, _ = augment(image, labels, None, FixedShift(), config)
    expected = np.pad(np.arange(8), (3, 3), mode="symmetric")[:8]
    np.testing.assert_allclose(out_image[0, 0], expected, atol=1e-5)
    np.testing.assert_array_equal(out_labels[0], expected)


def test_elastic_displacement_is_smooth_with_paper_scale():
    rng = np.random.default_rng(0)
    fields = np.stack([elastic_displacement((65, 65), rng, grid=3, sigma=10.0)
                       for _ in range(200)])
    assert fields.shape == (200, 2, 65, 65) and fields.dtype == np.float32
    # The grid points (corners, edge midpoints, centre) carry the N(0, 10^2) draws.
    corners = fields[:, :, ::32, ::32]
    assert 8.5 < corners.std() < 11.5
    # Smooth: neighbouring pixels differ far less than the displacement itself.
    assert np.abs(np.diff(fields, axis=-1)).max() < 3.0


def test_bicubic_upsampling_interpolates_grid():
    class Fixed:
        def normal(self, loc, scale, size):
            grid = np.zeros(size)
            grid[0, 1, 1] = 1.0  # a unit displacement at the centre point only
            return grid

    field = elastic_displacement((5, 5), Fixed(), grid=3, sigma=1.0)
    assert field[0, 2, 2] == pytest.approx(1.0)
    assert field[0, 0, 0] == pytest.approx(0.0, abs=1e-7)
    assert field[0, 0, 2] == pytest.approx(0.0, abs=1e-7)
    assert np.all(field[1] == 0)
    # Between the grid points the cubic spline is smooth and symmetric.
    assert field[0, 1, 2] == pytest.approx(field[0, 3, 2])
    assert 0.0 < field[0, 1, 2] < 1.0


@pytest.mark.parametrize("kwargs, message", [
    (dict(elastic_grid=1), "elastic_grid"),
    (dict(elastic_sigma=-1.0), "elastic_sigma"),
    (dict(rotation=200.0), "rotation"),
    (dict(shift=-2.0), "shift"),
    (dict(brightness=(0.2, -0.2)), "brightness"),
    (dict(contrast=(0.0, 1.0)), "contrast"),
    (dict(gamma=(1.0,)), "gamma"),
    (dict(order=2), "order"),
])
def test_bad_config_raises(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AugmentConfig(**kwargs)


def test_bad_arrays_raise(sample):
    image, labels, ignore = sample
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"instances shape \(64, 63\) does not match"):
        augment(image, labels[:, :-1], ignore, rng)
    with pytest.raises(ValueError, match="ignore shape"):
        augment(image, labels, ignore[:-1], rng)
    with pytest.raises(ValueError, match="instances must be integers"):
        augment(image, labels.astype(float), ignore, rng)
    with pytest.raises(ValueError, match=r"\(H, W\) or \(C, H, W\)"):
        augment(image[None], labels, ignore, rng)


def test_two_dimensional_image_and_cubic_order(sample):
    image, labels, ignore = sample
    out_image, out_labels, _ = augment(image[0], labels, ignore, np.random.default_rng(0),
                                       AugmentConfig(order=3))
    assert out_image.shape == image.shape[1:] and out_image.dtype == np.float32
    assert np.isfinite(out_image).all()
