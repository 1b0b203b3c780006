"""Blockwise labelling: the same objects as the whole plane/volume, block by block."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.core.data.synthetic import synthetic_nuclei
from napari_unet.core.events import Message
from napari_unet.core.inference.blockwise import block_grid, block_windows, label_blocks
from napari_unet.core.inference.postprocess import (
    base_instances,
    instances_from_probability,
    split_touching,
)
from napari_unet.core.inference.predictor import drain
from napari_unet.core.normalize import intensity_range, normalize
from napari_unet.core.training.weight_map import foreground_target


def assert_same_objects(a, b):
    """Equal label images up to the ids: each object of one is exactly one object of the other."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    np.testing.assert_array_equal(a > 0, b > 0)
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    assert pairs.shape[1] == len(np.unique(a)) == len(np.unique(b))


def probability_map(shape=(300, 340), seed=3):
    """Foreground probabilities of synthetic nuclei: separated by the net's 1-px gap on the
    right half, touching without a gap on the left (so the split has work), plus noise."""
    _, truth = synthetic_nuclei(shape, seed=seed)
    gaps = (foreground_target(truth) == 0) & (truth > 0)
    prob = np.where(truth > 0, 0.9, 0.05).astype(np.float32)
    prob[gaps & (np.arange(shape[1])[None] >= shape[1] // 2)] = 0.05
    prob += np.random.default_rng(seed).normal(0, 0.02, shape).astype(np.float32)
    return prob


def test_block_cores_tile_the_plane_and_windows_add_the_halo():
    blocks = block_grid((95, 130), 40, 8, align=4)
    covered = np.zeros((95, 130), int)
    for b in blocks:
        covered[b.core_slices] += 1
        (y0, y1), (x0, x1) = b.core
        assert y0 % 4 == 0 and x0 % 4 == 0
        assert b.window == ((max(y0 - 8, 0), min(y1 + 8, 95)), (max(x0 - 8, 0), min(x1 + 8, 130)))
    assert (covered == 1).all()
    # a last block thinner than half a step joins its neighbour: 95 = 40 + 55, 130 = 40+40+50
    assert sorted({b.core[0] for b in blocks}) == [(0, 40), (40, 95)]
    assert sorted({b.core[1] for b in blocks}) == [(0, 40), (40, 80), (80, 130)]


def test_block_windows_start_on_the_pooling_grid_and_stop_at_the_edges():
    for win in block_windows((300, 340), context=20, align=16, block=128):
        assert win.window[0].start % 16 == 0 and win.window[1].start % 16 == 0
        assert win.window[0].stop <= 300 and win.window[1].stop <= 340
        inner = win.inner
        assert inner[0].stop - inner[0].start == win.core[0].stop - win.core[0].start
        assert win.window[0].start + inner[0].start == win.core[0].start


@pytest.mark.parametrize("split", [False, True])
def test_blockwise_equals_whole_plane_up_to_ids(split):
    prob = probability_map()
    whole = instances_from_probability(prob, split=split)
    out = np.zeros(prob.shape, np.int32)
    scratch = np.zeros(prob.shape, np.int32) if split else None
    events = []
    gen = label_blocks(prob, out, split=split, block=96, halo=96, scratch=scratch)
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            n = stop.value
            break
    assert not any(isinstance(e, Message) for e in events)  # the halo is big enough
    assert n == whole.max() == out.max()
    assert_same_objects(whole, out)
    # many objects cross block borders (cores start every 96 px)
    crossing = {i for i in np.unique(out[:, 95:97]) if i} | {i for i in np.unique(out[95:97]) if i}
    assert len(crossing) >= 5


def test_a_halo_smaller_than_the_objects_is_reported():
    prob = np.full((120, 120), 0.05, np.float32)
    prob[10:110, 20:30] = 0.9  # a 100 px long object
    out = np.zeros(prob.shape, np.int32)
    gen = label_blocks(prob, out, split=False, block=40, halo=16)
    messages = []
    while True:
        try:
            event = next(gen)
        except StopIteration:
            break
        if isinstance(event, Message):
            messages.append(event)
    assert len(messages) == 1 and messages[0].level == "warning"
    assert "halo" in messages[0].text and "block_halo" in messages[0].text


def test_first_id_continues_numbering():
    prob = probability_map((120, 130))
    out = np.zeros(prob.shape, np.int32)
    n = drain(label_blocks(prob, out, split=False, block=64, halo=64, first_id=101))
    ids = np.unique(out[out > 0])
    np.testing.assert_array_equal(ids, np.arange(101, 101 + n))


def test_blockwise_volume_equals_whole_volume_up_to_ids():
    from napari_unet.core.data.synthetic_volume import synthetic_nuclei_volume

    _, truth = synthetic_nuclei_volume((12, 96, 100), seed=1)
    prob = np.stack([np.where(foreground_target(t) > 0, 0.9, 0.05) for t in truth])
    prob = prob.astype(np.float32)
    whole = split_touching(base_instances(prob), spacing=(2.0, 1.0, 1.0))
    out = np.zeros(prob.shape, np.int32)
    scratch = np.zeros(prob.shape, np.int32)
    drain(label_blocks(prob, out, block=(6, 48, 48), halo=(12, 48, 48), scratch=scratch,
                       spacing=(2.0, 1.0, 1.0)))
    assert_same_objects(whole, out)


def test_intensity_range_is_normalize_on_small_images_and_reads_by_bands():
    rng = np.random.default_rng(0)
    image = rng.gamma(2.0, 100.0, (2, 70, 90)).astype(np.float32)
    r = intensity_range(image[None], None, rows_per_read=16)  # (Z=1, C=2, H, W)
    np.testing.assert_array_equal(r.apply(image), normalize(image, None, channel_axis=0))
    # big images: a regular subsample, the same whichever band size reads it
    sub = intensity_range(image[None], None, max_samples=500, rows_per_read=7)
    again = intensity_range(image[None], None, max_samples=500, rows_per_read=64)
    assert sub == again
    assert intensity_range(image[None], {"method": "none"}) is None


def test_nan_in_the_sample_is_refused():
    image = np.ones((1, 1, 20, 20), np.float32)
    image[0, 0, 4, 4] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        intensity_range(image, None)
