import numpy as np
import pytest

from napari_unet.core.data.evaluation import evaluate_dataset
from napari_unet.core.data.metrics import evaluate


def _squares(offsets, shape=(20, 40)):
    labels = np.zeros(shape, np.int32)
    for i, (y, x) in enumerate(offsets, start=1):
        labels[y : y + 6, x : x + 6] = i
    return labels


def test_single_pair_equals_per_image_metrics():
    gt = _squares([(2, 2), (2, 8), (10, 20)])  # 1 and 2 touch
    pred = _squares([(2, 2), (3, 8)])
    pooled = evaluate_dataset([(gt, pred)])
    single = evaluate(gt, pred)
    for key in ("iou", "dice", "ap50", "ap75", "split_rate", "n_gt", "n_pred"):
        assert pooled[key] == pytest.approx(single[key]), key


def test_pooling_sums_counts_instead_of_averaging():
    gt_a = _squares([(2, 2)])
    gt_b = _squares([(2, 2), (2, 12), (2, 22), (10, 2)])
    # Image a: the one object is missed. Image b: all four are found exactly.
    scores = evaluate_dataset([(gt_a, np.zeros_like(gt_a)), (gt_b, gt_b)])
    # Pooled: TP = 4, FN = 1, FP = 0 -> 4 / 5 (a per-image mean would give (0 + 1) / 2).
    assert scores["ap50"] == pytest.approx(0.8)
    assert scores["iou"] == pytest.approx(4 * 36 / (5 * 36))
    assert scores["n_images"] == 2 and scores["n_gt"] == 5 and scores["n_pred"] == 4
    assert np.isnan(scores["split_rate"]) and scores["n_touching_pairs"] == 0


def test_split_rate_pooled_over_touching_pairs():
    gt = _squares([(2, 2), (2, 8)])  # one touching pair
    merged = (gt > 0).astype(np.int32)
    scores = evaluate_dataset([(gt, gt), (gt, merged)])
    assert scores["n_touching_pairs"] == 2
    assert scores["split_rate"] == pytest.approx(0.5)


def test_evaluate_model_predicts_and_pools():
    import torch

    from napari_unet.core.data.evaluation import evaluate_model
    from napari_unet.core.inference.prediction import predict_image
    from napari_unet.core.model.unet import UNet

    torch.manual_seed(0)
    model = UNet(1, 2, base_channels=4, depth=2)
    rng = np.random.default_rng(0)
    pairs = [(rng.random((32, 40)).astype(np.float32), _squares([(2, 2), (10, 20)], (32, 40)))
             for _ in range(2)]
    expected = evaluate_dataset((gt, predict_image(model, image, device="cpu").instances)
                                for image, gt in pairs)
    assert evaluate_model(model, None, pairs, device="cpu") == pytest.approx(expected, nan_ok=True)
