"""The two exact methods of ``object_distances`` against the definition (one full-image
distance transform per object), on random label images of every density."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_unet.core.data.synthetic import synthetic_nuclei
from napari_unet.core.training import object_distances as od
from napari_unet.core.training.weight_map import separated_instances

CUTOFF = 5 * np.sqrt(2 * np.log(10 / 1e-6))  # the paper's w0 = 10, sigma = 5


def by_definition(labels):
    ids = [i for i in np.unique(labels) if i > 0]
    d = np.stack([ndi.distance_transform_edt(labels != i) for i in ids])
    d.sort(axis=0)
    return d[0], d[1]


def random_labels(seed):
    rng = np.random.default_rng(seed)
    if seed % 3 == 0:
        shape = (int(rng.integers(40, 120)), int(rng.integers(40, 120)))
        _, labels = synthetic_nuclei(shape, n_objects=int(rng.integers(3, 30)), touching=0.5,
                                     seed=seed)
        return separated_instances(labels)
    shape = (int(rng.integers(5, 80)), int(rng.integers(5, 80)))
    labels = np.zeros(shape, np.int64)
    mask = rng.random(shape) < rng.choice([0.003, 0.02, 0.1, 0.4])
    labels[mask] = rng.integers(1, int(rng.integers(3, 40)), int(mask.sum()))
    labels[0, 0], labels[-1, -1] = 1, 2  # at least two objects
    return labels


@pytest.mark.parametrize("method", [od._windowed, od._swept])
@pytest.mark.parametrize("seed", range(12))
def test_exact_where_it_matters_and_never_smaller(method, seed):
    labels = random_labels(seed)
    true1, true2 = by_definition(labels)
    compact, _ = od.compact_ids(labels)
    d1, d2 = method(compact, CUTOFF)
    background = labels == 0
    matters = background & (true1 + true2 <= CUTOFF)
    np.testing.assert_allclose(d1[matters], true1[matters], atol=1e-9)
    np.testing.assert_allclose(d2[matters], true2[matters], atol=1e-9)
    assert np.all(d1[background] >= true1[background] - 1e-9)
    assert np.all(d2[background] >= true2[background] - 1e-9)


def test_ids_are_renumbered_in_order_whatever_their_size():
    labels = np.array([[0, 2**64 - 1, 7], [2**63, 0, 7]], np.uint64)
    compact, n = od.compact_ids(labels)
    assert n == 3 and compact.dtype == np.int32
    np.testing.assert_array_equal(compact, [[0, 3, 1], [2, 0, 1]])
    compact, n = od.compact_ids(np.array([[0, 3], [5, 3]], np.uint8))
    np.testing.assert_array_equal(compact, [[0, 1], [2, 1]])
    assert n == 2


def test_many_objects_take_the_transform_whose_cost_does_not_grow_with_them(monkeypatch):
    labels = np.zeros((300, 300), np.int32)
    labels[::2, ::2] = np.arange(1, 150 * 150 + 1).reshape(150, 150)
    monkeypatch.setattr(od, "_windowed", lambda *a: pytest.fail("windows for 22,500 objects"))
    d1, d2 = od.two_nearest_distances(labels, CUTOFF)
    assert d1[0, 1] == 1 and d2[0, 1] == 1
    assert d1[1, 1] == pytest.approx(np.sqrt(2)) and d2[1, 1] == pytest.approx(np.sqrt(2))
