"""--channel in predict, batch, train and eval on an RGB TIFF: a one-channel model sees the
channel chosen, is refused in one line naming --channel without one, and a model trained on a
channel takes the same one by default."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch

from napari_unet.cli import main
from napari_unet.core.data.synthetic import synthetic_nuclei
from napari_unet.core.model.checkpoint import load_model, save_model
from napari_unet.core.model.unet import UNet


@pytest.fixture
def work(tmp_path):
    torch.manual_seed(0)
    save_model(tmp_path / "tiny.pt", UNet(1, 2, base_channels=4, depth=2, padding="same"))
    nuclei, labels = synthetic_nuclei((48, 48), seed=2)[:2]
    green = (nuclei * 200).astype(np.uint8)
    rgb = np.stack([np.full_like(green, 30), green, np.zeros_like(green)], axis=-1)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    tifffile.imwrite(tmp_path / "green.tif", green)
    tifffile.imwrite(tmp_path / "labels.tif", labels.astype(np.uint16))
    (tmp_path / "folder").mkdir()
    tifffile.imwrite(tmp_path / "folder" / "rgb.tif", rgb, photometric="rgb")
    return tmp_path


def run(*argv):
    try:
        return main([str(a) for a in argv])
    except SystemExit as stop:
        return stop.code


def test_predict_and_batch_take_the_chosen_channel(work, capsys):
    base = ("--model", work / "tiny.pt", "--device", "cpu", "--tile-size", "64")
    assert run("predict", "--image", work / "rgb.tif", "--out", work / "none.tif", *base) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--channel" in err[0] and "one channel" in err[0]
    assert not (work / "none.tif").exists()
    assert run("predict", "--image", work / "green.tif", "--out", work / "g.tif", *base) == 0
    assert run("predict", "--image", work / "rgb.tif", "--out", work / "c1.tif", "--channel",
               "1", *base) == 0
    np.testing.assert_array_equal(tifffile.imread(work / "c1.tif"), tifffile.imread(work / "g.tif"))
    assert run("batch", "--image", work / "folder", "--out", work / "out", "--channel", "1",
               *base) == 0
    np.testing.assert_array_equal(tifffile.imread(work / "out" / "rgb.tif"),
                                  tifffile.imread(work / "g.tif"))
    assert run("predict", "--image", work / "rgb.tif", "--out", work / "c5.tif", "--channel",
               "5", *base) == 2
    assert "channel 5 does not exist: the image has 3 channel(s)" in capsys.readouterr().err


def test_a_model_trained_on_a_channel_predicts_with_it_and_eval_takes_it(work, capsys):
    model = work / "on_green.pt"
    assert run("train", "--model", work / "tiny.pt", "--image", work / "rgb.tif", "--labels",
               work / "labels.tif", "--channel", "1", "--iterations", "2", "--tile-size", "32",
               "--batch-size", "1", "--device", "cpu", "--workers", "0", "--no-plots",
               "--validation-fraction", "0", "--out", model) == 0
    assert load_model(model)[1].channel == 1
    capsys.readouterr()
    base = ("--model", model, "--device", "cpu", "--tile-size", "64")
    assert run("predict", "--image", work / "rgb.tif", "--out", work / "a.tif", *base) == 0
    assert "channel 1: the one the model was trained on" in capsys.readouterr().err
    assert run("predict", "--image", work / "green.tif", "--out", work / "b.tif", *base) == 0
    np.testing.assert_array_equal(tifffile.imread(work / "a.tif"), tifffile.imread(work / "b.tif"))
    assert run("eval", "--image", work / "rgb.tif", "--labels", work / "labels.tif",
               "--channel", "1", *base) == 0
