"""Hostile files and values (issue #42): label images of a million objects, absurd ids and
parameters, spacings and pixel sizes from a file's metadata, headers of a few bytes, paths
that are folders, pipes or devices, unreadable files. Each ends quickly in a result or in one
line naming the file or the parameter, and leaves its inputs byte-identical."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_unet.core.training.weight_map import weight_map

from .conftest import cli, deadline, snapshot


def one_pixel_objects(side: int) -> np.ndarray:
    """``side`` x ``side`` labels with a one-pixel object on every other row and column."""
    labels = np.zeros((side, side), np.uint32)
    n = (side + 1) // 2
    labels[::2, ::2] = np.arange(1, n * n + 1, dtype=np.uint32).reshape(n, n)
    return labels


# --- weight map: object count, ids and parameters ------------------------------------------

def test_weight_map_of_a_quarter_million_one_pixel_objects_is_exact():
    # 1000 x 1000 with 250,000 objects: the per-object windows would pair 6e10 neighbours.
    labels = one_pixel_objects(1000)
    with deadline(60):
        w = weight_map(labels)
    border = lambda d1, d2: 10 * np.exp(-((d1 + d2) ** 2) / 50)  # noqa: E731
    # Background weighs 1 (3/4 of the pixels), objects 3; between two objects 1 px away each:
    assert w[0, 1] == pytest.approx(1 + border(1, 1), abs=1e-5)
    # Diagonal between four objects: d1 = d2 = sqrt(2).
    assert w[1, 1] == pytest.approx(1 + border(np.sqrt(2), np.sqrt(2)), abs=1e-5)
    assert w[500, 500] == pytest.approx(3.0)


def test_weight_map_ids_near_two_to_the_64_are_objects_like_any_other():
    small = np.zeros((40, 40), np.int32)
    small[3:8, 3:8], small[3:8, 11:16] = 1, 2
    huge = small.astype(np.uint64)
    huge[small == 1], huge[small == 2] = 2**64 - 2, 2**64 - 1
    np.testing.assert_array_equal(weight_map(huge), weight_map(small))


@pytest.mark.parametrize("name,value", [("w0", "abc"), ("w0", None), ("sigma", "5"),
                                        ("sigma", [5.0])])
def test_weight_map_parameters_of_the_wrong_type_are_named(name, value):
    with pytest.raises(TypeError, match=f"^{name} must be a number"):
        weight_map(np.zeros((8, 8), np.int32), **{name: value})


def test_train_on_labels_of_one_pixel_objects_runs(work, capsys):
    labels = one_pixel_objects(256)  # 16,384 objects
    tifffile.imwrite(work / "dense.tif", labels)
    tifffile.imwrite(work / "big.tif", np.random.default_rng(0).integers(0, 255, (256, 256),
                                                                         dtype=np.uint8))
    before = snapshot(work)
    with deadline(120):
        status, _, err = cli(capsys, "train", "--image", work / "big.tif", "--labels",
                             work / "dense.tif", "--model", work / "tiny.pt", "--out",
                             work / "out.pt", "--iterations", "2", "--device", "cpu",
                             "--no-plots", "--workers", "0")
    assert status == 0, err
    assert (work / "out.pt").is_file()
    after = snapshot(work)
    assert {k: v for k, v in after.items() if k != "out.pt"} == before
