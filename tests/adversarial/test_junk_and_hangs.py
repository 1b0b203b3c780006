"""Junk and hangs: declared sizes are checked before allocating, hostile models end quickly,
no temporary file outlives its command, and no process-wide setting is flipped."""

from __future__ import annotations

import os
import resource
import subprocess
import sys

import numpy as np
import pytest
import torch

from napari_unet.core.io import resources
from napari_unet.core.io.images import read_image, write_labels
from napari_unet.core.io.outputs import atomic_write
from napari_unet.core.model.checkpoint import load_model, save_model
from napari_unet.core.model.unet import UNet

from .conftest import assert_one_line_error, bomb_tiff, cli, deadline, leftovers

ONE_GIB = 2**30


@pytest.fixture
def little_memory(monkeypatch):
    monkeypatch.setattr(resources, "available_memory", lambda: ONE_GIB)


def test_compressed_tiff_declaring_a_huge_plane_is_refused_naming_sizes(tmp_path, little_memory,
                                                                       private_tmp):
    bomb = bomb_tiff(tmp_path / "bomb.tif")
    assert bomb.stat().st_size < 1000
    with deadline(10), pytest.raises(ValueError) as info:
        read_image(bomb)
    text = str(info.value)
    assert "65536 x 65536" in text and "4.0 GiB" in text and "1.0 GiB" in text
    assert str(bomb) in text
    assert leftovers(private_tmp) == []


def test_small_declared_image_over_the_memory_left_is_refused(tmp_path, monkeypatch):
    image = np.zeros((300, 400), np.uint16)
    import tifffile

    tifffile.imwrite(tmp_path / "a.tif", image)
    monkeypatch.setattr(resources, "available_memory", lambda: 1000)
    with pytest.raises(ValueError, match=r"300 x 400 uint16 image .* needs 234.4 KiB"):
        read_image(tmp_path / "a.tif")
    monkeypatch.undo()
    assert read_image(tmp_path / "a.tif").array.shape == (300, 400)


def test_predict_cli_on_a_tiff_bomb_is_one_line(work, capsys, little_memory, private_tmp):
    bomb = bomb_tiff(work / "bomb.tif")
    with deadline(60):
        status, _, err = cli(capsys, "predict", "--model", work / "tiny.pt", "--image", bomb,
                             "--out", work / "labels.tif", "--device", "cpu")
    assert_one_line_error(status, err, "65536 x 65536")
    assert not (work / "labels.tif").exists()
    assert leftovers(private_tmp) == []


def test_batch_on_a_tiff_bomb_fails_that_file_and_leaves_no_temp(work, capsys, little_memory,
                                                                 private_tmp):
    inputs = work / "in"
    inputs.mkdir()
    bomb_tiff(inputs / "bomb.tif")
    with deadline(60):
        status, out, err = cli(capsys, "batch", "--model", work / "tiny.pt", "--input", inputs,
                               "--out", work / "out", "--device", "cpu")
    assert status == 1, err
    assert "65536 x 65536" in out + err and "Traceback" not in err
    assert leftovers(private_tmp) == []  # no napari-unet-instances-*.dat
    assert list((work / "out").iterdir()) == []


@pytest.mark.slow
def test_predict_under_a_real_address_space_limit(work, tmp_path):
    """The issue's case: ``ulimit -v`` and a 4 GiB plane -> a clear message, status 2."""
    bomb = bomb_tiff(work / "bomb.tif")
    limit = 3 * ONE_GIB

    def limited():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    env = dict(os.environ, TMPDIR=str(tmp_path), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "napari_unet.cli", "predict", "--model",
                           str(work / "tiny.pt"), "--image", str(bomb), "--out",
                           str(work / "labels.tif"), "--device", "cpu"],
                          preexec_fn=limited, env=env, capture_output=True, text=True,
                          timeout=300)
    if "ImportError" in proc.stderr or "cannot allocate memory for thread" in proc.stderr:
        pytest.skip("the interpreter itself does not start under this limit here")
    assert_one_line_error(proc.returncode, proc.stderr, "65536 x 65536", "memory")
    assert [p for p in leftovers(tmp_path) if p != "work"] == []


# Found by the long fuzz run: an RGB TIFF with broken tags and a circular page chain made
# tifffile's series builder loop forever (zlib-compressed, base64: 1 KB).
LOOPING_TIFF = (
    "eNrz9NRi4GBgYOBnYGBkYWAEsgSAmBGJzcTIzMAMpA8BMTOQDRIHYTYomwmI+RiZGMSB9AkgFoTpBRKiUDUg/WJI"
    "ZopD2SAJKUZWMPsdEEszst61en6A4eFfB8FXz6S87hzeOAcs+Q2IZZAs10BiGwIt5wHS/xgggAMMq5WKMxILUpWs"
    "FKINzXQUQNg4tpYBDTCi4ZLMtLS0zJxUvYJKqIqKH+/rw6Sn1Afee7D//q6wxvdOH160X1EycD36uKJZVMsuXFzh"
    "jvhPDaW4fzM2WTfkvdg519aruajc7eOt5sPadvHTXqWIT7wU9jDdmlVc9fczl08NBsnL5t17+Xz9fcHgRfeK/go9"
    "rahU2MY08cjmnHVzhZbO4q3MnpZj57v6mNjUEi+pX5uXpculfnb22FjJ9a5j9wMvubcy63r+fIk4EfLo4u/cG1N+"
    "HZr8hFXDeFF2afAU7WbBmmN7vDiXdzyWVVDeWv1016KVa1ZN2OX4SmbH24JLT7ZePGWyyqrdoV/S4cYh/fPv+1o4"
    "Baz/Pdtz3u3klz0RQeI7zyziO661XTs1cOtp52QLphc7Qh8e28+odO3ECt+CfLWajjl6wvOnfpNdcWRa/0x5jvsF"
    "Ab8tH+2w71li9Llyk5uqTNPPX36n9VODG/61eL68ffrJR7XzUTX9Xp73A9Pl2Ku1/GVmF/tLPPVsynhr9oJZlCPo"
    "os4UHbONZSrHjLcv+Ro0eev9KU7LnmmrfJzwd/PMfav5dmhZ2jx9ED1L6M2SRTzFwVztGvM23Zn8oWt/b4yfGYuR"
    "5z81D9HzMk3nwp17l+1UYQ0UWLZ4f81FDWN++wUvdqo91MpqNpguz31SYPEWdq8j3b1baw6uXL35o3nWc+HjK7uO"
    "996tynrMLs3E4V2hqLa/dSubhW767+/V2zZ+Zv36zDhpiV/cnT1qG+pn7wu/7t0kfE9w3q8voCRiN7fsi+zkfM5J"
    "9fv1Zzdnv0huZtZf8Mvqyx/Ro1IHkyZVvnY7FSuQ+eeF6q66Y1Fey9mmMUXwbDRTs9rIkML3PLLxs6LU/KdaG5xZ"
    "/W81vteMSnbd9n1ieYYcy7qnR88tcHcsrA679LbZ2ylTy0a4yfDauy/xF6O/bPI6nn1gyjLu5/cfb2SoNOHgfGbN"
    "PcmB/8Fli3O7ZwjWLV++wKp9MnN87wSdv6/LJ69bfiY/dOZr/Rlatk21bbt/3Fq++dfq+U1S9e0X9tuL7S56sMm6"
    "bEU2e4ruP+urpw+VWxn8Wj2lrXjtPvmdIplXrpxYLLstULbQ4dQO97LDPjEfDEUAmQOdUQ=="
)


def test_tiff_with_a_circular_page_chain_ends_quickly(tmp_path):
    import base64
    import zlib

    path = tmp_path / "loop.tif"
    path.write_bytes(zlib.decompress(base64.b64decode(LOOPING_TIFF)))
    with deadline(10), pytest.raises(ValueError, match="loop.tif"):
        read_image(path)


@pytest.mark.parametrize("field,value", [("depth", 10**6), ("base_channels", 10**9),
                                         ("in_channels", 10**8), ("num_classes", 10**8)])
def test_model_file_with_absurd_architecture_ends_quickly(tmp_path, field, value):
    path = tmp_path / "evil.pt"
    save_model(path, UNet(1, 2, base_channels=4, depth=2, padding="same"))
    payload = torch.load(path, weights_only=True)
    payload["architecture"][field] = value
    torch.save(payload, path)
    assert path.stat().st_size < 100_000
    with deadline(10), pytest.raises(ValueError, match=field):
        load_model(path)


def test_wide_architecture_with_tiny_weights_ends_quickly(tmp_path):
    """Within the architecture bounds but far wider than its weights: refused without first
    building (and initialising) a net of a billion parameters."""
    path = tmp_path / "wide.pt"
    save_model(path, UNet(1, 2, base_channels=4, depth=2, padding="same"))
    payload = torch.load(path, weights_only=True)
    payload["architecture"].update(base_channels=1024, depth=2)
    torch.save(payload, path)
    with deadline(3), pytest.raises(ValueError, match="architecture"):
        load_model(path)


def test_tiny_diameter_is_refused_before_allocating(work, capsys, private_tmp, tiny_net_state):
    # a model that knows its object diameter: --diameter 0.05 asks for a 400x upscale
    save_model(work / "tiny.pt", tiny_net_state, {"object_diameter": 20.0}, overwrite=True)
    with deadline(60):
        status, _, err = cli(capsys, "predict", "--model", work / "tiny.pt", "--image",
                             work / "img.tif", "--out", work / "l.tif", "--diameter", "0.05",
                             "--device", "cpu")
    assert status == 2, err
    assert "diameter" in err.lower() and "Traceback" not in err and "MemoryError" not in err
    assert not (work / "l.tif").exists()


def test_writers_never_touch_the_process_umask(tmp_path, monkeypatch):
    def forbidden(*a):
        raise AssertionError("umask changed: process-wide, races with other threads")

    monkeypatch.setattr(os, "umask", forbidden)
    with atomic_write(tmp_path / "a.bin") as tmp:
        open(tmp, "wb").write(b"1")
    write_labels(tmp_path / "l.tif", np.ones((4, 4), np.uint16))
    save_model(tmp_path / "m.pt", UNet(1, 2, base_channels=4, depth=2, padding="same"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "l.tif", "m.pt"]


def test_failed_writes_leave_no_temp(tmp_path):
    class Broken(Exception):
        pass

    labels = np.ones((4, 4), np.uint16)
    for exc in (Broken("writer crashed"), KeyboardInterrupt()):
        with pytest.raises(type(exc)), atomic_write(tmp_path / "x.tif") as tmp:
            write_labels_into = open(tmp, "wb")
            write_labels_into.write(labels.tobytes())
            write_labels_into.close()
            raise exc
    with pytest.raises(ValueError):
        write_labels(tmp_path / "y.tif", -labels.astype(np.int32))
    assert list(tmp_path.iterdir()) == []
