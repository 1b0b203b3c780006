import threading

import numpy as np
import pytest

from napari_unet.core.constants import DEFAULT_NORMALIZATION
from napari_unet.core.data.synthetic import synthetic_nuclei
from napari_unet.core.normalize import normalize
from napari_unet.core.training.labels import labels_to_classes, labels_to_instances
from napari_unet.core.training.trainingset import TrainingSet

RAW = {"method": "none"}  # keeps pixel values, so tests can read where a patch came from


# ----------------------------------------------------------------------------- normalize

def test_normalize_maps_percentiles_to_0_and_1():
    image = np.arange(101, dtype=np.uint16).reshape(1, 101)
    out = normalize(image, {"method": "percentile", "low": 10.0, "high": 90.0})
    assert out.dtype == np.float32 and out.shape == image.shape
    np.testing.assert_allclose(out[0], (np.arange(101) - 10) / 80, rtol=1e-6)  # not clipped
    assert DEFAULT_NORMALIZATION == {"method": "percentile", "low": 1.0, "high": 99.8}
    rng = np.random.default_rng(0)
    image = rng.gamma(2.0, 100.0, size=(40, 50))
    out = normalize(image)
    lo, hi = np.percentile(image, [1.0, 99.8])
    np.testing.assert_allclose(out, (image - lo) / (hi - lo), rtol=1e-5, atol=1e-6)


def test_normalize_per_channel_keeps_axis():
    base = np.arange(100, dtype=np.float64).reshape(10, 10)
    image = np.stack([base, 1000 + 50 * base], axis=-1)  # (H, W, C)
    out = normalize(image, {"method": "percentile", "low": 0.0, "high": 100.0}, channel_axis=-1)
    assert out.shape == (10, 10, 2)
    np.testing.assert_allclose(out[..., 0], base / 99, rtol=1e-6)
    np.testing.assert_allclose(out[..., 1], base / 99, rtol=1e-6)


def test_normalize_flat_and_sparse_images():
    np.testing.assert_array_equal(normalize(np.full((8, 8), 7.0)), np.zeros((8, 8)))
    spots = np.zeros((100, 100), np.uint16)
    spots[50, 50] = 1000  # 1st and 99.8th percentiles are both 0
    out = normalize(spots)
    assert np.isfinite(out).all() and out.max() == pytest.approx(1.0) and out.min() == 0.0


def test_normalize_none_method_and_bool():
    image = np.array([[1, 2], [3, 4]], np.int16)
    out = normalize(image, RAW)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, image)


@pytest.mark.parametrize("image, spec, message", [
    (np.array([[1.0, np.nan]]), None, "NaN or infinite"),
    (np.array([[1.0, np.inf]]), None, "NaN or infinite"),
    (np.zeros((0, 5)), None, "empty"),
    (np.ones((3, 3), complex), None, "real-valued"),
    (np.ones((3, 3)), {"method": "zscore"}, "method"),
    (np.ones((3, 3)), {"method": "percentile", "low": 50, "high": 10}, "low < high"),
])
def test_normalize_bad_input(image, spec, message):
    with pytest.raises(ValueError, match=message):
        normalize(image, spec)


# ----------------------------------------------------------------------------- conventions

def test_sparse_convention():
    labels = np.array([[0, 1, 2], [3, 2, 0]], np.uint8)
    instances, ignore = labels_to_instances(labels, "sparse")
    assert instances.dtype == np.int32 and ignore.dtype == bool
    np.testing.assert_array_equal(instances, [[0, 0, 1], [2, 1, 0]])
    np.testing.assert_array_equal(ignore, [[True, False, False], [False, False, True]])


def test_dense_convention():
    labels = np.array([[0, 5], [5, 7]], np.uint32)
    instances, ignore = labels_to_instances(labels, "dense")
    np.testing.assert_array_equal(instances, labels)
    assert not ignore.any()


def test_binary_convention_merges_touching_objects():
    labels = np.zeros((5, 9), np.uint8)
    labels[1:4, 1:3] = 1
    labels[1:4, 3:5] = 1  # touches the first block: same object
    labels[1:4, 6:8] = 255
    instances, ignore = labels_to_instances(labels, "binary")
    assert not ignore.any()
    assert len(np.unique(instances[instances > 0])) == 2
    assert len(np.unique(instances[1:4, 1:5])) == 1 and instances[1, 1] > 0
    assert instances[1, 6] not in (0, instances[1, 1])
    np.testing.assert_array_equal(instances > 0, labels > 0)
    # bool masks are fine for binary labels
    np.testing.assert_array_equal(labels_to_instances(labels > 0, "binary")[0], instances)


def test_semantic_conventions():
    labels = np.array([[0, 1, 255], [2, 0, 1]], np.uint8)
    classes, ignore = labels_to_classes(labels, "semantic", 3)
    np.testing.assert_array_equal(classes, [[0, 1, 0], [2, 0, 1]])
    np.testing.assert_array_equal(ignore, [[False, False, True], [False, False, False]])
    classes, ignore = labels_to_classes(np.array([[0, 1, 3]]), "semantic-sparse", 3)
    np.testing.assert_array_equal(classes, [[0, 0, 2]])
    np.testing.assert_array_equal(ignore, [[True, False, False]])


@pytest.mark.parametrize("call, message", [
    (lambda: labels_to_instances(np.ones((2, 2), np.float32), "dense"), "integers.*float32"),
    (lambda: labels_to_instances(np.array([[0, -1]]), "dense"), "negative"),
    (lambda: labels_to_instances(np.ones((2, 2, 2), int), "dense"), "2 dimensions"),
    (lambda: labels_to_instances(np.ones((2, 2), int), "semantic"), "labels_to_classes"),
    (lambda: labels_to_instances(np.ones((2, 2), int), "weird"), "convention"),
    (lambda: labels_to_classes(np.array([[0, 3]]), "semantic", 3), "class 3.*num_classes is 3"),
    (lambda: labels_to_classes(np.array([[0, 4]]), "semantic-sparse", 3), "painted as 4"),
    (lambda: labels_to_classes(np.array([[0, 1]]), "semantic", 1), "num_classes"),
    (lambda: labels_to_classes(np.array([[0, 1]]), "dense", 2), "semantic label convention"),
])
def test_bad_labels_raise(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ----------------------------------------------------------------------------- TrainingSet

def _encoded_stack(z: int, h: int, w: int) -> np.ndarray:
    """Pixel value = 10000 * slice + 100 * row + column."""
    zz, yy, xx = np.indices((z, h, w))
    return (10000 * zz + 100 * yy + xx).astype(np.float32)


def _dense_blobs(h: int, w: int) -> np.ndarray:
    labels = np.zeros((h, w), np.int32)
    labels[2:6, 2:6] = 1
    labels[h - 8:h - 2, w - 8:w - 2] = 2
    return labels


def test_stack_uses_only_annotated_slices():
    image = _encoded_stack(5, 20, 20)
    labels = np.zeros((5, 20, 20), np.uint8)
    labels[1, 3:8, 3:8] = 2
    labels[1, 10:15, 10:15] = 1
    labels[3, 0:4, 0:20] = 1
    ts = TrainingSet([image], [labels], convention="sparse", normalization=RAW,
                     validation_fraction=0.0)
    assert ts.n_samples == 2
    assert ts.n_annotated_pixels == 25 + 25 + 80
    assert ts.n_objects == 1 and ts.in_channels == 1
    rng = np.random.default_rng(0)
    slices = set()
    for _ in range(60):
        patch, target, ignore = ts.sample_patch(rng, (8, 8))
        assert patch.shape == (1, 8, 8) and patch.dtype == np.float32
        assert target.shape == (8, 8) and target.dtype == np.int32 and ignore.dtype == bool
        z = np.unique(patch // 10000)
        assert z.size == 1
        slices.add(int(z[0]))
    assert slices == {1, 3}


def test_channel_axis_2d_and_stack():
    h, w = 12, 14
    chan0 = np.arange(h * w, dtype=np.float32).reshape(h, w)
    image = np.stack([chan0, -chan0], axis=-1)  # (H, W, C)
    labels = _dense_blobs(h, w)
    ts = TrainingSet([image], [labels], channel_axis=-1, normalization=RAW,
                     validation_fraction=0.0)
    assert ts.in_channels == 2
    patch, _, _ = ts.sample_patch(np.random.default_rng(0), (6, 6))
    assert patch.shape == (2, 6, 6)
    np.testing.assert_array_equal(patch[1], -patch[0])
    stack = np.stack([image, image + 1000])  # (Z, H, W, C)
    ts = TrainingSet([stack], [np.stack([labels, labels])], channel_axis=3, normalization=RAW,
                     validation_fraction=0.0)
    assert ts.in_channels == 2 and ts.n_samples == 2
    patch, _, _ = ts.sample_patch(np.random.default_rng(1), (6, 6))
    assert patch.shape == (2, 6, 6)


def test_images_are_normalised_per_plane_and_channel():
    rng = np.random.default_rng(0)
    image = np.stack([rng.uniform(0, 10, (16, 16)), rng.uniform(100, 5000, (16, 16))])
    ts = TrainingSet([image], [_dense_blobs(16, 16)], channel_axis=0, validation_fraction=0.0)
    patch, _, _ = ts.sample_patch(np.random.default_rng(0), (16, 16))
    np.testing.assert_allclose(patch, normalize(image, DEFAULT_NORMALIZATION, channel_axis=0),
                               rtol=1e-5, atol=1e-6)
    assert ts.normalization == DEFAULT_NORMALIZATION


def test_update_changes_what_is_sampled():
    image, instances = synthetic_nuclei((48, 48), seed=1)
    sparse = np.where(instances > 0, instances + 1, 1).astype(np.uint16)
    ts = TrainingSet([image], [sparse], convention="sparse", validation_fraction=0.0)
    rng = np.random.default_rng(0)
    assert any((ts.sample_patch(rng, (16, 16))[1] > 0).any() for _ in range(20))
    ts.update(0, np.ones_like(sparse))  # everything annotated as background
    assert ts.n_objects == 0 and ts.object_diameter is None
    for _ in range(50):
        _, target, ignore = ts.sample_patch(rng, (16, 16))
        assert not target.any() and not ignore.any()
    # The caller's array is copied: editing it afterwards changes nothing until update().
    new = np.zeros_like(sparse)
    new[:10, :10] = 1
    new[20:30, 20:30] = 5
    ts.update(0, new)
    new[:] = 0
    assert ts.n_annotated_pixels == 200 and ts.n_objects == 1


def test_update_of_stack_rederives_annotated_slices():
    image = _encoded_stack(4, 16, 16)
    labels = np.zeros((4, 16, 16), np.uint8)
    labels[0, :4] = 1
    labels[0, 8:12, 8:12] = 2
    ts = TrainingSet([image], [labels], convention="sparse", normalization=RAW,
                     validation_fraction=0.0)
    assert ts.n_samples == 1
    labels = labels.copy()
    labels[0] = 0
    labels[2, :, :] = 1
    ts.update(0, labels)
    assert ts.n_samples == 1
    rng = np.random.default_rng(0)
    for _ in range(20):
        patch, _, _ = ts.sample_patch(rng, (8, 8))
        assert np.all(patch // 10000 == 2)


def test_border_patch_is_mirror_padded_like_np_pad():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(30, 40)).astype(np.float32)
    labels = np.zeros((30, 40), np.uint8)
    labels[0, 0] = 2  # the single annotated pixel sits in the corner
    labels[0, 1] = 1
    ts = TrainingSet([image], [labels], convention="sparse", normalization=RAW,
                     validation_fraction=0.0)
    m = 5
    patch, target, ignore = ts.sample_patch(rng, (8, 10), margin=m, annotated_bias=1.0)
    assert patch.shape == (1, 18, 20)
    np.testing.assert_array_equal(patch[0], np.pad(image, m, mode="symmetric")[:18, :20])
    expected_labels = np.pad(labels, m, mode="symmetric")[:18, :20]
    np.testing.assert_array_equal(target, np.maximum(expected_labels.astype(int) - 1, 0))
    np.testing.assert_array_equal(ignore, expected_labels == 0)


def test_image_smaller_than_patch_is_mirror_padded():
    rng = np.random.default_rng(3)
    image = rng.normal(size=(5, 7)).astype(np.float32)
    labels = np.zeros((5, 7), np.int32)
    labels[1:3, 1:3] = 1
    ts = TrainingSet([image], [labels], normalization=RAW, validation_fraction=0.0)
    pad = 30
    padded = np.pad(image, pad, mode="symmetric")
    for _ in range(10):
        patch, target, _ = ts.sample_patch(rng, (12, 16), margin=2)
        assert patch.shape == (1, 16, 20)
        windows = np.lib.stride_tricks.sliding_window_view(padded, (16, 20))
        assert (windows == patch[0]).all(axis=(-2, -1)).any()
        assert target.max() == 1


def test_patches_are_biased_toward_annotated_pixels():
    image, instances = synthetic_nuclei((128, 128), seed=2)
    sparse = np.zeros((128, 128), np.uint8)
    sparse[90:96, 20:26] = 1
    sparse[30:34, 100:104] = 2
    ts = TrainingSet([image], [sparse], convention="sparse", validation_fraction=0.0)
    rng = np.random.default_rng(0)
    hits = [not ts.sample_patch(rng, (16, 16))[2].all() for _ in range(400)]
    # Uniform placement hits an annotated pixel in ~7% of patches; with the default bias of 0.8
    # about 81% (0.8 + 0.2 * 0.07) are expected.
    assert np.mean(hits) > 0.7
    hits = [not ts.sample_patch(rng, (16, 16), annotated_bias=1.0)[2].all() for _ in range(50)]
    assert all(hits)
    hits = [not ts.sample_patch(rng, (16, 16), annotated_bias=0.0)[2].all() for _ in range(400)]
    assert np.mean(hits) < 0.2


def test_validation_strip_never_reaches_training_patches():
    h, w = 100, 40
    image = np.repeat(np.arange(h, dtype=np.float32)[:, None], w, axis=1)  # value = row
    labels = np.zeros((h, w), np.int32)
    for i, y in enumerate(range(2, h - 6, 10)):
        labels[y:y + 5, 5:12] = i + 1
    ts = TrainingSet([image], [labels], normalization=RAW, validation_fraction=0.2)
    items = ts.validation_items()
    assert len(items) == 1
    val_image, val_target, val_ignore = items[0]
    first_val_row = val_image.min()
    assert val_image.shape[1:] == (h - first_val_row, w)
    assert 70 <= first_val_row <= 90  # bottom rows holding ~20% of the annotated pixels
    assert val_target.max() > 0 and val_target.dtype == np.int32 and not val_ignore.any()
    rng = np.random.default_rng(0)
    for _ in range(100):
        patch, _, _ = ts.sample_patch(rng, (24, 24), margin=12)
        assert patch.max() < first_val_row
    summary = ts.split_summary()
    assert {s["role"] for s in summary} == {"train", "validation"}
    padded = ts.validation_items(margin=3)[0]
    assert padded[0].shape == (1, val_image.shape[1] + 6, w + 6)
    assert padded[0].max() == val_image.max()  # padded from itself, not from training rows


def test_many_samples_hold_out_whole_slices():
    image = _encoded_stack(10, 16, 16)
    labels = np.stack([_dense_blobs(16, 16)] * 10)
    ts = TrainingSet([image], [labels], normalization=RAW, validation_fraction=0.1, seed=4)
    items = ts.validation_items()
    assert len(items) == 1 and items[0][0].shape == (1, 16, 16)
    held_z = int(items[0][0][0, 0, 0] // 10000)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(200):
        patch, _, _ = ts.sample_patch(rng, (8, 8))
        seen.add(int(patch[0, 0, 0] // 10000))
    assert held_z not in seen and len(seen) == 9


def test_no_validation_when_fraction_is_zero():
    ts = TrainingSet([np.ones((16, 16))], [_dense_blobs(16, 16)], validation_fraction=0.0)
    assert ts.validation_items() == []


def test_object_statistics():
    labels = np.zeros((20, 20), np.int32)
    labels[1:5, 1:5] = 3  # area 16
    labels[10:16, 10:16] = 7  # area 36
    ts = TrainingSet([np.random.default_rng(0).normal(size=(20, 20))], [labels],
                     validation_fraction=0.0)
    assert ts.n_objects == 2
    assert ts.n_annotated_pixels == 400
    expected = np.median([2 * np.sqrt(16 / np.pi), 2 * np.sqrt(36 / np.pi)])
    assert ts.object_diameter == pytest.approx(expected)
    assert ts.mode == "instances" and ts.num_classes == 2 and ts.n_images == 1


def test_semantic_mode_samples_classes():
    labels = np.full((24, 24), 255, np.uint8)
    labels[:8] = 0
    labels[8:16, :12] = 1
    labels[16:, 12:] = 2
    ts = TrainingSet([np.random.default_rng(0).normal(size=(24, 24))], [labels],
                     convention="semantic", mode="semantic", num_classes=3,
                     validation_fraction=0.0)
    assert ts.n_annotated_pixels == 24 * 8 + 8 * 12 + 8 * 12
    assert ts.object_diameter is None and ts.n_objects == 0
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(50):
        _, target, ignore = ts.sample_patch(rng, (24, 24))
        seen |= set(np.unique(target[~ignore]).tolist())
    assert seen == {0, 1, 2}


def test_binary_labels_in_training_set():
    labels = np.zeros((16, 16), bool)
    labels[2:6, 2:6] = True
    labels[9:13, 9:13] = True
    ts = TrainingSet([np.ones((16, 16))], [labels], convention="binary",
                     validation_fraction=0.0)
    assert ts.n_objects == 2


def test_dask_images_are_accepted():
    import dask.array as da
    image = _encoded_stack(3, 16, 16)
    labels = np.stack([_dense_blobs(16, 16)] * 3)
    ts = TrainingSet([da.from_array(image, chunks=(1, 16, 16))], [labels], normalization=RAW,
                     validation_fraction=0.0)
    patch, _, _ = ts.sample_patch(np.random.default_rng(0), (16, 16))
    z = int(patch[0, 0, 0] // 10000)
    np.testing.assert_array_equal(patch[0], image[z])


def test_update_is_thread_safe_and_atomic():
    version_a = np.ones((32, 32), np.int32)
    version_a[:, :4] = 0
    version_b = np.where(version_a > 0, 2, 0).astype(np.int32)
    ts = TrainingSet([np.random.default_rng(0).normal(size=(32, 32))], [version_a],
                     validation_fraction=0.0)
    stop = threading.Event()
    errors = []

    def writer():
        try:
            i = 0
            while not stop.is_set():
                ts.update(0, version_b if i % 2 else version_a)
                i += 1
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    thread = threading.Thread(target=writer)
    thread.start()
    rng = np.random.default_rng(0)
    try:
        for _ in range(300):
            _, target, _ = ts.sample_patch(rng, (8, 8))
            ids = set(np.unique(target).tolist()) - {0}
            assert len(ids) <= 1  # never a mix of two versions
    finally:
        stop.set()
        thread.join()
    assert not errors


BAD_CASES = [
    (dict(images=[np.zeros((10, 13))], labels=[np.zeros((10, 12), int)]),
     r"labels shape \(10, 12\) does not match image shape \(10, 13\)"),
    (dict(images=[np.full((8, 8), np.nan)], labels=[_dense_blobs(8, 8)]), "NaN or infinite"),
    (dict(images=[np.ones((8, 8))], labels=[_dense_blobs(8, 8).astype(float)]),
     "labels must be integers"),
    (dict(images=[np.ones((8, 8))], labels=[-_dense_blobs(8, 8)]), "negative"),
    (dict(images=[np.ones((8, 8))], labels=[np.zeros((8, 8), int)], convention="sparse"),
     "no annotated pixels"),
    (dict(images=[np.ones((8, 8))], labels=[np.ones((8, 8), int)], convention="sparse"),
     r"only one class annotated \(background\)"),
    (dict(images=[np.ones((8, 8))], labels=[np.ones((8, 8), int)]),
     r"only one class annotated \(foreground\)"),
    (dict(images=[np.ones((2, 3, 8, 8))], labels=[np.zeros((2, 8, 8), int)]),
     "needs channel_axis"),
    (dict(images=[np.ones((8, 8, 2)), np.ones((8, 8, 3))],
          labels=[_dense_blobs(8, 8)] * 2, channel_axis=-1), "3 channels but image 0 has 2"),
    (dict(images=[np.ones((8, 8))], labels=[]), "1 images but 0 label arrays"),
    (dict(images=[], labels=[]), "no images"),
    (dict(images=[np.ones((8, 8))], labels=[_dense_blobs(8, 8)], convention="semantic"),
     "does not fit mode"),
    (dict(images=[np.ones((8, 8))], labels=[_dense_blobs(8, 8)], mode="pixels"), "mode"),
    (dict(images=[np.ones((8, 8))], labels=[_dense_blobs(8, 8)], validation_fraction=0.9),
     "validation_fraction"),
    (dict(images=[np.ones((8, 8))], labels=[_dense_blobs(8, 8)], channel_axis=5),
     "channel_axis"),
    (dict(images=[np.ones((8, 8))], labels=[np.full((8, 8), 3)], convention="semantic",
          mode="semantic", num_classes=3), "class 3"),
    (dict(images=[np.ones((3, 8, 8))], labels=[np.zeros((3, 8, 8), int)]),
     "no annotated pixels"),
]


@pytest.mark.parametrize("kwargs, message", BAD_CASES)
def test_bad_training_set_inputs_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainingSet(**kwargs)


def test_bad_update_leaves_set_unchanged():
    ts = TrainingSet([np.ones((8, 8))], [_dense_blobs(8, 8)], validation_fraction=0.0)
    before = ts.n_annotated_pixels, ts.n_objects
    with pytest.raises(ValueError, match=r"labels shape \(8, 9\) does not match"):
        ts.update(0, np.zeros((8, 9), int))
    with pytest.raises(ValueError, match="index 1 is out of range"):
        ts.update(1, _dense_blobs(8, 8))
    with pytest.raises(ValueError, match="integers"):
        ts.update(0, np.zeros((8, 8)))
    sparse_set = TrainingSet([np.ones((8, 8))], [_dense_blobs(8, 8) + 1], convention="sparse",
                             validation_fraction=0.0)
    with pytest.raises(ValueError, match="no annotated pixels left"):
        sparse_set.update(0, np.zeros((8, 8), int))
    assert sparse_set.n_annotated_pixels == 64
    assert (ts.n_annotated_pixels, ts.n_objects) == before


@pytest.mark.parametrize("size, margin, message", [
    ((0, 8), 0, "patch size"), ((8,), 0, "patch size"), ((8, 8), -1, "margin"),
])
def test_bad_sample_arguments(size, margin, message):
    ts = TrainingSet([np.ones((8, 8))], [_dense_blobs(8, 8)], validation_fraction=0.0)
    with pytest.raises(ValueError, match=message):
        ts.sample_patch(np.random.default_rng(0), size, margin)
