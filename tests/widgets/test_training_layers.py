import numpy as np
import pytest

from napari_unet._widgets.training_layers import (
    BACKGROUND_RGBA,
    annotation_counts,
    next_free_id,
    prediction_to_training,
    replace_with_history,
    training_colormap,
    training_geometry,
)


def test_training_geometry_drops_channel_axis():
    assert training_geometry((5, 2, 30, 40), (2.0, 1.0, 0.5, 0.5), (0, 0, 10, 20), 1) == (
        (5, 30, 40), (2.0, 0.5, 0.5), (0, 10, 20))
    assert training_geometry((30, 40), (1, 1), (0, 0)) == ((30, 40), (1, 1), (0, 0))
    with pytest.raises(ValueError, match="no 2D plane"):
        training_geometry((2, 40), (1, 1), (0, 0), 0)


def test_next_free_id_and_counts():
    labels = np.array([[0, 1, 1], [2, 2, 5], [0, 0, 1]])
    assert next_free_id(labels) == 6
    assert next_free_id(np.zeros((2, 2))) == 2
    assert next_free_id(np.ones((2, 2))) == 2
    assert annotation_counts(labels) == {"annotated": 6, "background": 3, "objects": 2}
    assert annotation_counts(np.zeros((3, 3), int)) == {"annotated": 0, "background": 0,
                                                        "objects": 0}


def test_prediction_to_training_is_exact():
    pred = np.array([[0, 0, 3], [7, 0, 3]], np.int32)
    np.testing.assert_array_equal(prediction_to_training(pred),
                                  [[1, 1, 4], [8, 1, 4]])
    semantic = np.array([[0, 2, 255]], np.uint8)
    np.testing.assert_array_equal(prediction_to_training(semantic, "semantic"), [[1, 3, 0]])
    with pytest.raises(ValueError, match="integer"):
        prediction_to_training(np.zeros((2, 2), np.float32))


def test_background_colour_is_see_through_grey():
    cmap = training_colormap(3)
    np.testing.assert_allclose(cmap.map(1), BACKGROUND_RGBA, atol=1e-6)
    assert cmap.map(0)[3] == 0
    assert cmap.map(2)[3] == 1 and not np.allclose(cmap.map(2), cmap.map(3))


def test_replace_with_history_refuses_values_that_do_not_fit():
    from napari.layers import Labels

    layer = Labels(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="do not fit the uint8"):
        replace_with_history(layer, np.full((4, 4), 300))
    assert layer.data.max() == 0 and replace_with_history(layer, np.ones((4, 4), int)) == 16
