import dask.array as da
import numpy as np
import pytest

from napari_unet.core.layout import channels_at_minus3


@pytest.mark.parametrize(("shape", "axis", "expected", "channels"), [
    ((5, 7), None, (1, 5, 7), 1),
    ((3, 5, 7), None, (3, 1, 5, 7), 1),
    ((5, 7, 2), -1, (2, 5, 7), 2),
    ((2, 5, 7), 0, (2, 5, 7), 2),
    ((3, 5, 7, 2), 3, (3, 2, 5, 7), 2),
    ((2, 3, 5, 7), 0, (3, 2, 5, 7), 2),
])
def test_channels_go_to_minus3_as_views(shape, axis, expected, channels):
    image = np.arange(np.prod(shape)).reshape(shape)
    view, n = channels_at_minus3(image, axis)
    assert view.shape == expected and n == channels
    assert np.shares_memory(view, image)  # no copy
    lazy, n_lazy = channels_at_minus3(da.from_array(image, chunks=2), axis)
    assert isinstance(lazy, da.Array) and n_lazy == channels
    np.testing.assert_array_equal(lazy.compute(), view)
    if axis is not None:  # the values moved with their axis
        c = axis % len(shape)
        first = np.take(image, 1, axis=c)
        np.testing.assert_array_equal(np.take(view, 1, axis=-3), first)
