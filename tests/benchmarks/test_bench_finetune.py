"""The fine-tune benchmark's data stays out of the default model's training data."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from napari_unet.core.data.synthetic import STYLES, random_style

ROOT = Path(__file__).parents[2]


def load(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
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
