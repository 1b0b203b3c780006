import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_unet.core.data.synthetic import synthetic_nuclei
from napari_unet.core.training.weight_map import (
    class_weight_map,
    foreground_target,
    separated_instances,
    targets_and_weights,
    unsure_edges,
    weight_map,
)


def two_squares(gap: int, shape=(64, 64)) -> np.ndarray:
    """5x5 squares at rows 5..9; the first at cols 5..9, the second ``gap`` px to its right."""
    labels = np.zeros(shape, np.int32)
    labels[5:10, 5:10] = 1
    labels[5:10, 10 + gap : 15 + gap] = 2
    return labels


def brute_force_weight_map(labels, w0=10.0, sigma=5.0, class_weights=(1.0, 1.0)):
    """Eq. 2 straight from the definition: a full-image distance transform per object."""
    ids = [i for i in np.unique(labels) if i > 0]
    dists = np.stack([ndi.distance_transform_edt(labels != i) for i in ids])
    dists.sort(axis=0)
    d1, d2 = dists[0], dists[1]
    border = np.where(labels > 0, 0.0, w0 * np.exp(-((d1 + d2) ** 2) / (2 * sigma**2)))
    return np.asarray(class_weights)[(labels > 0).astype(int)] + border


def test_two_squares_with_a_two_pixel_gap_by_hand():
    labels = two_squares(gap=2)
    w = weight_map(labels)
    assert w.dtype == np.float32 and w.shape == (64, 64)
    # Balanced: 4096 pixels, 50 foreground, 4046 background -> foreground weighs 4046 / 50.
    w_fg, w_bg = 4046 / 50, 1.0
    # Gap pixel (7, 10): 1 px from the first square (col 9), 2 px from the second (col 12).
    assert w[7, 10] == pytest.approx(w_bg + 10 * np.exp(-((1 + 2) ** 2) / 50), abs=1e-5)
    assert w[7, 11] == pytest.approx(w_bg + 10 * np.exp(-((2 + 1) ** 2) / 50), abs=1e-5)
    # (2, 10): 3 rows above the gap; nearest pixels (5, 9) and (5, 12): sqrt(10) and sqrt(13).
    expected = w_bg + 10 * np.exp(-((np.sqrt(10) + np.sqrt(13)) ** 2) / 50)
    assert w[2, 10] == pytest.approx(expected, abs=1e-5)
    # Far from everything (about 67 px away): only the class weight is left.
    assert w[60, 60] == pytest.approx(w_bg, abs=1e-6)
    # Inside the objects: the foreground class weight, no border term.
    assert w[7, 7] == pytest.approx(w_fg, rel=1e-6)
    assert np.allclose(w[labels > 0], w_fg)


def test_touching_squares_get_a_one_pixel_gap_with_the_border_weight():
    labels = two_squares(gap=0)  # cols 5..9 (id 1) and 10..14 (id 2) share an edge
    target, w = targets_and_weights(labels, None, True, class_weights=None)
    # The lower id loses its column that touches the larger id: a 1-px gap at col 9.
    expected_target = np.zeros_like(target)
    expected_target[5:10, 5:9] = 1
    expected_target[5:10, 10:15] = 1
    np.testing.assert_array_equal(target, expected_target)
    np.testing.assert_array_equal(foreground_target(labels), expected_target)
    # Gap pixel (7, 9): d1 = d2 = 1 -> 1 + 10 exp(-4 / 50).
    assert w[7, 9] == pytest.approx(1 + 10 * np.exp(-4 / 50), abs=1e-5)
    assert w[7, 9] == pytest.approx(10.2312, abs=1e-4)
    # Without separation the same pixel is plain foreground.
    assert foreground_target(labels, separate_touching=False)[7, 9] == 1
    assert weight_map(labels, class_weights=None, separate_touching=False)[7, 9] == 1.0


def test_separation_leaves_no_two_objects_adjacent_and_keeps_ids():
    _, labels = synthetic_nuclei((96, 96), n_objects=25, touching=0.9, seed=3)
    sep = separated_instances(labels)
    assert sep.dtype == labels.dtype
    changed = sep != labels
    assert changed.any() and np.all(sep[changed] == 0)
    # No 8-adjacent pixels of two different objects remain.
    padded = np.pad(sep, 1)
    for dy, dx in ((0, 1), (1, -1), (1, 0), (1, 1)):
        a = padded[1:-1, 1:-1]
        b = padded[1 + dy : padded.shape[0] - 1 + dy, 1 + dx : padded.shape[1] - 1 + dx]
        assert not np.any((a > 0) & (b > 0) & (a != b))
    # Separated nuclei stay as separate 8-connected components.
    _, n_components = ndi.label(sep > 0, structure=np.ones((3, 3)))
    assert n_components == len(np.unique(sep)) - 1


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("separate", [False, True])
def test_matches_brute_force_on_random_nuclei(seed, separate):
    _, labels = synthetic_nuclei((128, 128), n_objects=30, seed=seed)
    w = weight_map(labels, class_weights=None, separate_touching=separate)
    ref = brute_force_weight_map(separated_instances(labels) if separate else labels)
    assert np.abs(w - ref).max() <= 1e-3


@pytest.mark.parametrize("w0, sigma", [(10.0, 0.3), (10.0, 2.0), (5.0, 12.0), (1e-7, 5.0)])
def test_matches_brute_force_for_narrow_and_wide_border_terms(w0, sigma):
    # Dense touching clusters that run into the image edges.
    _, labels = synthetic_nuclei((80, 90), n_objects=40, touching=0.9, radius=(4, 9), seed=11)
    w = weight_map(labels, w0=w0, sigma=sigma, class_weights=None)
    ref = brute_force_weight_map(separated_instances(labels), w0=w0, sigma=sigma)
    assert np.abs(w - ref).max() <= 1e-3


def test_matches_brute_force_on_random_blobs_with_non_default_parameters():
    rng = np.random.default_rng(7)
    blobs = ndi.gaussian_filter(rng.normal(size=(100, 120)), 3) > 0.08
    labels, n = ndi.label(blobs)
    assert n >= 5
    # 4-connected components can touch diagonally; compare on the separated labels.
    w = weight_map(labels.astype(np.uint16), w0=20.0, sigma=8.0, class_weights=(0.3, 2.0))
    ref = brute_force_weight_map(
        separated_instances(labels), w0=20.0, sigma=8.0, class_weights=(0.3, 2.0)
    )
    assert np.abs(w - ref).max() <= 1e-3


def test_single_object_has_no_border_term():
    labels = np.zeros((20, 20), np.int32)
    labels[5:10, 5:10] = 3
    w = weight_map(labels, class_weights=None)
    np.testing.assert_array_equal(w, np.ones((20, 20), np.float32))


def test_ignore_mask_gives_zero_and_leaves_class_frequencies():
    labels = two_squares(gap=2)
    ignore = np.zeros(labels.shape, bool)
    ignore[32:, :] = True  # half of the background is not annotated
    w = weight_map(labels, ignore_mask=ignore)
    assert np.all(w[ignore] == 0)
    # Annotated: 2048 pixels, 50 foreground, 1998 background.
    assert w[7, 7] == pytest.approx(1998 / 50, rel=1e-6)
    assert w[20, 40] == pytest.approx(1.0, abs=1e-6)


def test_sparse_paint_teaches_no_edge_where_it_meets_unpainted_pixels():
    # a painted 5x5 nucleus (rows 5..9, cols 5..9) with a painted background ring on three sides;
    # on its right it touches an unpainted neighbour (cols 10..14), as sparse paint leaves it
    labels = np.zeros((20, 20), np.int32)
    labels[5:10, 5:10] = 1
    ignore = np.ones(labels.shape, bool)
    ignore[2:13, 2:10] = False  # the nucleus and a 3-px ring, but not right of column 9
    edge = unsure_edges(labels, ignore)
    expected = np.zeros(labels.shape, bool)
    expected[5:10, 9] = True  # the nucleus's right column, next to not-annotated pixels
    np.testing.assert_array_equal(edge, expected)
    target, weights = targets_and_weights(labels, ignore, instances_mode=True)
    assert np.all(weights[edge] == 0) and np.all(weights[ignore] == 0)
    # the rest of the nucleus and its painted outline are taught as before
    np.testing.assert_allclose(weights, weight_map(labels, ignore_mask=ignore | edge))
    assert np.all(weights[5:10, 5:9] > 0) and np.all(weights[2:5, 2:10] > 0)
    np.testing.assert_array_equal(target, foreground_target(labels))
    # dense labels, or sparse labels that leave nothing out around objects: no change
    np.testing.assert_array_equal(
        targets_and_weights(labels, np.zeros(labels.shape, bool), True)[1],
        targets_and_weights(labels, None, True)[1])
    assert not unsure_edges(labels, np.zeros(labels.shape, bool)).any()
    # a tile whose only paint is an unsure edge (a sliver of an object at its border, after an
    # elastic warp: it stopped a sparse fine-tuning at step 326) teaches nothing, as no paint
    sliver = np.ones(labels.shape, bool)
    sliver[5:10, 9] = False  # only the nucleus's right column is painted
    target, weights = targets_and_weights(labels, sliver, instances_mode=True)
    assert not weights.any() and not target.any()


def test_explicit_and_no_class_weights():
    labels = two_squares(gap=2)
    w = weight_map(labels, class_weights=(0.5, 3.0))
    assert w[7, 7] == pytest.approx(3.0)
    assert w[60, 60] == pytest.approx(0.5)
    assert w[7, 10] == pytest.approx(0.5 + 10 * np.exp(-9 / 50), abs=1e-5)
    plain = weight_map(labels, class_weights=None, w0=0.0)
    np.testing.assert_array_equal(plain, np.ones(labels.shape, np.float32))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(instances=np.zeros((8, 8), np.float32)), "integer dtype"),
        (dict(instances=-np.ones((8, 8), np.int32)), ">= 0"),
        (dict(instances=np.zeros((2, 8, 8), np.int32)), "2-D"),
        (dict(ignore_mask=np.zeros((8, 9), bool)), "shape"),
        (dict(ignore_mask=np.ones((8, 8), bool)), "no annotated pixel"),
        (dict(class_weights=(1.0, 2.0, 3.0)), "2 entries"),
        (dict(class_weights=(1.0, -2.0)), ">= 0"),
        (dict(class_weights="inverse"), "balanced"),
        (dict(sigma=0.0), "sigma"),
        (dict(w0=-1.0), "w0"),
    ],
)
def test_bad_input_raises(kwargs, match):
    args = dict(instances=np.zeros((8, 8), np.int32))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        weight_map(**args)


def test_foreground_target_rejects_float_labels():
    with pytest.raises(ValueError, match="integer dtype"):
        foreground_target(np.ones((4, 4)))


def test_class_weight_map_balanced_and_ignore_value():
    classes = np.zeros((10, 10), np.int32)
    classes[:, :2] = 1  # 20 pixels
    classes[:, 2:3] = 2  # 10 pixels, 70 background
    classes[9, 9] = 255
    ignore = classes == 255
    w = class_weight_map(classes, 3, ignore_mask=ignore)
    assert w.dtype == np.float32
    assert w[0, 5] == pytest.approx(1.0)
    assert w[0, 0] == pytest.approx(69 / 20)
    assert w[0, 2] == pytest.approx(69 / 10)
    assert w[9, 9] == 0.0
    w = class_weight_map(classes, 3, class_weights=[1.0, 2.0, 0.5], ignore_mask=ignore)
    assert (w[0, 5], w[0, 0], w[0, 2]) == (1.0, 2.0, 0.5)
    with pytest.raises(ValueError, match="0..2"):
        class_weight_map(classes, 3)
    with pytest.raises(ValueError, match="3 entries"):
        class_weight_map(classes, 3, class_weights=[1.0, 2.0], ignore_mask=ignore)


def test_objects_are_ids_not_connected_components():
    # One id in two pieces is one object: the gap between its pieces gets no border term.
    labels = two_squares(gap=2)
    labels[labels == 2] = 1
    w = weight_map(labels, class_weights=None)
    assert w[7, 10] == pytest.approx(1.0)
    # Touching objects with different ids stay two objects (see the 1-px gap test above).
