"""Hostile options and Python arguments (issue 42): a value out of its declared bound is refused
by every command and by the Python API alike, before any work, in words that name the option
(command line) or the parameter (Python)."""

from __future__ import annotations

import socket
import sys

import numpy as np
import pytest

from napari_unet.core.inference.config import PredictConfig
from napari_unet.core.settings import declared
from napari_unet.core.training.config import TrainConfig

from .conftest import assert_one_line_error, cli, leftovers, snapshot

PREDICT = ["predict", "--model", "{w}/tiny.pt", "--image", "{w}/img.tif", "--out", "{w}/l.tif",
           "--device", "cpu"]
BATCH = ["batch", "--model", "{w}/tiny.pt", "--image", "{w}/img.tif", "--out", "{w}/o",
         "--device", "cpu"]
TRAIN = ["train", "--model", "{w}/tiny.pt", "--image", "{w}/img.tif", "--labels", "{w}/lab.tif",
         "--out", "{w}/m.pt", "--device", "cpu", "--workers", "0", "--no-plots"]


def run(capsys, work, template, *extra):
    return cli(capsys, *(str(a).format(w=work) for a in (*template, *extra)))


# -- 1. one bound per setting, for every command and the API ----------------------------------
@pytest.mark.parametrize("value", ["1e-9", "0.5", "1e9", "1e308", "nan", "-3"])
@pytest.mark.parametrize("template", [PREDICT, BATCH], ids=["predict", "batch"])
def test_diameter_out_of_its_bound_is_refused_by_every_command(work, capsys, template, value):
    before = leftovers(work)
    status, _, err = run(capsys, work, template, "--diameter", value)
    assert_one_line_error(status, err, "--diameter")
    assert leftovers(work) == before  # nothing written, no output folder made


@pytest.mark.parametrize("value", [1e-9, 0.5, 1e9, 1e308, float("inf")])
def test_diameter_out_of_its_bound_is_refused_by_the_api(value):
    with pytest.raises(ValueError, match="object_diameter"):
        PredictConfig(object_diameter=value)


def test_the_bound_is_the_declared_one_the_docks_use():
    bound = declared(PredictConfig, "object_diameter").setting
    PredictConfig(object_diameter=bound.maximum)  # the dock's largest value is legal
    PredictConfig(object_diameter=bound.minimum)
    with pytest.raises(ValueError, match=f"object_diameter must be 1 to {bound.maximum:g} px"):
        PredictConfig(object_diameter=bound.maximum * 1.01)


def test_iterations_have_a_declared_upper_bound(work, capsys):
    top = declared(TrainConfig, "iterations").setting.maximum
    assert top is not None
    status, _, err = run(capsys, work, TRAIN, "--iterations", str(int(top) + 1))
    assert_one_line_error(status, err, "--iterations")
    with pytest.raises(ValueError, match="iterations"):
        TrainConfig(iterations=int(top) + 1)
    assert not (work / "m.pt").exists()


@pytest.mark.parametrize(("flag", "value"), [("--iterations", "0"), ("--validate-every", "-1"),
                                              ("--seed", "-1"), ("--minutes", "1e9")])
def test_train_options_out_of_bound_name_the_option(work, capsys, flag, value):
    status, _, err = run(capsys, work, TRAIN, flag, value)
    assert_one_line_error(status, err, flag)
    assert not (work / "m.pt").exists()


def test_validate_every_zero_means_never_as_its_help_says():
    """0 is the documented "never" of this setting (help, docs, the Train dock): kept."""
    help_text = declared(TrainConfig, "validate_every").setting.help
    assert "0 never" in help_text
    assert TrainConfig(validate_every=0).validate_every == 0


# -- 7. the losing side of two runs is told the option, not the Python keyword ----------------
def test_an_output_that_appears_during_predict_is_kept_and_names_the_option(work, capsys,
                                                                            monkeypatch):
    import napari_unet.core.inference.prediction as prediction

    out = work / "l.tif"
    real = prediction.predict

    def other_run_wins(*args, **kwargs):  # another run writes the same output meanwhile
        out.write_bytes(b"the other run's labels")
        return real(*args, **kwargs)

    monkeypatch.setattr(prediction, "predict", other_run_wins)
    status, _, err = run(capsys, work, PREDICT)
    assert_one_line_error(status, err, "already exists", "--overwrite")
    assert "overwrite=True" not in err
    assert out.read_bytes() == b"the other run's labels"


def test_the_python_api_names_the_keyword(work):
    from napari_unet.core.io.images import write_labels
    from napari_unet.core.io.outputs import OutputExists

    (work / "l.tif").write_bytes(b"x")
    with pytest.raises(OutputExists, match=r"use overwrite=True to replace it"):
        write_labels(work / "l.tif", np.zeros((4, 4), np.uint16))


@pytest.mark.parametrize("extra", [("--batch-size", "1000000000"), ("--tile-size", "100000")])
def test_train_batches_beyond_the_declared_bounds_are_refused_as_options(work, capsys, extra):
    status, _, err = run(capsys, work, TRAIN, *extra)
    assert_one_line_error(status, err, extra[0])
    assert not (work / "m.pt").exists()


# -- 2. an output format no writer has is refused before any work ----------------------------
@pytest.mark.parametrize("extra", [("--out", "{w}/o.png"), ("--uncertainty", "{w}/u.png"),
                                   ("--probabilities", "{w}/p.jpg"), ("--out", "{w}/o")])
def test_predict_refuses_an_output_it_cannot_write_before_predicting(work, capsys, monkeypatch,
                                                                     extra):
    import napari_unet.core.inference.prediction as prediction

    def must_not_run(*args, **kwargs):
        raise AssertionError("predicted before the outputs were checked")

    monkeypatch.setattr(prediction, "predict", must_not_run)
    before = leftovers(work)
    template = [a for a in PREDICT if a not in ("--out", "{w}/l.tif")]
    if extra[0] != "--out":
        template += ["--out", "{w}/l.tif"]
    status, _, err = run(capsys, work, template, *extra)
    assert_one_line_error(status, err, extra[0], ".tif")
    assert leftovers(work) == before


# -- 3. a scheduler that cannot be reached: one line, before any work -------------------------
def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:{port}", "127.0.0.1:{port}", "garbage",
                                     "tcp://no-such-host.invalid:8786", "tcp://127.0.0.1:99999"])
def test_batch_with_an_unreachable_scheduler_says_so_in_one_line(work, capsys, address):
    address = address.format(port=_closed_port())
    status, _, err = run(capsys, work, BATCH, "--scheduler", address)
    assert_one_line_error(status, err, f"cannot reach the scheduler at {address!r}")
    assert not (work / "o").exists()


def test_a_scheduler_without_a_working_distributed_is_one_line_too(work, capsys, monkeypatch):
    with socket.socket() as listening:  # something answers on the port
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        address = f"tcp://127.0.0.1:{listening.getsockname()[1]}"
        monkeypatch.setitem(sys.modules, "distributed", None)  # "import distributed" fails
        status, _, err = run(capsys, work, BATCH, "--scheduler", address)
    assert_one_line_error(status, err, "cannot reach the scheduler", "dask.distributed")
    assert not (work / "o").exists()


def test_a_running_scheduler_is_reached():
    from distributed import LocalCluster

    from napari_unet.core.inference.distributed import connect_scheduler

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster:
        client = connect_scheduler(cluster.scheduler_address)
        try:
            assert client.submit(sum, [1, 2]).result() == 3
        finally:
            client.close()


# -- 4. the Python API: TypeError/ValueError naming the parameter -----------------------------
@pytest.fixture
def tiny(work):
    from napari_unet.core.model.checkpoint import load_model

    return load_model(work / "tiny.pt")


@pytest.mark.parametrize(("kwargs", "error", "name"), [
    (dict(tta="yes"), TypeError, "tta"),
    (dict(uncertainty="yes"), TypeError, "uncertainty"),
    (dict(split_touching=1), TypeError, "split_touching"),
    (dict(out=5), TypeError, "out"),
    (dict(out={"probability": np.zeros((2, 32, 32), np.float32)}), ValueError, "out"),
    (dict(out={"instances": 7}), TypeError, "out"),
])
def test_predict_image_names_the_bad_parameter(tiny, kwargs, error, name):
    from napari_unet.core.inference.prediction import predict_image

    model, meta = tiny
    with pytest.raises(error, match=rf"^{name}\b"):
        predict_image(model, np.zeros((32, 32), np.float32), meta=meta, **kwargs)


def test_predict_image_fills_the_arrays_it_is_given(tiny):
    from napari_unet.core.inference.prediction import predict_image

    model, meta = tiny
    into = np.full((32, 32), -1, np.int32)
    result = predict_image(model, np.random.default_rng(1).random((32, 32)), meta=meta,
                           device="cpu", out={"instances": into})
    assert result.instances is into and into.min() >= 0


@pytest.mark.parametrize("device", [5, 1.5, object(), "gpu"])
def test_load_model_names_a_bad_device(work, device):
    from napari_unet.core.model.checkpoint import load_model, resolve_model

    with pytest.raises((TypeError, ValueError), match="device"):
        load_model(work / "tiny.pt", device=device)
    with pytest.raises((TypeError, ValueError), match="device"):
        resolve_model("small", device=device)


def test_load_model_device_none_means_auto(work):
    from napari_unet.core.model.checkpoint import load_model
    from napari_unet.core.runtime.device import resolve_device

    model, _ = load_model(work / "tiny.pt", device=None)
    assert next(model.parameters()).device.type == resolve_device("auto").type


@pytest.mark.parametrize(("kwargs", "name"), [
    (dict(inputs=None), "inputs"), (dict(inputs=5), "inputs"), (dict(inputs=[None]), "inputs"),
    (dict(output_dir=None), "output_dir"), (dict(output_dir=3), "output_dir"),
    (dict(suffix=None), "suffix"), (dict(suffix=5), "suffix"),
    (dict(overwrite="yes"), "overwrite"), (dict(probabilities=1), "probabilities"),
    (dict(model_source=4), "model_source"), (dict(tta="no"), "tta"),
])
def test_batch_segment_names_the_bad_parameter(work, tiny, kwargs, name):
    from napari_unet.core.inference.batch import batch_segment

    model, meta = tiny
    given = dict(inputs=str(work / "img.tif"), output_dir=str(work / "o"))
    given.update(kwargs)
    with pytest.raises(TypeError, match=rf"^{name}\b"):
        batch_segment(model, given.pop("inputs"), given.pop("output_dir"), meta=meta, **given)
    assert not (work / "o").exists()


# -- 5. batch into its own input folder with a suffix, run again: resumes ---------------------
def _folder_of_two(work):
    folder = work / "f"
    folder.mkdir()
    for name in ("a.tif", "b.tif"):
        (folder / name).write_bytes((work / "img.tif").read_bytes())
    return folder


@pytest.mark.parametrize("extra", [(), ("--probabilities",)])
def test_batch_into_its_input_folder_twice_skips_its_own_outputs(work, capsys, extra):
    folder = _folder_of_two(work)
    command = ["batch", "--model", work / "tiny.pt", "--image", folder, "--out", folder,
               "--suffix", "_seg", "--device", "cpu", *extra]
    status, out, err = cli(capsys, *command)
    assert status == 0, err
    assert "done 2" in out
    made = snapshot(folder)
    assert set(made) == {"a.tif", "b.tif", "a_seg.tif", "b_seg.tif"} | (
        {"a_seg_probabilities.tif", "b_seg_probabilities.tif"} if extra else set())
    status, out, err = cli(capsys, *command)
    assert status == 0, err
    assert "done 0, skipped 2 (already there), failed 0" in out
    assert "this batch's own outputs" in err and "a_seg.tif" in err
    assert snapshot(folder) == made  # nothing new (no a_seg_seg.tif), nothing replaced


def test_batch_overwrite_never_reaches_an_earlier_output_that_is_an_input(work, capsys):
    folder = _folder_of_two(work)
    command = ["batch", "--model", work / "tiny.pt", "--image", folder, "--out", folder,
               "--suffix", "_seg", "--device", "cpu"]
    assert cli(capsys, *command)[0] == 0
    made = snapshot(folder)
    status, _, err = cli(capsys, *command, "--overwrite")
    assert_one_line_error(status, err, "a_seg.tif", "an input too")
    assert snapshot(folder) == made


# -- 6. messages about an option's value name the option ---------------------------------------
@pytest.mark.parametrize(("template", "extra", "needle"), [
    (PREDICT, ("--channel-axis", "5"), "--channel-axis 5"),
    (PREDICT, ("--channel-axis", "-10"), "--channel-axis"),
    (BATCH, ("--channel-axis", "-10"), "--channel-axis"),
    (TRAIN, ("--channel-axis", "-10"), "--channel-axis"),
    (TRAIN, ("--seed", "-1"), "--seed"),
    (PREDICT, ("--device", "gpu"), "--device"),
], ids=["predict-5", "predict--10", "batch--10", "train--10", "seed", "device"])
def test_a_refused_value_names_its_option(work, capsys, template, extra, needle):
    before = leftovers(work)
    status, _, err = run(capsys, work, template, *extra)
    assert_one_line_error(status, err, needle)
    assert "channel_axis" not in err
    assert leftovers(work) == before


def test_an_api_message_in_option_words_only_on_the_command_line():
    from napari_unet._cli_settings import in_option_words

    options = {"channel_axis": "--channel-axis", "object_diameter": "--diameter"}
    assert in_option_words("channel_axis 5 is out of range for an image of shape (64, 64)",
                           options) == ("--channel-axis 5 is out of range for an image of "
                                        "shape (64, 64)")
    assert in_option_words("channel_axisy is not a word", options) == "channel_axisy is not a word"
    with pytest.raises(ValueError, match=r"^channel_axis"):
        from napari_unet.core.inference.prediction import predict_image
        from napari_unet.core.model.unet import UNet

        predict_image(UNet(1, 2, base_channels=4, depth=2, padding="same"),
                      np.zeros((32, 32), np.float32), channel_axis=5, device="cpu")


def test_an_output_that_appears_during_batch_is_kept_and_said_so(work, capsys, monkeypatch):
    import napari_unet.core.io.images as images

    out = work / "o" / "img.tif"
    real = images.write_labels

    def other_run_wins(*args, **kwargs):  # another run writes the same output just before
        out.write_bytes(b"the other run's labels")
        return real(*args, **kwargs)

    monkeypatch.setattr(images, "write_labels", other_run_wins)
    status, stdout, err = run(capsys, work, BATCH)
    assert status == 1  # one file failed
    assert "appeared while this file was being segmented" in stdout + err
    assert "overwrite=True" not in stdout + err
    assert out.read_bytes() == b"the other run's labels"
