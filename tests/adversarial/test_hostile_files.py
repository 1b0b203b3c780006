"""Hostile files and values (issue #42): label images of a million objects, absurd ids and
parameters, spacings and pixel sizes from a file's metadata, headers of a few bytes, paths
that are folders, pipes or devices, unreadable files. Each ends quickly in a result or in one
line naming the file or the parameter, and leaves its inputs byte-identical."""

from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_unet.core.io import resources
from napari_unet.core.training.weight_map import weight_map

from .conftest import cli, deadline, snapshot


def shared_strip_bomb(path: Path, side: int = 65536) -> Path:
    """A ~0.5 MB TIFF declaring ``side`` x ``side`` uint8 pixels in one zlib strip per row,
    every strip pointing at the same compressed row of zeros (each strip is small, so the
    per-block memory check passes; the whole image is 4 GiB)."""
    row = zlib.compress(bytes(side), 9)
    tags = 9
    offsets_at = 8 + 2 + tags * 12 + 4
    counts_at = offsets_at + 4 * side
    strip_at = counts_at + 4 * side
    entries = [(256, 4, 1, side), (257, 4, 1, side), (258, 3, 1, 8), (259, 3, 1, 8),
               (262, 3, 1, 1), (273, 4, side, offsets_at), (277, 3, 1, 1), (278, 4, 1, 1),
               (279, 4, side, counts_at)]
    path.write_bytes(b"II*\x00" + struct.pack("<IH", 8, tags)
                     + b"".join(struct.pack("<HHII", *e) for e in entries) + bytes(4)
                     + struct.pack(f"<{side}I", *[strip_at] * side)
                     + struct.pack(f"<{side}I", *[len(row)] * side) + row)
    return path


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


# --- batch: a TIFF bomb whose every strip is small ----------------------------------------

def test_batch_refuses_a_shared_strip_bomb_as_predict_does(work, capsys, monkeypatch):
    monkeypatch.setattr(resources, "available_memory", lambda: 2**30)
    folder = work / "in"
    folder.mkdir()
    shared_strip_bomb(folder / "bomb.tif")
    shutil.copy(work / "img.tif", folder / "ok.tif")
    before = snapshot(folder)
    with deadline(60):
        status, out, err = cli(capsys, "batch", "--image", folder, "--out", work / "out",
                               "--model", work / "tiny.pt", "--device", "cpu")
    assert status == 1, err
    assert "done 1, skipped 0 (already there), failed 1" in out + err
    line = next(x for x in (out + err).splitlines() if "bomb.tif:" in x)
    assert "65536 x 65536" in line and "needs 48.0 GiB of memory" in line, line
    assert sorted(p.name for p in (work / "out").iterdir()) == ["ok.tif"]
    assert snapshot(folder) == before
