"""Scores pooled over many images: what a data set's accuracy report needs.

Averaging per-image AP overweights images with few objects; here true/false positives and
negatives, pixel intersections/unions and touching pairs are summed over all images first (the
way DSB 2018 and StarDist pool a test set), then turned into one IoU, Dice, AP and split rate.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from .metrics import iou_matrix, match, touching_pairs


def evaluate_dataset(
    pairs: Iterable[tuple[np.ndarray, np.ndarray]], thresholds: tuple[float, ...] = (0.5, 0.75)
) -> dict[str, float]:
    """Pooled scores of ``(ground_truth, prediction)`` instance-label pairs.

    Parameters
    ----------
    pairs : iterable of ((H, W) int, (H, W) int)
        Ground-truth and predicted instances (0 = background); sizes may differ between pairs.
    thresholds : tuple of float
        IoU thresholds of the instance AP.

    Returns
    -------
    dict
        ``iou`` and ``dice`` (foreground pixels), ``ap50``/``ap75``/... (``"ap" + 100 t``),
        ``split_rate`` (NaN without touching pairs), ``n_touching_pairs``, ``n_gt``, ``n_pred``,
        ``n_images``.
    """
    inter = union = fg_total = 0
    tp = dict.fromkeys(thresholds, 0)
    n_gt = n_pred = n_images = n_pairs = n_split = 0
    for gt, pred in pairs:
        gt, pred = np.asarray(gt), np.asarray(pred)
        iou, gt_ids, pred_ids = iou_matrix(gt, pred)
        a, b = gt > 0, pred > 0
        inter += int(np.count_nonzero(a & b))
        union += int(np.count_nonzero(a | b))
        fg_total += int(np.count_nonzero(a)) + int(np.count_nonzero(b))
        for t in thresholds:
            tp[t] += len(match(iou, t)[0])
        n_gt, n_pred, n_images = n_gt + len(gt_ids), n_pred + len(pred_ids), n_images + 1
        touching = touching_pairs(gt)
        if len(touching):
            matched = np.zeros(len(gt_ids), bool)
            matched[match(iou, 0.5)[0]] = True
            index = np.searchsorted(gt_ids, touching)
            n_split += int(np.count_nonzero(matched[index[:, 0]] & matched[index[:, 1]]))
            n_pairs += len(touching)
    scores: dict[str, float] = {
        "iou": 1.0 if union == 0 else inter / union,
        "dice": 1.0 if fg_total == 0 else 2 * inter / fg_total,
    }
    for t in thresholds:
        denominator = n_gt + n_pred - tp[t]
        scores[f"ap{round(100 * t)}"] = 1.0 if denominator == 0 else tp[t] / denominator
    scores.update(split_rate=n_split / n_pairs if n_pairs else float("nan"),
                  n_touching_pairs=n_pairs, n_gt=n_gt, n_pred=n_pred, n_images=n_images)
    return scores


def evaluate_model(
    model: Any, meta: Mapping[str, Any] | None,
    pairs: Iterable[tuple[np.ndarray, np.ndarray]], **predict_kwargs: Any,
) -> dict[str, float]:
    """Predict every ``(image, ground_truth)`` pair with ``model`` and pool the scores.

    ``predict_kwargs`` are :class:`~core.inference.config.PredictConfig` fields (e.g.
    ``tta=True``, ``split_touching=False``); the result is :func:`evaluate_dataset`'s.
    """
    from ..inference.prediction import predict_image

    return evaluate_dataset((truth, predict_image(model, image, meta, **predict_kwargs).instances)
                            for image, truth in pairs)
