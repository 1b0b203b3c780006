"""Batch segmentation: names, resumability, bad files, cancelling, dask, bad settings."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tifffile
import torch

from napari_unet.core.data.synthetic import synthetic_nuclei
from napari_unet.core.events import BatchSummary, FileDone, Message, SliceProgress
from napari_unet.core.inference.batch import batch_segment
from napari_unet.core.io.images import read_image
from napari_unet.core.model.unet import UNet

SETTINGS = dict(tile_size=64, device="cpu")


@pytest.fixture
def model():
    torch.manual_seed(0)
    return UNet(1, 2, base_channels=4, depth=2, padding="same").eval()


def _nuclei(shape, seed):
    image, _ = synthetic_nuclei(shape, seed=seed)
    return (image * 1000).astype(np.uint16)


@pytest.fixture
def folder(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    tifffile.imwrite(src / "a.tif", _nuclei((48, 40), 0), imagej=True,
                     resolution=(1 / 0.5, 1 / 0.5), metadata={"axes": "YX", "unit": "um"})
    stack = np.stack([_nuclei((40, 44), s) for s in range(3)])
    tifffile.imwrite(src / "b.tif", stack, imagej=True, resolution=(1 / 0.25, 1 / 0.25),
                     metadata={"axes": "ZYX", "unit": "um", "spacing": 2.0})
    return src


def assert_same_objects(a, b):
    """The same label image up to the ids: every object of one is exactly one of the other."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    np.testing.assert_array_equal(a > 0, b > 0)
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    assert pairs.shape[1] == len(np.unique(a)) == len(np.unique(b))


def _run(*args, **kwargs):
    events = list(batch_segment(*args, **kwargs))
    assert isinstance(events[-1], BatchSummary)
    return events, events[-1]


def test_outputs_named_like_inputs_with_axes_and_pixel_size(model, folder, tmp_path):
    out = tmp_path / "out"
    events, summary = _run(model, folder, out, **SETTINGS)
    assert sorted(p.name for p in summary.done) == ["a.tif", "b.tif"]
    assert summary.skipped == [] and summary.failed == []
    assert sorted(p.name for p in out.iterdir()) == ["a.tif", "b.tif"]
    a, b = read_image(out / "a.tif"), read_image(out / "b.tif")
    assert a.axes == "YX" and a.array.shape == (48, 40) and a.array.dtype == np.uint16
    assert b.axes == "ZYX" and b.array.shape == (3, 40, 44)
    np.testing.assert_allclose(a.pixel_size, (0.5, 0.5), rtol=1e-5)
    np.testing.assert_allclose(b.pixel_size, (2.0, 0.25, 0.25), rtol=1e-5)
    # a.tif: one tile; b.tif (a Z stack by its axes): 3 slices, each its tile and its end
    # (no side views: the stack is thinner than 32 slices), then 3D labelling (2 passes)
    assert sum(isinstance(e, SliceProgress) for e in events) == 1 + 3 * 2 + 2
    # each says where the file is (the docks and the command line show it)
    assert {e.message for e in events if isinstance(e, SliceProgress)
            and e.path.name == "b.tif"} >= {"slice 1/3", "slice 3/3"}
    # the labels are those of predict_image with the file's axes and z spacing (2 / 0.25 um)
    from napari_unet.core.inference.prediction import predict_image

    ref = predict_image(model, tifffile.imread(folder / "b.tif"), axes="ZYX", z_spacing=8.0,
                        **SETTINGS)
    np.testing.assert_array_equal(b.array, ref.instances)


def test_existing_outputs_are_skipped_untouched_unless_overwrite(model, folder, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    tifffile.imwrite(out / "a.tif", np.full((5, 5), 7, np.uint16))
    before = (out / "a.tif").read_bytes()
    events, summary = _run(model, folder, out, **SETTINGS)
    assert summary.skipped == [folder / "a.tif"]
    assert [p.name for p in summary.done] == ["b.tif"]
    assert (out / "a.tif").read_bytes() == before
    # resumable: a second run has nothing left to do
    _, again = _run(model, folder, out, **SETTINGS)
    assert again.done == [] and len(again.skipped) == 2
    _, forced = _run(model, folder, out, overwrite=True, **SETTINGS)
    assert len(forced.done) == 2
    assert tifffile.imread(out / "a.tif").shape == (48, 40)


def test_truncated_tiff_is_reported_and_the_rest_still_run(model, folder, tmp_path):
    bad = folder / "a_broken.tif"
    tifffile.imwrite(bad, np.stack([_nuclei((40, 40), 5)] * 2), imagej=True)
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    events, summary = _run(model, folder, out, **SETTINGS)
    assert [p.name for p, _ in summary.failed] == ["a_broken.tif"]
    assert "truncated" in summary.failed[0][1] or "cannot read" in summary.failed[0][1]
    assert sorted(p.name for p in summary.done) == ["a.tif", "b.tif"]
    assert not (out / "a_broken.tif").exists()
    failed = [e for e in events if isinstance(e, FileDone) and e.status == "failed"]
    assert len(failed) == 1 and failed[0].path == bad


def test_stopping_mid_stack_leaves_no_output_file(model, folder, tmp_path):
    out = tmp_path / "out"
    job = batch_segment(model, [folder / "b.tif"], out, **SETTINGS)
    for event in job:
        if isinstance(event, SliceProgress) and event.step == 2:
            break
    job.close()
    assert list(out.iterdir()) == []  # neither the labels file nor a temporary one


def test_probabilities_file_and_suffix(model, folder, tmp_path):
    _, summary = _run(model, [folder / "b.tif"], folder, suffix="_labels", probabilities=True,
                      **SETTINGS)
    assert summary.done == [folder / "b.tif"]
    probs = tifffile.imread(folder / "b_labels_probabilities.tif")
    assert probs.shape == (3, 2, 40, 44) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    assert tifffile.imread(folder / "b_labels.tif").shape == (3, 40, 44)


def test_more_than_65535_objects_give_uint32_ome_and_a_message(model, tmp_path, monkeypatch):
    import napari_unet.core.inference.job as job

    monkeypatch.setattr(job, "instance_labels",
                        lambda fg, config, scale: np.arange(1, fg.size + 1, dtype=np.int32)
                        .reshape(fg.shape))
    src = tmp_path / "in"
    src.mkdir()
    tifffile.imwrite(src / "many.tif", _nuclei((300, 300), 1))
    events, summary = _run(model, src, tmp_path / "out", tile_size=160, device="cpu")
    assert len(summary.done) == 1
    notes = [e.text for e in events if isinstance(e, Message)]
    assert any("65,535" in n or "uint32" in n for n in notes)
    labels = tifffile.imread(tmp_path / "out" / "many.tif")
    assert labels.dtype == np.uint32 and labels.max() == 90000


def test_dask_local_cluster_result_equals_local(model, folder, tmp_path):
    from distributed import Client, LocalCluster

    from napari_unet.core.inference.batch import _ModelPlugin

    _run(model, folder, tmp_path / "local", **SETTINGS)
    before = _ModelPlugin.setups
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        events, summary = _run(model, folder, tmp_path / "dask", client=client, **SETTINGS)
    assert sorted(p.name for p in summary.done) == ["a.tif", "b.tif"]
    for name in ("a.tif", "b.tif"):
        np.testing.assert_array_equal(tifffile.imread(tmp_path / "dask" / name),
                                      tifffile.imread(tmp_path / "local" / name))
    # progress, and b.tif's note that a stack of 3 slices gets no side views
    others = [e for e in events if not isinstance(e, (FileDone, BatchSummary))
              and type(e).__name__ != "Progress"]
    assert [e.text.split(":")[0] for e in others] == ["XY slices only"]
    # the net went to the one worker once, not once per file
    assert _ModelPlugin.setups - before == 1


# -- bad settings ----------------------------------------------------------------------------
def test_output_folder_equal_to_input_folder_is_refused(model, folder):
    before = sorted(os.listdir(folder))
    with pytest.raises(ValueError, match="would replace the input"):
        list(batch_segment(model, folder, folder, **SETTINGS))
    assert sorted(os.listdir(folder)) == before


def test_unwritable_output_folder_is_refused(model, folder, tmp_path, monkeypatch):
    out = tmp_path / "locked"
    out.mkdir()
    out.chmod(0o500)
    if os.access(out, os.W_OK):  # running as root: permissions do not bind, simulate them
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, m: False if str(p) == str(out)
                            else real(p, m))
    with pytest.raises(ValueError, match="no permission to write"):
        list(batch_segment(model, folder, out, **SETTINGS))
    out.chmod(0o700)


@pytest.mark.parametrize("inputs, kwargs, match", [
    ("nowhere/*.tif", {}, "no images found"),
    ("missing.tif", {}, "is not a file"),
    (None, {"colour": "red"}, "unknown batch setting"),
    (None, {"tile_size": 50}, "tile 50 is not legal .* nearest are 48 and 52"),
])
def test_bad_inputs_and_settings(model, folder, tmp_path, inputs, kwargs, match):
    inputs = folder if inputs is None else str(tmp_path / inputs)
    with pytest.raises(ValueError, match=match):
        list(batch_segment(model, inputs, tmp_path / "out", **kwargs))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_huge_plane_tiles_on_the_cluster_equal_local(tmp_path):
    from distributed import Client, LocalCluster

    torch.manual_seed(0)
    valid = UNet(1, 2, base_channels=4, depth=2, padding="valid").eval()
    src = tmp_path / "in"
    src.mkdir()
    tifffile.imwrite(src / "big.tif", _nuclei((150, 170), 3), imagej=True,
                     metadata={"axes": "YX"})
    settings = dict(tile_size=60, device="cpu")
    _run(valid, src, tmp_path / "local", **settings)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        events, summary = _run(valid, src, tmp_path / "dask", client=client,
                               split_pixels=100 * 100, **settings)
    done = [e for e in events if isinstance(e, FileDone)]
    assert done[0].status == "done" and "cluster" in done[0].message
    assert_same_objects(tifffile.imread(tmp_path / "dask" / "big.tif"),
                        tifffile.imread(tmp_path / "local" / "big.tif"))


def test_arguments_are_checked_when_called(model, folder, tmp_path):
    from napari_unet.core.inference.batch import BatchConfig

    with pytest.raises(ValueError, match="no images found"):
        batch_segment(model, str(tmp_path / "nowhere" / "*.tif"), tmp_path / "out")
    with pytest.raises(TypeError, match="model must be a UNet or a model spec"):
        batch_segment(None, folder, tmp_path / "out")
    with pytest.raises(TypeError, match="config must be a BatchConfig"):
        batch_segment(model, folder, tmp_path / "out", config={"overwrite": True})
    with pytest.raises(ValueError, match="unknown batch setting"):
        batch_segment(model, folder, tmp_path / "out", colour="red")
    assert BatchConfig().predict.block_size >= 64


def test_ctrl_c_while_writing_leaves_no_half_written_output(model, folder, tmp_path,
                                                             monkeypatch):
    import napari_unet.core.io.images as io

    def interrupted(path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"II*\x00half a tiff")
        raise KeyboardInterrupt

    monkeypatch.setattr(io.tifffile, "imwrite", interrupted)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        list(batch_segment(model, [folder / "a.tif"], out, **SETTINGS))
    assert list(out.iterdir()) == []  # no labels file, no temporary file


def test_plane_pixels(folder, tmp_path):
    from napari_unet.core.inference.batch import plane_pixels

    assert plane_pixels(folder / "a.tif") == 48 * 40
    assert plane_pixels(folder / "b.tif") is None  # a stack
    assert plane_pixels(tmp_path / "x.png") is None  # not a TIFF: not measured
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"II*\x00garbage")
    with pytest.raises((OSError, ValueError)):
        plane_pixels(broken)  # never a silent 0


def test_time_series_of_volumes(model, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    data = np.stack([np.stack([_nuclei((40, 44), 10 * t + z) for z in range(3)])
                     for t in range(2)])
    tifffile.imwrite(src / "tz.tif", data, imagej=True, metadata={"axes": "TZYX"})
    _, summary = _run(model, src, tmp_path / "out", **SETTINGS)
    assert summary.failed == []
    labels = read_image(tmp_path / "out" / "tz.tif")
    assert labels.axes == "TZYX" and labels.array.shape == (2, 3, 40, 44)
    # each time point is its own volume: no id is shared between time points
    first, second = (set(np.unique(labels.array[t])) - {0} for t in range(2))
    assert not first & second
