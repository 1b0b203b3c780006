"""Hostile files and values (issue #42): label images of a million objects, absurd ids and
parameters, spacings and pixel sizes from a file's metadata, headers of a few bytes, paths
that are folders, pipes or devices, unreadable files. Each ends quickly in a result or in one
line naming the file or the parameter, and leaves its inputs byte-identical."""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import yaml

from napari_unet.core.io import resources
from napari_unet.core.io.images import read_image
from napari_unet.core.model.checkpoint import load_model
from napari_unet.core.training.weight_map import weight_map

from .conftest import assert_one_line_error, cli, deadline, snapshot


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


# --- spacings and pixel sizes from a file's metadata ---------------------------------------

def imagej_stack(path: Path, spacing: float) -> Path:
    stack = (np.random.default_rng(0).random((4, 64, 64)) * 1000).astype(np.uint16)
    tifffile.imwrite(path, stack, imagej=True, resolution=(2.0, 2.0),
                     metadata={"spacing": spacing, "unit": "um", "axes": "ZYX"})
    return path


@pytest.mark.parametrize("spacing", [1e6, 1e30, 1e-5])
def test_an_absurd_z_spacing_from_a_file_is_taken_as_unknown_with_a_note(work, capsys, spacing):
    stack = imagej_stack(work / "stack.tif", spacing)
    data = read_image(stack)
    assert data.pixel_size == (1.0, 0.5, 0.5)  # z unknown, as if the file did not say
    assert len(data.notes) == 1 and data.notes[0].startswith("stack.tif: the file's z spacing")
    assert "taken as unknown" in data.notes[0]
    before = snapshot(work)
    with deadline(120):  # the side views used to allocate GiBs (1e6) or fail (1e30)
        status, _, err = cli(capsys, "predict", "--model", work / "tiny.pt", "--image", stack,
                             "--out", work / "out.tif", "--orthogonal-views", "--device", "cpu")
    assert status == 0, err
    assert f"note: {data.notes[0]}" in err
    assert {k: v for k, v in snapshot(work).items() if k != "out.tif"} == before


def test_a_plausible_z_spacing_is_kept(tmp_path):
    # within 0.001 to 1000 pixel widths: 2 um over 0.5 um pixels is 4
    data = read_image(imagej_stack(tmp_path / "ok.tif", 2.0))
    assert data.pixel_size == (2.0, 0.5, 0.5) and data.notes == ()


@pytest.mark.parametrize("size", [0, -1])
def test_ome_pixel_size_zero_or_negative_is_no_pixel_size(work, capsys, size):
    path = work / "plane.ome.tif"
    tifffile.imwrite(path, (np.random.default_rng(1).random((64, 64)) * 1000).astype(np.uint16),
                     ome=True, metadata={"axes": "YX", "PhysicalSizeX": size,
                                         "PhysicalSizeY": size})
    data = read_image(path)
    assert data.pixel_size is None
    assert data.notes == (f"plane.ome.tif: the file's pixel size (Y {size} µm, X {size} µm) is "
                          "not a size: no pixel size used",)
    status, _, err = cli(capsys, "predict", "--model", work / "tiny.pt", "--image", path,
                         "--out", work / "out.tif", "--device", "cpu")
    assert status == 0, err
    assert "Traceback" not in err and "no pixel size used" in err


def test_batch_says_what_it_ignored_in_a_file(work, capsys):
    folder = work / "in"
    folder.mkdir()
    imagej_stack(folder / "stack.tif", 1e6)
    status, out, err = cli(capsys, "batch", "--image", folder, "--out", work / "out",
                           "--model", work / "tiny.pt", "--device", "cpu")
    assert status == 0, err
    assert "stack.tif: the file's z spacing of 1e+06 µm" in out + err


# --- headers, folders, pipes, devices, unreadable files ---------------------------------------

def test_a_tiff_of_eight_header_bytes_is_not_a_readable_tiff(work, capsys):
    path = work / "eight.tif"
    path.write_bytes(b"II*\x00\x08\x00\x00\x00")
    with pytest.raises(ValueError, match=r"not a readable TIFF \(no image in its 8 bytes\)"):
        read_image(path)
    status, _, err = cli(capsys, "predict", "--model", work / "tiny.pt", "--image", path,
                         "--out", work / "out.tif", "--device", "cpu")
    assert_one_line_error(status, err, "eight.tif", "no image in its 8 bytes")
    assert "list index" not in err


def special_path(work: Path, kind: str) -> Path:
    if kind == "folder":
        (work / "folder.tif").mkdir()
        return work / "folder.tif"
    if kind == "fifo":
        os.mkfifo(work / "pipe.tif")
        return work / "pipe.tif"
    return Path("/dev/zero")


SPECIAL = [("folder", "is a folder, not a file"),
           ("fifo", "is not a regular file (it is a named pipe)"),
           ("device", "is not a regular file (it is a device)")]


@pytest.mark.parametrize("kind,says", SPECIAL)
@pytest.mark.parametrize("role", ["--image", "--model"])
def test_an_input_that_is_a_folder_pipe_or_device_says_what_it_is(work, capsys, kind, says,
                                                                   role):
    path = special_path(work, kind)
    files = {"--image": work / "img.tif", "--model": work / "tiny.pt"}
    files[role] = path
    with deadline(30):  # opening a FIFO for reading would wait for a writer forever
        status, _, err = cli(capsys, "predict", "--model", files["--model"], "--image",
                             files["--image"], "--out", work / "out.tif", "--device", "cpu")
    assert_one_line_error(status, err, str(path), says)
    assert not (work / "out.tif").exists()


@pytest.mark.parametrize("kind,says", SPECIAL)
def test_read_image_and_load_model_name_a_special_path(work, kind, says):
    path = special_path(work, kind)
    with deadline(30):
        with pytest.raises(ValueError, match=says.replace("(", r"\(").replace(")", r"\)")):
            read_image(path)
        with pytest.raises(ValueError, match="model file .*" + says.split(" (")[0]):
            load_model(path)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root reads a mode-000 file")
def test_a_mode_000_file_cannot_be_read_permission_denied(work, capsys):
    os.chmod(work / "img.tif", 0)
    try:
        status, _, err = cli(capsys, "predict", "--model", work / "tiny.pt", "--image",
                             work / "img.tif", "--out", work / "out.tif", "--device", "cpu")
    finally:
        os.chmod(work / "img.tif", 0o644)
    assert_one_line_error(status, err, "img.tif", "cannot be read (permission denied)")


def test_a_file_that_cannot_be_opened_is_permission_denied_not_corrupt(work, monkeypatch):
    # what a mode-000 file gives a user who is not root (the suite may run as root)
    from napari_unet.core.io import inputs

    def denied(path, mode="r", *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(inputs, "open", denied, raising=False)
    with pytest.raises(ValueError, match=r"^image file .*img.tif' cannot be read \(permission "
                                         r"denied\)$"):
        read_image(work / "img.tif")
    with pytest.raises(ValueError, match=r"cannot be read \(permission denied\)"):
        load_model(work / "tiny.pt")


# --- model packages: malformed fields and weights that cannot be read safely -----------------

@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    from napari_unet.core.io.export import ExportConfig, export_bioimageio
    from napari_unet.core.model.meta import ModelMeta
    from napari_unet.core.model.unet import UNet

    torch.manual_seed(0)
    model = UNet(1, 2, base_channels=4, depth=2).eval()
    return export_bioimageio(model, ModelMeta.for_model(model),
                             tmp_path_factory.mktemp("zoo") / "pkg.zip",
                             ExportConfig(torchscript=False))


def rewritten(src: Path, dst: Path, edit=None, replace: dict[str, bytes] | None = None) -> Path:
    """A copy of package ``src`` with its rdf edited by ``edit(rdf)`` and members replaced
    (their sha256 updated, as a careful author would)."""
    with zipfile.ZipFile(src) as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    files.update(replace or {})
    rdf = yaml.safe_load(files["rdf.yaml"])
    for entry in rdf["weights"].values():
        entry["sha256"] = hashlib.sha256(files[entry["source"]]).hexdigest()
    if edit is not None:
        edit(rdf)
    files["rdf.yaml"] = yaml.safe_dump(rdf).encode()
    with zipfile.ZipFile(dst, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return dst


def _set(path: str, value):
    def edit(rdf):
        *keys, last = path.split(".")
        node = rdf
        for key in keys:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[last] = value
    return edit


MALFORMED = [
    ("weights.pytorch_state_dict.architecture", "unet.py:UNet",
     "weights.pytorch_state_dict.architecture must be a mapping (key: value), not a text"),
    ("inputs.0.preprocessing.0.kwargs", [1, 2],
     "inputs[0].preprocessing[0].kwargs must be a mapping (key: value), not a list"),
    ("weights", ["pytorch_state_dict"], "weights must be a mapping of weight formats, not a "
                                        "list"),
]


@pytest.mark.parametrize("field,value,says", MALFORMED)
def test_a_malformed_package_field_is_named(package, tmp_path, capsys, field, value, says):
    if field == "weights":
        def edit(rdf):  # keep the sha256 step working, then break the field
            rdf["weights"] = value
    else:
        edit = _set(field, value)
    bad = rewritten(package, tmp_path / "bad.zip", edit)
    with pytest.raises(ValueError, match=re.escape(says)):
        load_model(bad)
    tifffile.imwrite(tmp_path / "img.tif", np.zeros((32, 32), np.uint8))
    status, _, err = cli(capsys, "predict", "--model", bad, "--image", tmp_path / "img.tif",
                         "--out", tmp_path / "out.tif", "--device", "cpu")
    assert_one_line_error(status, err, "bad.zip", says)


def test_scale_range_axes_that_are_a_number_are_named(package, tmp_path):
    def edit(rdf):
        for step in rdf["inputs"][0]["preprocessing"]:
            if step["id"] == "scale_range":
                step["kwargs"]["axes"] = 3
    bad = rewritten(package, tmp_path / "bad.zip", edit)
    with pytest.raises(ValueError, match=re.escape(
            "inputs[0].preprocessing[0].kwargs.axes must be a list of axis names, not a number")):
        load_model(bad)


class _System:
    """Unpickles as os.system(<touch a marker>): what a hostile weights file holds."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("kind", ["pickle", "random", "zeros"])
def test_weights_that_cannot_be_read_safely_say_so_without_torchs_advice(package, tmp_path,
                                                                        capsys, kind):
    marker = tmp_path / "code-ran"
    if kind == "pickle":
        buffer = io.BytesIO()
        torch.save({"w": _System(marker)}, buffer)
        weights = buffer.getvalue()
    elif kind == "random":
        weights = np.random.default_rng(0).bytes(100_000)
    else:
        weights = bytes(20 * 2**20)
    bad = rewritten(package, tmp_path / "bad.zip", replace={"weights.pt": weights})
    with pytest.raises(ValueError) as info:
        load_model(bad)
    text = str(info.value)
    assert "'weights.pt' is not a safe weights file" in text and "never runs code" in text
    assert "weights_only" not in text and "Re-running" not in text
    tifffile.imwrite(tmp_path / "img.tif", np.zeros((32, 32), np.uint8))
    status, _, err = cli(capsys, "predict", "--model", bad, "--image", tmp_path / "img.tif",
                         "--out", tmp_path / "out.tif", "--device", "cpu")
    assert_one_line_error(status, err, "not a safe weights file")
    assert "weights_only" not in err
    assert not marker.exists()


def test_weights_that_make_torchs_unpickler_pop_an_empty_stack_are_not_safe(package, tmp_path):
    # found by the long package fuzz: torch raises IndexError ("pop from empty list") here
    bad = rewritten(package, tmp_path / "bad.zip", replace={"weights.pt": b"\x80\x02."})
    with pytest.raises(ValueError, match="'weights.pt' is not a safe weights file"):
        load_model(bad)


def test_a_zip_with_undecodable_member_names_is_no_package_and_no_model(tmp_path):
    # found by the long fuzz: zipfile raises UnicodeDecodeError listing such a zip
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("ab", b"x")
    data = bytearray(buffer.getvalue())
    for signature, flag_at, name_at in ((b"PK\x03\x04", 6, 30), (b"PK\x01\x02", 8, 46)):
        start = data.find(signature)
        flags = struct.unpack_from("<H", data, start + flag_at)[0] | 0x800  # names are UTF-8
        struct.pack_into("<H", data, start + flag_at, flags)
        data[start + name_at:start + name_at + 2] = b"\xff\xfe"
    path = tmp_path / "names.zip"
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"names.zip' is not a valid napari-unet model file"):
        load_model(path)
