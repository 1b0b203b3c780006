import math

import numpy as np
import pytest

from napari_unet.core.data.metrics import (
    DEFAULT_THRESHOLDS,
    average_precision,
    dice,
    dice_per_class,
    evaluate,
    iou_matrix,
    iou_per_class,
    pixel_iou,
    split_rate,
    touching_pairs,
)


def square(labels, top, left, size, value):
    labels[top : top + size, left : left + size] = value
    return labels


def test_pixel_iou_and_dice_by_hand():
    gt = square(np.zeros((10, 10), np.int32), 2, 2, 4, 1)  # 16 px
    pred = square(np.zeros((10, 10), np.int32), 2, 3, 4, 5)  # shifted 1 col: 12 shared
    assert pixel_iou(gt, pred) == pytest.approx(12 / 20)
    assert dice(gt, pred) == pytest.approx(24 / 32)
    empty = np.zeros((10, 10), np.int32)
    assert pixel_iou(empty, empty) == 1.0 and dice(empty, empty) == 1.0
    assert pixel_iou(gt, empty) == 0.0 and dice(gt, empty) == 0.0


def ap_scene():
    """gt: A (exact in pred), B (pred shifted: IoU 12/20), C (missed); pred adds D (spurious)."""
    gt = np.zeros((20, 20), np.int32)
    square(gt, 1, 1, 4, 1)
    square(gt, 1, 10, 4, 2)
    square(gt, 12, 12, 2, 3)
    pred = np.zeros((20, 20), np.int32)
    square(pred, 1, 1, 4, 7)
    square(pred, 1, 11, 4, 3)
    square(pred, 12, 1, 3, 100)
    return gt, pred


def test_iou_matrix_from_the_contingency_table():
    gt, pred = ap_scene()
    iou, gt_ids, pred_ids = iou_matrix(gt, pred)
    np.testing.assert_array_equal(gt_ids, [1, 2, 3])
    np.testing.assert_array_equal(pred_ids, [3, 7, 100])
    expected = np.array([[0, 1, 0], [0.6, 0, 0], [0, 0, 0]])
    np.testing.assert_allclose(iou, expected)


def test_average_precision_by_hand():
    gt, pred = ap_scene()
    ap = average_precision(gt, pred)
    assert list(ap) == list(DEFAULT_THRESHOLDS)
    assert DEFAULT_THRESHOLDS[0] == 0.5 and DEFAULT_THRESHOLDS[-1] == 0.9
    # IoU 0.6 still counts at t = 0.6: TP 2, FP 1 (D), FN 1 (C) -> 2 / 4.
    assert ap[0.5] == ap[0.55] == ap[0.6] == pytest.approx(0.5)
    # Above 0.6 only A matches: TP 1, FP 2, FN 2 -> 1 / 5.
    assert ap[0.65] == ap[0.9] == pytest.approx(0.2)
    assert average_precision(gt, gt, thresholds=(0.9,)) == {0.9: 1.0}
    empty = np.zeros_like(gt)
    assert average_precision(empty, empty, (0.5,)) == {0.5: 1.0}
    assert average_precision(gt, empty, (0.5,)) == {0.5: 0.0}
    with pytest.raises(ValueError, match="thresholds"):
        average_precision(gt, pred, (1.5,))


def test_one_prediction_covering_two_halves_matches_only_one():
    gt = np.zeros((8, 8), np.int32)
    gt[0:4, 0:2] = 1
    gt[0:4, 2:4] = 2
    pred = square(np.zeros((8, 8), np.int32), 0, 0, 4, 1)
    # Both halves have IoU exactly 8 / 16 = 0.5 with the one prediction: one-to-one -> TP 1.
    assert average_precision(gt, pred, (0.5,))[0.5] == pytest.approx(1 / (2 + 1 - 1))


def test_touching_pairs_use_the_8_neighbourhood():
    labels = np.zeros((10, 10), np.int32)
    square(labels, 0, 0, 3, 1)
    square(labels, 0, 3, 3, 2)  # shares an edge with 1
    square(labels, 3, 6, 2, 4)  # touches 2 only at a corner (2,5)-(3,6)
    square(labels, 7, 0, 2, 9)  # 1 px gap to nothing near: isolated
    np.testing.assert_array_equal(touching_pairs(labels), [[1, 2], [2, 4]])
    assert touching_pairs(np.zeros((4, 4), np.int32)).shape == (0, 2)


def test_split_rate_merged_versus_separated():
    gt = np.zeros((10, 12), np.int32)
    square(gt, 1, 1, 4, 1)
    square(gt, 1, 5, 4, 2)  # touching gt pair
    square(gt, 6, 1, 3, 3)  # alone
    merged = np.where(gt == 2, 1, gt)
    assert split_rate(gt, merged) == (0.0, 1)
    assert split_rate(gt, gt * 10) == (1.0, 1)
    rate, n = split_rate(np.where(gt == 2, 0, gt), gt)
    assert math.isnan(rate) and n == 0


def test_evaluate_report():
    gt = np.zeros((10, 12), np.int32)
    square(gt, 1, 1, 4, 1)
    square(gt, 1, 5, 4, 2)
    merged = np.where(gt == 2, 1, gt)  # one object of 32 px: IoU 0.5 with each gt
    report = evaluate(gt, merged)
    assert report == {
        "iou": 1.0,
        "dice": 1.0,
        "ap50": pytest.approx(1 / 2),  # TP 1, FN 1
        "ap75": 0.0,
        "split_rate": 0.0,
        "n_touching_pairs": 1,
        "n_gt": 2,
        "n_pred": 1,
    }
    # Plain Python numbers (they go into JSON reports and event dicts).
    assert all(type(v) in (int, float) for v in report.values())


def test_per_class_iou_and_dice():
    gt = np.array([[0, 0, 1, 1], [0, 2, 2, 255]])
    pred = np.array([[0, 1, 1, 1], [0, 2, 0, 0]])
    ignore = gt == 255
    iou = iou_per_class(gt, pred, 4, ignore_mask=ignore)
    # class 0: gt {00,01,10} pred {00,10,12} -> 2 / 4; class 1: gt 2, pred 3, shared 2 -> 2 / 3;
    # class 2: gt 2, pred 1, shared 1 -> 1 / 2; class 3 absent -> NaN.
    np.testing.assert_allclose(iou[:3], [2 / 4, 2 / 3, 1 / 2])
    assert np.isnan(iou[3])
    np.testing.assert_allclose(dice_per_class(gt, pred, 4, ignore)[:3], [4 / 6, 4 / 5, 2 / 3])
    with pytest.raises(ValueError, match="num_classes"):
        iou_per_class(gt, pred, 4)


def test_bad_input():
    a = np.zeros((4, 4), np.int32)
    with pytest.raises(ValueError, match="shape"):
        pixel_iou(a, np.zeros((4, 5), np.int32))
    with pytest.raises(ValueError, match="integers"):
        average_precision(a, np.zeros((4, 4)))
    with pytest.raises(ValueError, match=">= 0"):
        evaluate(a - 1, a)


def test_iou_matrix_matches_per_object_definition():
    from napari_unet.core.data.synthetic import synthetic_nuclei

    _, gt = synthetic_nuclei((64, 64), n_objects=10, seed=2)
    _, pred = synthetic_nuclei((64, 64), n_objects=10, seed=5)
    pred = pred * 3  # non-consecutive ids
    iou, gt_ids, pred_ids = iou_matrix(gt, pred)
    for i, g in enumerate(gt_ids):
        for j, p in enumerate(pred_ids):
            a, b = gt == g, pred == p
            assert iou[i, j] == pytest.approx(np.sum(a & b) / np.sum(a | b))


def test_match_maximises_the_number_of_pairs():
    from napari_unet.core.data.metrics import match

    iou = np.array([[0.6, 0.35], [0.4, 0.0], [0.0, 0.0]])
    # Greedy (best IoU first) would take (0, 0) and leave row 1 unmatched at t = 0.3.
    rows, cols = match(iou, 0.3)
    assert sorted(zip(rows.tolist(), cols.tolist(), strict=True)) == [(0, 1), (1, 0)]
    rows, cols = match(iou, 0.5)
    assert (rows.tolist(), cols.tolist()) == ([0], [0])
    assert match(iou, 0.7)[0].size == 0
