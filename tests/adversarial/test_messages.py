"""Messages: hostile or wrong input gets our own clear ValueError/TypeError/OSError (API) or
exit status 2 with one line (CLI); never another exception, never torch's advice."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from napari_unet.core.io.images import read_image
from napari_unet.core.model.checkpoint import load_model, resolve_model

from .conftest import assert_one_line_error, cli, deadline

CONTRACT = (ValueError, TypeError, OSError)


class Payload:
    """A pickle that would create a file if it were ever unpickled with code execution."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def hostile_model_files(folder):
    marker = folder / "pwned"
    files = {
        "random.pt": os.urandom(38_000),
        "empty.pt": b"",
        "text.pt": b"this is not a model\n" * 100,
        "pickle.pt": pickle.dumps(Payload(str(marker))),
        "tiff.pt": b"II*\x00" + os.urandom(200),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    torch.save({"x": Payload(str(marker))}, folder / "torch_pickle.pt")
    torch.save(torch.nn.Linear(2, 2).state_dict(), folder / "bare_state_dict.pt")
    (folder / "ok_copy").mkdir()
    return marker, [*(folder / n for n in files), folder / "torch_pickle.pt",
                    folder / "bare_state_dict.pt", folder / "ok_copy"]


def test_hostile_model_files_get_our_message_and_never_run_code(tmp_path):
    marker, paths = hostile_model_files(tmp_path)
    for path in paths:
        with deadline(20), pytest.raises(ValueError) as info:
            load_model(path)
        text = str(info.value)
        assert str(path) in text, text
        assert "weights_only" not in text, text
    assert not marker.exists()


def test_hostile_model_files_in_the_cli_are_one_line(work, capsys):
    marker, paths = hostile_model_files(work)
    for path in paths[:4]:
        status, _, err = cli(capsys, "predict", "--model", path, "--image", work / "img.tif",
                             "--out", work / "l.tif", "--device", "cpu")
        assert_one_line_error(status, err)
        assert "weights_only" not in err
    assert not marker.exists() and not (work / "l.tif").exists()


def test_missing_cuda_is_a_value_error(work):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="cuda"):
        load_model(work / "tiny.pt", device="cuda")
    with pytest.raises(ValueError, match="cuda"):
        resolve_model(work / "tiny.pt", device="cuda:3")


@pytest.mark.parametrize("argv", [
    ["predict", "--image", "{w}/img.tif", "--out", "{w}/l.tif", "--device", "gpu"],
    ["predict", "--image", "{w}/missing.tif", "--out", "{w}/l.tif"],
    ["predict", "--image", "{w}/img.tif", "--out", "{w}/no/such/folder/l.tif"],
    ["predict", "--image", "{w}/img.tif", "--out", "{w}/l.tif", "--tile", "50",
     "--model", "{w}/tiny.pt", "--device", "cpu"],
    ["predict", "--image", "{w}/img.tif", "--out", "{w}/l.tif", "--model", "{w}/missing.pt"],
    ["predict", "--image", "{w}/img.tif", "--out", "{w}/l.tif", "--tile", "many"],
    ["predict", "--image", "{w}/lab.tif", "--out", "{w}/l.tif", "--model", "{w}/img.tif"],
    ["train", "--image", "{w}/img.tif", "--out", "{w}/m.pt"],
    ["train", "--images", "{w}", "--masks", "{w}/nowhere", "--out", "{w}/m.pt"],
    ["eval", "--model", "{w}/tiny.pt", "--image", "{w}/img.tif", "--labels", "{w}/img.pt"],
    ["batch", "--model", "{w}/tiny.pt", "--input", "{w}/*.nothing", "--out", "{w}/o"],
    ["batch", "--input", "{w}/img.tif", "--out", "{w}/o", "--device", "tpu"],
])
def test_cli_bad_input_is_status_2_and_one_line(work, capsys, argv):
    with deadline(60):
        status, _, err = cli(capsys, *(a.format(w=work) for a in argv))
    assert_one_line_error(status, err)


def test_usage_errors_are_one_line_too(capsys):
    status, _, err = cli(capsys, "predict", "--image")
    assert status == 2
    assert len(err.strip().splitlines()) == 1 and "error:" in err


def test_reader_messages_name_the_file(tmp_path):
    cases = {"a.tif": b"II*\x00garbage", "b.png": b"\x89PNG\r\n\x1a\nbroken", "c.xyz": b"",
             "d.tif": b""}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError) as info:
            read_image(tmp_path / name)
        assert name in str(info.value)
    (tmp_path / "folder.tif").mkdir()
    with pytest.raises(ValueError, match="is a folder, not a file"):
        read_image(tmp_path / "folder.tif")
    with pytest.raises(ValueError, match="does not exist"):
        read_image(tmp_path / "missing.tif")


# -- the prediction API (helper B's code; these are the cases) ---------------------------
def _prediction():
    from napari_unet.core.inference import prediction

    return prediction


@pytest.mark.parametrize("model", [None, 3, object()])
def test_predict_image_with_a_non_model_is_a_type_error(model):
    image = np.zeros((32, 32), np.float32)
    with pytest.raises(TypeError, match="model"):
        _prediction().predict_image(model, image)


def test_predict_image_with_a_model_name_works_or_says_why(work):
    image = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    try:
        result = _prediction().predict_image(str(work / "tiny.pt"), image, tile_size=48,
                                             device="cpu")
    except CONTRACT as err:
        assert "model" in str(err)
    else:
        assert result.instances.shape == (32, 32)


@pytest.mark.parametrize("value", [1.5, "0", [0]])
def test_predict_image_channel_axis_of_the_wrong_type(work, value):
    model, meta = load_model(work / "tiny.pt")
    with pytest.raises(TypeError, match="channel_axis"):
        _prediction().predict_image(model, np.zeros((32, 32), np.float32), meta=meta,
                                    channel_axis=value)


def test_finite_huge_values_are_not_called_nan(work):
    model, meta = load_model(work / "tiny.pt")
    image = np.zeros((32, 32))
    image[3, 4] = 1e308
    try:
        result = _prediction().predict_image(model, image, meta=meta, tile_size=32,
                                             device="cpu")
    except CONTRACT as err:
        assert "nan" not in str(err).lower()
    else:
        assert result.instances.shape == (32, 32)
    image[3, 4] = np.nan
    with pytest.raises(ValueError, match="(?i)nan"):
        _prediction().predict_image(model, image, meta=meta, tile_size=32, device="cpu")


@pytest.mark.parametrize("bad", [
    dict(inputs="{w}/nothing-here/*.tif"),
    dict(output_dir="{w}/img.tif"),
    dict(tile_size=50),
    dict(device="tpu"),
])
def test_batch_segment_checks_its_arguments_before_the_first_next(work, bad):
    from napari_unet.core.inference.batch import batch_segment

    model, meta = load_model(work / "tiny.pt")
    kwargs = dict(inputs=str(work / "img.tif"), output_dir=str(work / "out"))
    kwargs.update({k: v.format(w=work) if isinstance(v, str) else v for k, v in bad.items()})
    with pytest.raises(CONTRACT):
        batch_segment(model, kwargs.pop("inputs"), kwargs.pop("output_dir"), meta=meta,
                      **kwargs)
