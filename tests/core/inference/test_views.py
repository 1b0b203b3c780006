"""core.views: folding the XZ/YZ slices' foreground into a volume's (2.5D)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.core.events import Progress
from napari_unet.core.inference.views import fold_orthogonal_views


def _as_probabilities(planes: np.ndarray):
    """A stand-in net (a sub-job): the foreground probability is the (single-channel) slice
    itself."""
    fg = planes[:, 0]
    yield Progress(1, 2, "half the band")
    return np.stack([1.0 - fg, fg], axis=1)


def _volume(shape=(6, 8, 10), seed=0):
    return np.random.default_rng(seed).random(shape).astype(np.float32)


@pytest.mark.parametrize("band_bytes", [1, 10**9])  # one slice per band, or one band
def test_every_voxel_keeps_the_minimum_of_the_three_views(band_bytes):
    image = _volume()
    xy = np.full(image.shape, 0.6, np.float32)
    events = list(fold_orthogonal_views(image[:, None], xy, None, _as_probabilities, 1.0,
                                        band_bytes=band_bytes))
    # at z spacing 1 the XZ and YZ slices are the volume's own voxels: each view sees `image`
    np.testing.assert_array_equal(xy, np.minimum(image, 0.6))
    assert all(isinstance(e, Progress) for e in events)
    assert (events[-1].step, events[-1].total) == (8 + 10, 8 + 10)
    # the net's progress within each band, mapped into the band's share, then the band's end
    assert len(events) == (2 * 18 if band_bytes == 1 else 2 * 2)
    if band_bytes > 1:
        assert [e.step for e in events] == [4, 8, 8 + 5, 18]


def test_each_orientation_is_read_along_its_own_axis():
    # a predictor that sees an XZ slice (Z, W) or a YZ slice (Z, H) and marks one column
    image = _volume((4, 6, 7))
    seen = []

    def predict(planes):
        seen.append(planes.shape)
        fg = np.ones((len(planes), *planes.shape[2:]), np.float32)
        fg[:, :, 2] = 0.0  # column 2 of each slice: x = 2 in XZ slices, y = 2 in YZ slices
        return np.stack([1 - fg, fg], axis=1)
        yield  # a sub-job

    fg = np.ones(image.shape, np.float32)
    list(fold_orthogonal_views(image[:, None], fg, None, predict, 1.0))
    # one call per band (here: all XZ slices, then all YZ slices), not one per slice
    assert seen == [(6, 1, 4, 7), (7, 1, 4, 6)]
    expected = np.ones(image.shape, np.float32)
    expected[:, :, 2] = 0.0
    expected[:, 2, :] = 0.0
    np.testing.assert_array_equal(fg, expected)


def test_slices_are_stretched_along_z_and_sampled_back():
    # z spacing 2.5: 4 slices are predicted as 10 rows; a ramp along z comes back as itself
    z = np.linspace(0.0, 0.9, 4, dtype=np.float32)
    image = np.broadcast_to(z[:, None, None], (4, 5, 6)).copy()
    shapes = []

    def predict(planes):
        shapes.append(planes.shape[1:])
        return (yield from _as_probabilities(planes))

    fg = np.ones(image.shape, np.float32)
    list(fold_orthogonal_views(image[:, None], fg, None, predict, 2.5))
    assert set(shapes) == {(1, 10, 6), (1, 10, 5)}
    # linear resampling up and back reproduces a ramp inside; the end slices see the edge
    np.testing.assert_allclose(fg[1:-1], image[1:-1], atol=1e-6)
    np.testing.assert_allclose(fg, image, atol=0.1)


def test_bad_arguments_are_refused():
    image = _volume((4, 5, 6))[:, None]
    with pytest.raises(ValueError, match="does not match the stack"):
        list(fold_orthogonal_views(image, np.ones((4, 5, 7), np.float32), None,
                                   _as_probabilities))
    with pytest.raises(ValueError, match="z_spacing must be > 0"):
        list(fold_orthogonal_views(image, np.ones((4, 5, 6), np.float32), None,
                                   _as_probabilities, 0.0))
