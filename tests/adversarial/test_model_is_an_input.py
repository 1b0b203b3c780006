"""The model and the package are inputs too: the model file a command uses, every file of an
unpacked model package, and every file of the installed package are never replaced, even with
--overwrite; outputs are regular files; a batch file is done when all of its outputs are."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
import tifffile

from napari_unet.core.io.outputs import PACKAGE_DIR, plan_outputs
from napari_unet.core.model.checkpoint import default_model_path

from .conftest import args, assert_one_line_error, cli, snapshot

PREDICT = ("predict", "--image", "{w}/img.tif", "--tile-size", "64", "--device", "cpu")
TRAIN = ("train", "--image", "{w}/img.tif", "--labels", "{w}/lab.tif", "--iterations", "1",
         "--tile-size", "32", "--batch-size", "1", "--device", "cpu", "--validation-fraction",
         "0", "--workers", "0")
EVAL = ("eval", "--image", "{w}/img.tif", "--labels", "{w}/lab.tif", "--device", "cpu",
        "--tile-size", "64")


def _digest(folder):
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


@pytest.fixture
def installed():
    """The installed package's files, checked unchanged after the test."""
    before = _digest(PACKAGE_DIR)
    yield default_model_path()
    assert _digest(PACKAGE_DIR) == before


@pytest.mark.parametrize("command", [
    (*TRAIN, "--model", "default", "--out", "{m}"),
    (*PREDICT, "--model", "default", "--out", "{w}/o.tif", "--uncertainty", "{m}"),
    (*EVAL, "--model", "default", "--json", "{m}"),
    (*PREDICT, "--model", "{w}/tiny.pt", "--out", "{p}/models/new.tif"),
])
def test_the_installed_package_is_never_written(work, capsys, installed, command):
    before = snapshot(work)
    argv = [a.replace("{m}", str(installed)).replace("{p}", str(PACKAGE_DIR)) for a in command]
    status, _, err = cli(capsys, *args(argv, work, "--overwrite"))
    assert_one_line_error(status, err)
    assert "is the input" in err or "installed napari-unet package" in err, err
    assert snapshot(work) == before


@pytest.fixture
def package(work):
    """A folder standing for an unpacked model package (the policy refuses before loading)."""
    folder = work / "pkg"
    folder.mkdir()
    for name in ("rdf.yaml", "weights.pt", "sample_output.tif"):
        (folder / name).write_bytes(b"package file " + name.encode())
    return folder


@pytest.mark.parametrize("command", [
    (*PREDICT, "--model", "{w}/pkg", "--out", "{w}/pkg/sample_output.tif"),
    (*PREDICT, "--model", "{w}/pkg", "--out", "{w}/o.tif", "--uncertainty", "{w}/pkg/weights.pt"),
    (*PREDICT, "--model", "{w}/pkg", "--out", "{w}/pkg/new.tif"),
    (*TRAIN, "--model", "{w}/pkg", "--out", "{w}/pkg/weights.pt"),
    (*EVAL, "--model", "{w}/pkg", "--json", "{w}/pkg/rdf.yaml"),
    ("batch", "--model", "{w}/pkg", "--image", "{w}/img.tif", "--out", "{w}/pkg"),
])
def test_no_output_goes_inside_the_model_package_folder(work, capsys, package, command):
    before = snapshot(work)
    status, _, err = cli(capsys, *args(command, work, "--overwrite"))
    assert_one_line_error(status, err)
    assert "inside the model package folder" in err or "is the input" in err, err
    assert snapshot(work) == before


def test_batch_never_writes_over_the_model_it_loaded(work, capsys):
    (work / "o5").mkdir()
    tifffile.imwrite(work / "o5" / "img.tif", np.zeros((8, 8), np.uint8))  # named like b0
    os.replace(work / "tiny.pt", work / "o5" / "b0.tif")  # the model, named like an output
    os.link(work / "img.tif", work / "b0.tif")
    before = snapshot(work)
    status, _, err = cli(capsys, "batch", "--model", work / "o5" / "b0.tif", "--image",
                         work / "b0.tif", "--out", work / "o5", "--overwrite", "--device", "cpu")
    assert_one_line_error(status, err, "is the input")
    assert snapshot(work) == before


def test_batch_refuses_a_hard_linked_input_and_a_probabilities_name_that_is_an_input(
        work, capsys):
    src, out = work / "in", work / "out"
    src.mkdir()
    out.mkdir()
    tifffile.imwrite(src / "a.tif", tifffile.imread(work / "img.tif"))
    os.link(src / "a.tif", out / "a.tif")  # the output folder holds the input, hard linked
    before = snapshot(work)
    base = ("batch", "--model", work / "tiny.pt", "--device", "cpu", "--tile-size", "64")
    status, _, err = cli(capsys, *base, "--image", src, "--out", out, "--overwrite")
    assert_one_line_error(status, err, "would replace the input")
    os.remove(out / "a.tif")
    tifffile.imwrite(src / "a_probabilities.tif", np.zeros((8, 8), np.uint8))  # an input too
    before = snapshot(work)
    status, _, err = cli(capsys, *base, "--image", src, "--out", src, "--suffix", "",
                         "--probabilities", "--overwrite")
    assert_one_line_error(status, err, "would replace the input")
    assert snapshot(work) == before


def test_a_folder_at_an_output_name_is_not_done_but_refused(work, capsys):
    (work / "out" / "img.tif").mkdir(parents=True)
    status, _, err = cli(capsys, "batch", "--model", work / "tiny.pt", "--image",
                         work / "img.tif", "--out", work / "out", "--device", "cpu")
    assert_one_line_error(status, err, "is a folder")


def test_a_file_is_done_when_all_its_outputs_are(work, capsys):
    out = work / "out"
    base = ("batch", "--model", work / "tiny.pt", "--image", work / "img.tif", "--out", out,
            "--device", "cpu", "--tile-size", "64")
    status, text, _ = cli(capsys, *base)  # labels only
    assert status == 0 and (out / "img.tif").is_file()
    status, text, _ = cli(capsys, *base, "--probabilities")  # the missing output is made
    assert status == 0 and "done 1, skipped 0" in text
    assert (out / "img_probabilities.tif").is_file()
    status, text, _ = cli(capsys, *base, "--probabilities")
    assert status == 0 and "done 0, skipped 1" in text


@pytest.mark.parametrize("kind", ["device", "link to a device", "trailing separator"])
def test_outputs_are_regular_files(work, kind):
    target = {"device": "/dev/null", "trailing separator": str(work / "o.tif") + os.sep}
    if kind == "link to a device":
        (work / "stdout.json").symlink_to("/dev/null")
        target[kind] = str(work / "stdout.json")
    with pytest.raises(ValueError, match="not a regular file|names a folder"):
        plan_outputs([target[kind]], [], overwrite=True)
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")


def test_train_keeps_a_file_that_appears_at_its_output_while_it_trains(work, capsys,
                                                                        monkeypatch):
    from napari_unet.core.training.trainer import Trainer

    out = work / "m.pt"
    events = Trainer.events

    def appearing(self, *a, **k):
        for event in events(self, *a, **k):
            if not out.exists():
                out.write_bytes(b"another run's model")
            yield event

    monkeypatch.setattr(Trainer, "events", appearing)
    status, _, err = cli(capsys, *args(TRAIN, work, "--model", "{w}/tiny.pt", "--out", out,
                                       "--no-plots"))
    assert status == 2 and "already exists (use --overwrite" in err, err
    assert out.read_bytes() == b"another run's model"


# within the declared bounds (beyond them the option itself is refused: test_hostile_options)
@pytest.mark.parametrize("extra", [("--batch-size", "256", "--tile-size", "4096"),
                                   ("--tile-size", "4096", "--batch-size", "128")])
def test_train_refuses_batches_that_cannot_fit_before_any_work(work, capsys, extra):
    before = snapshot(work)
    status, _, err = cli(capsys, "train", "--model", work / "tiny.pt", "--image",
                         work / "img.tif", "--labels", work / "lab.tif", "--out",
                         work / "m.pt", *extra)
    assert_one_line_error(status, err, "training on batches of", "of memory, but only")
    assert snapshot(work) == before
