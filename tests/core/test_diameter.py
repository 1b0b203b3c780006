"""Automatic object-diameter estimate (core.diameter) with the shipped default model."""

import numpy as np
import pytest
from skimage.transform import rescale

from napari_unet.core.checkpoint import load_model
from napari_unet.core.diameter import (
    DiameterEstimate,
    band_text,
    confident_diameters,
    estimate_diameter,
    model_scale,
)
from napari_unet.core.evaluation import evaluate_dataset
from napari_unet.core.prediction import predict_image
from napari_unet.core.synthetic import equivalent_diameters, synthetic_nuclei


@pytest.fixture(scope="module")
def default_model():
    return load_model("default")


@pytest.mark.parametrize("radius", [(5.0, 8.0), (12.0, 17.0)])
def test_estimate_recovers_the_known_scale_within_15_percent(default_model, radius):
    model, meta = default_model
    image, labels = synthetic_nuclei((192, 192), radius=radius, touching=0.3, seed=11)
    truth = float(np.median(equivalent_diameters(labels)))
    estimate = estimate_diameter(model, image, meta, band=(1.0, 1.0))  # always two passes
    assert isinstance(estimate, DiameterEstimate) and estimate.rescale
    assert estimate.n_objects >= 5
    assert abs(estimate.diameter - truth) <= 0.15 * truth, (estimate, truth)
    assert f"{estimate.diameter:.1f} px" in estimate.note


def test_rescaled_image_scores_close_to_the_original_with_the_estimate(default_model):
    model, meta = default_model
    meta = meta.replace(object_diameter=12.0)
    image, labels = synthetic_nuclei((128, 128), radius=(7.0, 10.0), touching=0.3, seed=4)
    original = evaluate_dataset([(labels, predict_image(model, image, meta).instances)])
    big = rescale(image, 2.0, order=1, preserve_range=True).astype(np.float32)
    big_labels = rescale(labels, 2.0, order=0, preserve_range=True,
                         anti_aliasing=False).astype(np.int32)
    estimate = estimate_diameter(model, big, meta)
    assert estimate.rescale  # ~34 px objects, more than 2x the model's 12 px: rescaled
    scored = evaluate_dataset([(big_labels, predict_image(
        model, big, meta, object_diameter=estimate.diameter).instances)])
    assert scored["ap50"] >= original["ap50"] - 0.1, (scored, original)


def test_within_the_models_band_the_image_is_left_alone(default_model):
    model, meta = default_model
    image, labels = synthetic_nuclei((128, 128), radius=(7.0, 10.0), seed=6)
    truth = float(np.median(equivalent_diameters(labels)))
    estimate = estimate_diameter(model, image, meta.replace(object_diameter=1.5 * truth))
    assert not estimate.rescale and "no rescale" in estimate.note
    assert "within the model's" in estimate.note
    assert abs(estimate.diameter - truth) <= 0.15 * truth


def test_no_objects_gives_a_note_and_no_rescale(default_model):
    model, meta = default_model
    flat = np.random.default_rng(0).normal(100, 1, (96, 96)).astype(np.float32)
    estimate = estimate_diameter(model, flat, meta)
    assert not estimate.rescale and estimate.n_objects < 3
    assert "own scale" in estimate.note


def test_estimate_far_outside_the_training_range_is_not_used(default_model):
    model, meta = default_model
    image, _ = synthetic_nuclei((128, 128), radius=(6.0, 9.0), seed=2)
    estimate = estimate_diameter(model, image, meta.replace(object_diameter=200.0))
    assert not estimate.rescale and estimate.diameter is not None
    assert "no rescale" in estimate.note and "200.0 px" in estimate.note
    unknown = estimate_diameter(model, image, meta.replace(object_diameter=None))
    assert not unknown.rescale and "does not record" in unknown.note


def test_confident_diameters_skip_unsure_and_border_objects():
    labels = np.zeros((40, 40), np.int32)
    labels[10:20, 10:20] = 1   # confident, area 100
    labels[25:35, 25:35] = 2   # unsure
    labels[0:5, 30:38] = 3     # touches the border
    fg = np.where(labels > 0, 0.95, 0.0)
    fg[labels == 2] = 0.6
    np.testing.assert_allclose(confident_diameters(labels, fg, 0.8), [2 * np.sqrt(100 / np.pi)])
    assert confident_diameters(np.zeros((5, 5), np.int32), np.zeros((5, 5))).size == 0


@pytest.mark.parametrize("bad", [dict(confidence=1.5), dict(min_objects=0),
                                 dict(max_ratio=1.5), dict(band=(1.5, 2.0)),
                                 dict(band=(0.5, 0.9)), dict(band=(0.0, 2.0))])
def test_bad_settings_are_refused(default_model, bad):
    model, meta = default_model
    with pytest.raises(ValueError):
        estimate_diameter(model, np.zeros((32, 32), np.float32), meta, **bad)


def test_objects_three_times_the_recorded_size_are_measured_and_rescaled(default_model):
    # (The fragment case the coarser first passes guard against, nuclei ~90 px that the
    # shipped net breaks up at full scale, needs a 512-px real image: scale_experiment.py.)
    model, meta = default_model
    image, labels = synthetic_nuclei((384, 384), radius=(22.0, 28.0), touching=0.2, seed=3)
    truth = float(np.median(equivalent_diameters(labels)))
    estimate = estimate_diameter(model, image, meta.replace(object_diameter=16.0))
    assert estimate.rescale
    assert abs(estimate.diameter - truth) <= 0.15 * truth, (estimate, truth)


def test_model_scale_brings_objects_to_the_bands_nearer_edge():
    # trained at 20 px, band 0.5-1.5: 10-30 px left alone
    assert model_scale(10.0, 20.0) == model_scale(24.0, 20.0) == model_scale(30.0, 20.0) == 1.0
    assert model_scale(5.0, 20.0) == pytest.approx(2.0)     # 5 -> 10 px
    assert model_scale(60.0, 20.0) == pytest.approx(0.5)    # 60 -> 30 px
    assert model_scale(90.0, 20.0, band=(1.0, 1.0)) == pytest.approx(20 / 90)
    assert band_text(20.0) == "10.0-30.0 px (trained at 20.0 px)"


def test_a_rescaling_estimate_names_the_band_and_the_factor(default_model):
    model, meta = default_model
    image, labels = synthetic_nuclei((384, 384), radius=(22.0, 28.0), touching=0.2, seed=3)
    estimate = estimate_diameter(model, image, meta.replace(object_diameter=16.0))
    assert estimate.rescale and "outside the model's 8.0-24.0 px" in estimate.note
    assert f"rescaled by {24.0 / estimate.diameter:.2f}" in estimate.note
