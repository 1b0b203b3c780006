"""Data loss: no command writes over one of its inputs or an existing file without --overwrite.

Every case runs the real CLI in-process and checks the exit status, the one-line message and
that the work folder is byte for byte unchanged.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tifffile

from napari_unet.core.io.images import write_labels

from .conftest import args, assert_one_line_error, cli, snapshot

TRAIN = ("train", "--model", "{w}/tiny.pt", "--image", "{w}/img.tif", "--labels", "{w}/lab.tif",
         "--iterations", "2", "--tile", "32", "--batch-size", "1", "--device", "cpu",
         "--validation-fraction", "0")


def make_link(work, kind, target, name):
    link = work / name
    if kind == "symlink":
        link.symlink_to(work / target)
    else:
        os.link(work / target, link)
    return link


# -- train --------------------------------------------------------------------------------------
@pytest.mark.parametrize("out", ["img.tif", "lab.tif", "tiny.pt", "sub/../img.tif"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_train_never_writes_over_its_inputs(work, capsys, out, overwrite):
    (work / "sub").mkdir()
    before = snapshot(work)
    flags = ["--overwrite"] if overwrite else []
    status, _, err = cli(capsys, *args(TRAIN, work, "--out", f"{{w}}/{out}", *flags))
    assert_one_line_error(status, err, "is the input")
    assert snapshot(work) == before


@pytest.mark.parametrize("kind", ["symlink", "hardlink"])
@pytest.mark.parametrize("target", ["img.tif", "lab.tif"])
def test_train_out_linked_to_an_input_is_refused(work, capsys, kind, target):
    link = make_link(work, kind, target, "model.pt")
    before = snapshot(work)
    status, _, err = cli(capsys, *args(TRAIN, work, "--out", link, "--overwrite"))
    assert_one_line_error(status, err, "is the input")
    assert snapshot(work) == before


def test_train_resume_into_its_own_model_file_is_refused(work, capsys):
    before = snapshot(work)
    status, _, err = cli(capsys, *args(TRAIN, work, "--resume", "--out", "{w}/tiny.pt",
                                       "--overwrite"))
    assert_one_line_error(status, err, "is the input")
    assert snapshot(work) == before


@pytest.mark.parametrize("existing", ["model.pt", "model_curves.png", "model_overlay.png"])
def test_train_keeps_existing_outputs_without_overwrite(work, capsys, existing):
    (work / existing).write_bytes(b"precious")
    before = snapshot(work)
    status, _, err = cli(capsys, *args(TRAIN, work, "--out", "{w}/model.pt"))
    assert_one_line_error(status, err, "already exists", "--overwrite")
    assert snapshot(work) == before


def test_train_with_overwrite_replaces_model_and_plots(work, capsys):
    for name in ("model.pt", "model_curves.png", "model_overlay.png"):
        (work / name).write_bytes(b"old")
    status, out, err = cli(capsys, *args(TRAIN, work, "--out", "{w}/model.pt", "--overwrite"))
    assert status == 0, err
    from napari_unet.core.model.checkpoint import load_model

    model, meta = load_model(work / "model.pt")
    assert meta.step == 2
    for name in ("model_curves.png", "model_overlay.png"):
        assert (work / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in work.iterdir() if p.name.startswith(".")]  # no temp left


# -- eval --json --------------------------------------------------------------------------------
EVAL = ("eval", "--model", "{w}/tiny.pt", "--image", "{w}/img.tif", "--labels", "{w}/lab.tif",
        "--tile", "64", "--device", "cpu")


@pytest.mark.parametrize("target", ["lab.tif", "img.tif", "tiny.pt"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_eval_json_never_replaces_an_input(work, capsys, target, overwrite):
    before = snapshot(work)
    flags = ["--overwrite"] if overwrite else []
    status, _, err = cli(capsys, *args(EVAL, work, "--json", f"{{w}}/{target}", *flags))
    assert_one_line_error(status, err, "is the input")
    assert snapshot(work) == before


def test_eval_json_keeps_an_existing_file_without_overwrite(work, capsys):
    (work / "scores.json").write_text("{}")
    before = snapshot(work)
    status, _, err = cli(capsys, *args(EVAL, work, "--json", "{w}/scores.json"))
    assert_one_line_error(status, err, "already exists", "--overwrite")
    assert snapshot(work) == before


def test_eval_json_does_not_write_through_a_symlink(work, capsys, tmp_path):
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("not yours")
    link = work / "scores.json"
    link.symlink_to(elsewhere)
    status, _, err = cli(capsys, *args(EVAL, work, "--json", link))
    assert_one_line_error(status, err, "already exists")
    status, _, err = cli(capsys, *args(EVAL, work, "--json", link, "--overwrite"))
    assert status == 0, err
    assert elsewhere.read_text() == "not yours"
    assert not link.is_symlink()
    assert set(json.loads(link.read_text())) == {"model", "pooled", "images"}


@pytest.mark.parametrize("kind", ["symlink", "hardlink"])
def test_eval_json_linked_to_the_labels_is_refused(work, capsys, kind):
    link = make_link(work, kind, "lab.tif", "scores.json")
    before = snapshot(work)
    status, _, err = cli(capsys, *args(EVAL, work, "--json", link, "--overwrite"))
    assert_one_line_error(status, err, "is the input")
    assert snapshot(work) == before


# -- predict ------------------------------------------------------------------------------------
PREDICT = ("predict", "--model", "{w}/tiny.pt", "--image", "{w}/img.tif", "--tile", "64",
           "--device", "cpu")


@pytest.mark.parametrize("outputs", [
    ("--out", "{w}/u.tif", "--uncertainty", "{w}/u.tif"),
    ("--out", "{w}/p.tif", "--probabilities", "{w}/p.tif"),
    ("--out", "{w}/l.tif", "--uncertainty", "{w}/x.tif", "--probabilities", "{w}/./x.tif"),
])
def test_predict_outputs_must_be_distinct(work, capsys, outputs):
    before = snapshot(work)
    status, _, err = cli(capsys, *args(PREDICT, work, *outputs, "--overwrite"))
    assert_one_line_error(status, err, "same file")
    assert snapshot(work) == before


@pytest.mark.parametrize("option", ["--out", "--uncertainty", "--probabilities"])
@pytest.mark.parametrize("target", ["img.tif", "tiny.pt"])
def test_predict_never_writes_over_its_inputs(work, capsys, option, target):
    extra = [] if option == "--out" else ["--out", "{w}/labels.tif"]
    before = snapshot(work)
    status, _, err = cli(capsys, *args(PREDICT, work, *extra, option, f"{{w}}/{target}",
                                       "--overwrite"))
    assert_one_line_error(status, err, "is the input")
    assert snapshot(work) == before


@pytest.mark.parametrize("kind", ["symlink", "hardlink"])
def test_predict_out_linked_to_the_image_is_refused(work, capsys, kind):
    link = make_link(work, kind, "img.tif", "labels.tif")
    before = snapshot(work)
    status, _, err = cli(capsys, *args(PREDICT, work, "--out", link, "--overwrite"))
    assert_one_line_error(status, err, "is the input")
    assert snapshot(work) == before


@pytest.mark.parametrize("option", ["--uncertainty", "--probabilities"])
def test_predict_float_maps_keep_existing_files(work, capsys, option):
    (work / "extra.tif").write_bytes(b"keep")
    before = snapshot(work)
    status, _, err = cli(capsys, *args(PREDICT, work, "--out", "{w}/labels.tif",
                                       option, "{w}/extra.tif"))
    assert_one_line_error(status, err, "already exists")
    assert snapshot(work) == before


def test_predict_output_alias_and_success(work, capsys):
    status, out, err = cli(capsys, *args(PREDICT, work, "--output", "{w}/labels.tif",
                                         "--uncertainty", "{w}/u.tif"))
    assert status == 0, err
    assert tifffile.imread(work / "labels.tif").shape == (64, 64)
    assert tifffile.imread(work / "u.tif").shape == (64, 64)


# -- batch --------------------------------------------------------------------------------------
def test_batch_output_folder_that_is_an_input_file_is_refused(work, capsys):
    before = snapshot(work)
    status, _, err = cli(capsys, "batch", "--model", work / "tiny.pt", "--input", work / "img.tif",
                         "--out", work / "img.tif", "--device", "cpu")
    assert_one_line_error(status, err)
    assert snapshot(work) == before


def test_batch_into_the_input_folder_never_replaces_an_input(work, capsys):
    before = snapshot(work)
    status, _, err = cli(capsys, "batch", "--model", work / "tiny.pt", "--input",
                         work / "img.tif", "--out", work, "--device", "cpu", "--tile", "64",
                         "--overwrite")
    after = snapshot(work)
    for name, data in before.items():
        assert after[name] == data, name
    assert "Traceback" not in err


# -- the Python API -----------------------------------------------------------------------------
def test_write_labels_keeps_existing_files_and_symlink_targets(tmp_path):
    labels = np.arange(12, dtype=np.uint16).reshape(3, 4)
    target = tmp_path / "precious.tif"
    target.write_bytes(b"precious")
    link = tmp_path / "labels.tif"
    link.symlink_to(target)
    with pytest.raises(ValueError, match="already exists"):
        write_labels(link, labels)
    dangling = tmp_path / "dangling.tif"
    dangling.symlink_to(tmp_path / "nowhere.tif")
    with pytest.raises(ValueError, match="already exists"):
        write_labels(dangling, labels)
    write_labels(link, labels, overwrite=True)
    assert target.read_bytes() == b"precious"
    np.testing.assert_array_equal(tifffile.imread(link), labels)
    with pytest.raises(TypeError, match="overwrite"):
        write_labels(tmp_path / "new.tif", labels, overwrite="no")
