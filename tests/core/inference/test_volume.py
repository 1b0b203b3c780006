"""Z stacks: which are volumes, linking 2D objects across z, the merge/split count."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.core.inference.predictor import drain
from napari_unet.core.inference.volume import (
    check_axes,
    link_slices,
    merged_and_split,
    stack_is_volume,
)


def test_linking_by_overlap_one_to_one():
    labels = np.zeros((3, 10, 12), np.int32)
    labels[0, 1:5, 1:5] = 7          # A
    labels[1, 1:5, 2:6] = 3          # A shifted: IoU 12/20 = 0.6
    labels[1, 6:9, 6:10] = 4         # new object B
    labels[2, 1:3, 1:5] = 9          # small part of A: IoU with A's slice 1 = 6/18 = 0.33
    labels[2, 6:9, 6:10] = 1         # B again
    out = np.zeros_like(labels)
    n = drain(link_slices(labels, out, threshold=0.25))
    assert n == 2
    a, b = out[0, 2, 2], out[1, 7, 7]
    assert a != b and set(np.unique(out)) == {0, a, b}
    assert out[1, 2, 3] == a and out[2, 2, 2] == a and out[2, 7, 7] == b
    # a stricter threshold cuts A's thin part off as its own object
    strict = np.zeros_like(labels)
    assert drain(link_slices(labels, strict, threshold=0.5)) == 3
    # in place, bands of rows: the same result
    in_place = labels.copy()
    drain(link_slices(in_place, threshold=0.25, rows_per_read=3))
    np.testing.assert_array_equal(in_place, out)


def test_linking_recovers_synthetic_nuclei_from_their_slices():
    from napari_unet.core.data.metrics import average_precision
    from napari_unet.core.data.synthetic_volume import synthetic_nuclei_volume

    _, truth = synthetic_nuclei_volume((16, 96, 96), seed=2)
    slices = np.zeros_like(truth)
    for z in range(truth.shape[0]):  # 2D ids per slice, unrelated to the 3D ones
        ids, inverse = np.unique(truth[z], return_inverse=True)
        slices[z] = np.where(inverse.reshape(truth[z].shape) > 0,
                             inverse.reshape(truth[z].shape) + 1000 * z, 0)
    out = np.zeros_like(slices)
    drain(link_slices(slices, out, threshold=0.1))
    assert average_precision(truth, out, (0.5,))[0.5] > 0.8


def test_merged_and_split_counts():
    gt = np.zeros((20, 20), np.int32)
    gt[0:5, 0:5], gt[0:5, 6:11], gt[10:20, 0:10] = 1, 2, 3
    pred = np.zeros_like(gt)
    pred[0:5, 0:11] = 1              # 1 and 2 merged
    pred[10:20, 0:5], pred[10:20, 5:10] = 2, 3   # 3 split in two
    r = merged_and_split(gt, pred)
    assert r["merged"] == pytest.approx(2 / 3) and r["split"] == pytest.approx(1 / 3)
    assert merged_and_split(gt, gt) == {"merged": 0.0, "split": 0.0, "n_gt": 3, "n_pred": 3}


def test_which_stacks_are_volumes():
    assert stack_is_volume("ZYX", True, None) == (True, None)
    assert stack_is_volume("ZCYX", True, None) == (True, None)
    assert stack_is_volume("TYX", True, None) == (False, None)
    assert stack_is_volume(None, True, True) == (True, None)
    is_volume, note = stack_is_volume(None, True, None)
    assert not is_volume and "slice by slice" in note
    assert stack_is_volume("ZYX", True, False) == (False, None)
    with pytest.raises(ValueError, match="single plane"):
        stack_is_volume("YX", False, True)


@pytest.mark.parametrize("bad", ["XY", "ZZYX", "QYX", ""])
def test_bad_axes(bad):
    with pytest.raises(ValueError, match="axes"):
        check_axes(bad)
    assert check_axes("zcyx") == "ZCYX"
    with pytest.raises(TypeError):
        check_axes(3)
