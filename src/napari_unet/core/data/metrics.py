"""Segmentation metrics: pixel IoU / Dice, instance average precision, and the split rate.

Instance AP follows the Data Science Bowl 2018 / StarDist definition: at an IoU threshold ``t``
ground-truth and predicted objects are matched one-to-one (pairs with IoU >= t, maximum number
of matches), and ``AP(t) = TP / (TP + FP + FN)``. The IoU of all overlapping object pairs comes
from one sparse contingency table of the two label images, not from per-object passes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import numpy as np
from scipy import sparse
from scipy.optimize import linear_sum_assignment

DEFAULT_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(9))  # 0.5, 0.55, ..., 0.9

# Four of the eight neighbour offsets: together with their mirror images they cover every
# 8-adjacent pixel pair exactly once.
_HALF_NEIGHBOURHOOD = ((0, 1), (1, -1), (1, 0), (1, 1))


def pixel_iou(gt: np.ndarray, pred: np.ndarray) -> float:
    """Foreground IoU (Jaccard) of two label images (non-zero = foreground).

    Returns 1.0 when both are empty.
    """
    a, b = _pair(gt, pred)
    a, b = a > 0, b > 0
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else float(np.count_nonzero(a & b) / union)


def dice(gt: np.ndarray, pred: np.ndarray) -> float:
    """Foreground Dice (F1) of two label images (non-zero = foreground); 1.0 when both are empty."""
    a, b = _pair(gt, pred)
    a, b = a > 0, b > 0
    total = np.count_nonzero(a) + np.count_nonzero(b)
    return 1.0 if total == 0 else float(2 * np.count_nonzero(a & b) / total)


def iou_per_class(
    gt: np.ndarray, pred: np.ndarray, num_classes: int, ignore_mask: np.ndarray | None = None
) -> np.ndarray:
    """IoU of every class of two semantic label images.

    Parameters
    ----------
    gt, pred : (H, W) int
        Class per pixel, ``0 .. num_classes - 1`` (other values, e.g. 255, must be in
        ``ignore_mask``).
    num_classes : int
    ignore_mask : (H, W) bool, optional
        True = not annotated; left out of the counts.

    Returns
    -------
    (num_classes,) float64
        NaN for a class absent from both images.
    """
    inter, size_gt, size_pred = _class_counts(gt, pred, num_classes, ignore_mask)
    union = size_gt + size_pred - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, np.nan)


def dice_per_class(
    gt: np.ndarray, pred: np.ndarray, num_classes: int, ignore_mask: np.ndarray | None = None
) -> np.ndarray:
    """Dice of every class of two semantic label images; NaN for a class absent from both."""
    inter, size_gt, size_pred = _class_counts(gt, pred, num_classes, ignore_mask)
    total = size_gt + size_pred
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 2 * inter / total, np.nan)


def iou_matrix(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IoU of every ground-truth object with every predicted object.

    Returns
    -------
    iou : (n_gt, n_pred) float64
        Rows follow ``gt_ids``, columns ``pred_ids``; 0 for pairs that do not overlap.
    gt_ids, pred_ids : int arrays
        The object ids (sorted, background excluded).
    """
    ov = _overlaps(gt, pred)
    iou = np.zeros((len(ov.gt_ids), len(ov.pred_ids)))
    iou[ov.rows, ov.cols] = ov.iou
    return iou, ov.gt_ids, ov.pred_ids


def match(iou: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching of the most pairs with ``iou >= threshold``.

    Parameters
    ----------
    iou : (n_gt, n_pred) float
        E.g. from :func:`iou_matrix`.
    threshold : float

    Returns
    -------
    rows, cols : int arrays
        Indices into ``iou`` of the matched pairs.
    """
    rows, cols = np.nonzero(iou >= threshold)
    return _match_pairs(rows, cols, iou[rows, cols])


class _Overlaps(NamedTuple):
    gt_ids: np.ndarray  # object ids, background excluded
    pred_ids: np.ndarray
    rows: np.ndarray  # index into gt_ids, one entry per overlapping pair
    cols: np.ndarray  # index into pred_ids
    iou: np.ndarray


def _overlaps(gt: np.ndarray, pred: np.ndarray) -> _Overlaps:
    """IoU of the overlapping object pairs, from one sparse contingency table."""
    a, b = _pair(gt, pred)
    gt_ids, gt_index = np.unique(a.ravel(), return_inverse=True)
    pred_ids, pred_index = np.unique(b.ravel(), return_inverse=True)
    table = sparse.coo_matrix(
        (np.ones(a.size, np.int64), (gt_index.ravel(), pred_index.ravel())),
        shape=(len(gt_ids), len(pred_ids)),
    ).tocsr().tocoo()  # the round trip sums duplicate entries
    sizes_gt = np.bincount(gt_index.ravel(), minlength=len(gt_ids))
    sizes_pred = np.bincount(pred_index.ravel(), minlength=len(pred_ids))
    fg = (gt_ids[table.row] > 0) & (pred_ids[table.col] > 0)
    row, col, inter = table.row[fg], table.col[fg], table.data[fg]
    iou = inter / (sizes_gt[row] + sizes_pred[col] - inter)
    # Ids are sorted, so background (0), where present, is index 0 on each side.
    shift_gt, shift_pred = int(gt_ids[:1].tolist() == [0]), int(pred_ids[:1].tolist() == [0])
    return _Overlaps(gt_ids[shift_gt:], pred_ids[shift_pred:], row - shift_gt,
                     col - shift_pred, iou)


def _match_at(ov: _Overlaps, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    keep = ov.iou >= threshold
    return _match_pairs(ov.rows[keep], ov.cols[keep], ov.iou[keep])


def _match_pairs(
    rows: np.ndarray, cols: np.ndarray, values: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Most one-to-one matches among candidate pairs, ties broken by the larger summed IoU."""
    if len(np.unique(rows)) == len(rows) and len(np.unique(cols)) == len(cols):
        # Always the case above IoU 0.5: each object has at most one candidate.
        return rows, cols
    urows, r_index = np.unique(rows, return_inverse=True)
    ucols, c_index = np.unique(cols, return_inverse=True)
    score = np.zeros((len(urows), len(ucols)))
    # 1 per match dominates; the IoU term (< 1/2 in total) only breaks ties.
    score[r_index, c_index] = 1.0 + values / (2.0 * len(values))
    r, c = linear_sum_assignment(score, maximize=True)
    keep = score[r, c] > 0
    return urows[r[keep]], ucols[c[keep]]


def average_precision(
    gt_instances: np.ndarray,
    pred_instances: np.ndarray,
    thresholds: Iterable[float] = DEFAULT_THRESHOLDS,
) -> dict[float, float]:
    """Instance AP = TP / (TP + FP + FN) at each IoU threshold (DSB 2018 / StarDist).

    Parameters
    ----------
    gt_instances, pred_instances : (H, W) int
        0 = background, ids >= 1 objects (need not be consecutive).
    thresholds : floats in (0, 1]
        IoU thresholds; defaults to 0.5, 0.55, ..., 0.9.

    Returns
    -------
    dict threshold -> AP
        1.0 where both images have no object.
    """
    return _average_precision(_overlaps(gt_instances, pred_instances), thresholds)


def _average_precision(ov: _Overlaps, thresholds: Iterable[float]) -> dict[float, float]:
    out: dict[float, float] = {}
    for t in thresholds:
        t = float(t)
        if not 0 < t <= 1:
            raise ValueError(f"IoU thresholds must lie in (0, 1], got {t}")
        tp = len(_match_at(ov, t)[0])
        denominator = len(ov.gt_ids) + len(ov.pred_ids) - tp  # TP + FP + FN
        out[t] = 1.0 if denominator == 0 else tp / denominator
    return out


def touching_pairs(instances: np.ndarray) -> np.ndarray:
    """Pairs of objects with 8-adjacent pixels.

    Returns
    -------
    (n_pairs, 2) int array
        Each pair once, smaller id first, sorted.
    """
    labels = np.asarray(instances)
    if labels.ndim != 2:
        raise ValueError(f"instances must be 2-D (H, W), got shape {labels.shape}")
    h, w = labels.shape
    padded = np.pad(labels, 1)
    centre = padded[1 : h + 1, 1 : w + 1]
    found = []
    for dy, dx in _HALF_NEIGHBOURHOOD:
        other = padded[1 + dy : h + 1 + dy, 1 + dx : w + 1 + dx]
        hit = (centre > 0) & (other > 0) & (centre != other)
        a, b = centre[hit], other[hit]
        found.append(np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1))
    return np.unique(np.concatenate(found), axis=0)


def split_rate(gt: np.ndarray, pred: np.ndarray, threshold: float = 0.5) -> tuple[float, int]:
    """How often touching ground-truth objects come out as two separate predictions.

    A touching pair (two ground-truth objects with 8-adjacent pixels) counts as split when both
    are matched (one-to-one, IoU >= ``threshold``) to predictions; one-to-one matching makes
    those two predictions different objects.

    Returns
    -------
    rate : float
        Split pairs / touching pairs; NaN when the ground truth has no touching pair.
    n_pairs : int
        Number of touching ground-truth pairs.
    """
    return _split_rate(gt, _overlaps(gt, pred), threshold)


def _split_rate(gt: np.ndarray, ov: _Overlaps, threshold: float) -> tuple[float, int]:
    pairs = touching_pairs(np.asarray(gt))
    if len(pairs) == 0:
        return float("nan"), 0
    rows, _ = _match_at(ov, threshold)
    matched = np.zeros(len(ov.gt_ids), bool)
    matched[rows] = True
    index = np.searchsorted(ov.gt_ids, pairs)
    split = matched[index[:, 0]] & matched[index[:, 1]]
    return float(split.mean()), len(pairs)


def evaluate(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """The report card of one instance prediction.

    Returns
    -------
    dict
        ``iou``, ``dice`` (foreground pixels), ``ap50``, ``ap75`` (instance AP at IoU 0.5 and
        0.75), ``split_rate`` (NaN without touching pairs), ``n_touching_pairs``, ``n_gt``,
        ``n_pred``.
    """
    ov = _overlaps(gt, pred)
    ap = _average_precision(ov, (0.5, 0.75))
    rate, n_pairs = _split_rate(gt, ov, 0.5)
    return {
        "iou": pixel_iou(gt, pred),
        "dice": dice(gt, pred),
        "ap50": ap[0.5],
        "ap75": ap[0.75],
        "split_rate": rate,
        "n_touching_pairs": n_pairs,
        "n_gt": len(ov.gt_ids),
        "n_pred": len(ov.pred_ids),
    }


def _pair(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(gt), np.asarray(pred)
    if a.shape != b.shape:
        raise ValueError(f"ground truth {a.shape} and prediction {b.shape} differ in shape")
    for name, x in (("ground truth", a), ("prediction", b)):
        if not (np.issubdtype(x.dtype, np.integer) or x.dtype == bool):
            raise ValueError(f"{name} labels must be integers, got {x.dtype}")
        if x.size and np.issubdtype(x.dtype, np.signedinteger) and x.min() < 0:
            raise ValueError(f"{name} labels must be >= 0, found {int(x.min())}")
    return a, b


def _class_counts(
    gt: np.ndarray, pred: np.ndarray, num_classes: int, ignore_mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a, b = _pair(gt, pred)
    keep = np.ones(a.shape, bool) if ignore_mask is None else ~np.asarray(ignore_mask, bool)
    if keep.shape != a.shape:
        raise ValueError(f"ignore_mask {keep.shape} and labels {a.shape} differ in shape")
    a, b = a[keep].astype(np.int64), b[keep].astype(np.int64)
    for name, x in (("ground truth", a), ("prediction", b)):
        if x.size and x.max() >= num_classes:
            raise ValueError(
                f"{name} has class {int(x.max())} but num_classes is {num_classes} "
                "(mark ignore values in ignore_mask)"
            )
    k = int(num_classes)
    inter = np.bincount(a[a == b], minlength=k)[:k].astype(np.float64)
    return inter, np.bincount(a, minlength=k)[:k], np.bincount(b, minlength=k)[:k]
