import numpy as np
import pytest
import tifffile

from napari_unet._widgets.batch import check_folders, summary_text


def test_check_folders(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    assert check_folders(str(src), str(tmp_path / "out")) == (src, tmp_path / "out")
    with pytest.raises(ValueError, match="input folder"):
        check_folders("", str(tmp_path))
    with pytest.raises(ValueError, match="does not exist"):
        check_folders(str(tmp_path / "nope"), str(tmp_path / "out"))
    with pytest.raises(ValueError, match="another folder"):
        check_folders(str(src), str(src))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        check_folders(str(src), str(tmp_path / "file"))
    with pytest.raises(ValueError, match="cannot create"):
        check_folders(str(src), str(tmp_path / "a" / "b"))


def test_summary_text(tmp_path):
    from napari_unet.core.events import BatchSummary

    summary = BatchSummary([tmp_path / "a.tif"], [], [(tmp_path / "b.tif", "corrupt")])
    assert summary_text(summary) == ("batch: 1 done, 0 skipped, 1 failed "
                                     "(first failure: b.tif: corrupt)")


@pytest.fixture
def folders(tmp_path):
    import torch

    from napari_unet.core.model.checkpoint import save_model
    from napari_unet.core.model.unet import UNet

    torch.manual_seed(0)
    model_path = tmp_path / "tiny.pt"
    save_model(model_path, UNet(1, 2, base_channels=4, depth=2))
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        tifffile.imwrite(src / f"{name}.tif", rng.integers(0, 255, (32, 40), dtype=np.uint8))
    (src / "broken.tif").write_bytes(b"not a TIFF")
    out.mkdir()
    tifffile.imwrite(out / "c.tif", np.zeros((32, 40), np.uint16))  # done before: skipped
    return model_path, src, out


def _dock(viewer, model_path, src, out):
    _, widget = viewer.window.add_plugin_dock_widget("napari-original-unet", "Batch segment")
    widget.model_choice.set_source("file", str(model_path))
    widget.input_edit.setText(str(src))
    widget.output_edit.setText(str(out))
    return widget


@pytest.mark.gui
def test_batch_from_menu_writes_labels_and_summary(make_napari_viewer, qtbot, folders,
                                                   monkeypatch):
    from napari_unet._menu import open_batch
    from napari_unet._widgets import _jobs

    shown = []
    monkeypatch.setattr(_jobs.notifications, "show_warning", shown.append)
    model_path, src, out = folders
    viewer = make_napari_viewer()
    widget = open_batch(viewer)
    assert open_batch(viewer) is widget  # one dock per viewer
    widget.model_choice.set_source("file", str(model_path))
    widget.input_edit.setText(str(src))
    widget.output_edit.setText(str(out))
    assert widget.options()["orthogonal_views"] is None  # a PredictConfig field, its default
    assert widget.run() is not None and not widget.run_button.isEnabled()
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=30000)
    assert sorted(p.name for p in out.iterdir()) == ["a.tif", "b.tif", "c.tif"]
    assert tifffile.imread(out / "a.tif").shape == (32, 40)
    assert len(shown) == 1
    assert shown[0].startswith("batch: 2 done, 1 skipped, 1 failed (first failure: broken.tif:")
    assert widget.run_button.isEnabled() and not widget.stop_button.isEnabled()


@pytest.mark.gui
def test_batch_stop(make_napari_viewer, qtbot, folders):
    model_path, src, out = folders
    viewer = make_napari_viewer()
    widget = _dock(viewer, model_path, src, out)
    widget.run()
    widget.stop()
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=30000)
    assert widget.status.text().startswith("stopped")
    assert widget.summary is None


@pytest.mark.gui
def test_batch_bad_input_starts_nothing(make_napari_viewer, folders, tmp_path, monkeypatch):
    from napari_unet._widgets import _jobs

    errors = []
    monkeypatch.setattr(_jobs.notifications, "show_error", errors.append)
    model_path, src, out = folders
    viewer = make_napari_viewer()
    widget = _dock(viewer, model_path, tmp_path / "missing", out)
    widget.block.say("done 0, skipped 3")  # what the last run said
    widget.progress.setRange(0, 3)
    widget.progress.setValue(3)
    assert widget.run() is None and "does not exist" in errors[-1]
    # a refused run does not leave the last one's summary and full bar
    assert widget.status.text() == "" and widget.progress.value() == 0
    empty = tmp_path / "empty"
    empty.mkdir()
    widget.input_edit.setText(str(empty))
    assert widget.run() is None and "no images" in errors[-1]
    widget.input_edit.setText(str(src))
    widget.model_choice.set_source("file", str(tmp_path / "none.pt"))
    assert widget.run() is None and "does not exist" in errors[-1]
    assert not widget.runner.running
    assert sorted(p.name for p in out.iterdir()) == ["c.tif"]


@pytest.mark.gui
def test_the_batch_runs_in_the_job_process(make_napari_viewer, qtbot, folders, monkeypatch,
                                           job_process):
    from napari_unet._widgets import _jobs

    shown = []
    monkeypatch.setattr(_jobs.notifications, "show_warning", shown.append)
    model_path, src, out = folders
    viewer = make_napari_viewer()
    widget = _dock(viewer, model_path, src, out)
    assert widget.run() is not None and job_process.process.busy
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=30000)
    assert not job_process.process.busy
    assert sorted(p.name for p in out.iterdir()) == ["a.tif", "b.tif", "c.tif"]
    assert tifffile.imread(out / "a.tif").shape == (32, 40)
    # the summary came back through the process: 2 done, the earlier output skipped, 1 broken
    assert shown and "2 done, 1 skipped, 1 failed" in shown[0]
