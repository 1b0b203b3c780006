"""The fine-tune benchmark's data stays out of the default model's training data."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_unet.core.data.synthetic import STYLES, random_style

ROOT = Path(__file__).parents[2]


def load(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module  # (dataclasses look their module up there)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return load(ROOT / "benchmarks" / "bench_finetune.py")


def test_benchmark_style_is_outside_every_training_look(bench):
    style = bench.STYLE
    # The default model's synthetic data: the plain look (no nucleoli) and varied_nuclei's
    # random_style draws. None of 2,000 draws comes near the benchmark's look.
    rng = np.random.default_rng(0)
    for _ in range(2000):
        drawn, _ = random_style(rng)
        assert drawn.nucleoli < style.nucleoli or drawn.texture < style.texture \
            or drawn.background < style.background
    assert max(s.nucleoli for s in STYLES.values()) < style.nucleoli


def test_benchmark_paints_only_the_top_half_and_scores_the_bottom(bench):
    data = bench.protocol_data()
    half = bench.SHAPE[0] // 2
    painted, labels = data["painted"], data["labels"][:half]
    assert painted.shape == (half, bench.SHAPE[1]) and data["bottom"].shape == painted.shape
    objects = np.unique(painted[painted > 1]) - 1
    assert objects.size == bench.N_OBJECTS
    for i in objects:  # whole nuclei, exactly as in the ground truth
        assert np.array_equal(painted == i + 1, labels == i)
    assert ((painted == 1) <= (labels == 0)).all()  # painted background is background
    assert data["bottom_labels"].max() >= 30  # enough nuclei to score


@pytest.fixture(scope="module")
def proxies():
    return load(ROOT / "benchmarks" / "finetune_proxies.py")


def test_label_shifts_move_every_outline(proxies):
    labels = np.zeros((40, 40), np.int32)
    labels[5:25, 5:20] = 1
    labels[5:25, 20:35] = 2  # touching: eroded apart
    eroded = proxies.erode_labels(labels, 2)
    assert np.array_equal(eroded == 1, np.pad(np.ones((16, 11), bool), ((7, 17), (7, 22))))
    assert not (eroded > 0)[:, 18:22].any()
    edge = np.zeros((10, 10), np.int32)
    edge[:5] = 3  # the image border is not an outline
    assert (proxies.erode_labels(edge, 1)[0] == 3).all()


def test_proxy_workflows_paint_only_what_the_labels_say(proxies):
    proxy = proxies.build("clusters", "tune", 0)
    sparse = proxy.painted("sparse")
    objects = sum(len(np.unique(p[p > 1])) for p in sparse)
    assert objects == proxies.N_OBJECTS
    for painted, labels in zip(sparse, proxy.labels, strict=True):
        for i in np.unique(painted[painted > 1]):  # whole objects, as labelled
            assert np.array_equal(painted == i, labels == i - 1)
        assert ((painted == 1) <= (labels == 0)).all()
    for painted, labels in zip(proxy.painted("correct"), proxy.labels, strict=True):
        assert np.array_equal(painted, np.where(labels > 0, labels + 1, 1))
    for mixed, dense, paint in zip(proxy.painted("mixed"), proxy.painted("correct"), sparse,
                                   strict=True):
        crop = dense.shape[1] // 2  # the left half corrected, the sparse paint beyond it
        assert np.array_equal(mixed[:, :crop], dense[:, :crop])
        assert np.array_equal(mixed[:, crop:], paint[:, crop:])
        assert (mixed[:, crop:] == 0).any() and (mixed[:, :crop] > 0).all()
    # the scored part is another part of the images, and the held-out share other images
    held = proxies.build("clusters", "held", 0)
    assert not np.array_equal(held.images[0], proxy.images[0])
    assert all(image.shape == truth.shape for image, truth in proxy.scored)


def test_cells3d_shares_use_disjoint_planes(proxies):
    tune, held = proxies.CELLS3D_PLANES["tune"], proxies.CELLS3D_PLANES["held"]
    planes = [z for share in (tune, held) for part in share for z in part]
    assert len(planes) == len(set(planes)) and all(23 <= z <= 45 for z in planes)


def test_proxy_runs_score_the_weights_a_save_would_keep(bench, proxies):
    proxy = proxies.build("clusters", "tune", 0)
    logged = []
    # a corrected crop: its held-out tenth is large enough to choose the kept weights
    run = bench.run_proxy("finetune", dict(preset="finetune", workers=0, validate_every=1),
                          proxy, "correct", [], logged.append, step_marks=[2, 3])
    assert [row["step"] for row in run["curve"]] == [2, 3]
    assert all(1 <= row["kept_step"] <= row["step"] for row in run["curve"])
    # where the kept weights are an earlier step's, the last ones are scored beside them
    assert all(("last" in row) == (row["kept_step"] != row["step"]) for row in run["curve"])
    assert len(logged) == 2 and {"ap50", "iou", "area_ratio"} <= set(run["curve"][0])
    # without validation the last weights are scored
    run = bench.run_proxy("finetune", dict(preset="finetune", workers=0, validate_every=0),
                          proxy, "correct", [], logged.append, step_marks=[2])
    assert run["curve"][0]["kept_step"] == run["curve"][0]["step"] == 2


def test_differences_pair_each_recipe_with_the_last_seed_by_seed(bench):
    def run(recipe, seed, ap, iou):
        return {"recipe": recipe, "proxy": "clusters", "workflow": "sparse", "seed": seed,
                "curve": [{"step": 450, "ap50": ap, "iou": iou}]}

    runs = [run("new", 0, 0.70, 0.90), run("new", 1, 0.50, 0.80), run("new", 2, 0.60, 0.85),
            run("old", 1, 0.55, 0.81), run("old", 0, 0.60, 0.91), run("old", 2, 0.60, 0.86)]
    table = bench.differences_table(runs).splitlines()
    assert table[0].startswith("| proxy | workflow | recipe - old |")
    # AP differences +0.10, -0.05, 0.00: mean +0.017, sd 0.076, one win; IoU -0.01 each
    assert table[2] == ("| clusters | sparse | new | 450 | 3 | +0.017 (0.076) | 1/3 "
                        "| -0.010 (0.000) | 0/3 |")
    assert bench.differences_table(runs[:3]) == ""  # one recipe: nothing to compare


def test_the_preset_before_gaps_balanced_the_classes_of_dense_labels(bench):
    before = bench.RECIPES["before-gaps"]
    assert bench.config_overrides(before, dense=True)["class_weights"] == "balanced"
    sparse = bench.config_overrides(before, dense=False)
    assert "class_weights" not in sparse and "dense_class_weights" not in sparse
    assert bench.config_overrides({"lr": 1e-3}, dense=True) == {"lr": 1e-3}
