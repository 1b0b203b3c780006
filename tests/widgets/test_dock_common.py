"""What every dock shares: tooltips, remembered settings, controls reaching the config, napari's
own feedback (activity panel, one notification per failure, no warning for the normal case)."""

import numpy as np
import pytest
import tifffile

DOCKS = ("Annotate", "Predict", "Batch segment")


@pytest.fixture
def tiny_model(tmp_path):
    import torch

    from napari_unet.core.model.checkpoint import save_model
    from napari_unet.core.model.unet import UNet

    torch.manual_seed(0)
    path = tmp_path / "tiny.pt"
    save_model(path, UNet(1, 2, base_channels=4, depth=2))  # records no pixel size
    return path


@pytest.fixture
def shown(monkeypatch):
    """Every napari notification, as (severity, message)."""
    from napari.utils.notifications import notification_manager

    seen = []
    monkeypatch.setattr(notification_manager, "dispatch",
                        lambda n: seen.append((str(n.severity), str(n.message))))
    return seen


def _dock(viewer, name):
    _, widget = viewer.window.add_plugin_dock_widget("napari-original-unet", name)
    return widget


@pytest.mark.gui
@pytest.mark.parametrize("name", DOCKS)
def test_every_control_has_a_tooltip(make_napari_viewer, name):
    from napari_unet._widgets.tooltips import controls_without_tooltip

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((2, 16, 16), np.float32), name="img")
    widget = _dock(viewer, name)
    assert controls_without_tooltip(widget) == []


def test_tooltip_table_names_missing_entries():
    from napari_unet._widgets.tooltips import tooltip

    assert "percentile" in tooltip("predict", "norm_low")
    assert "default" in tooltip("batch", "reset_settings")  # shared section
    with pytest.raises(KeyError, match="no tooltip for 'nope' in the 'predict' dock"):
        tooltip("predict", "nope")


@pytest.mark.gui
def test_predict_settings_survive_a_fresh_widget_and_reset(make_napari_viewer, tiny_model,
                                                           dock_settings_file):
    from napari_unet._widgets.predict import PredictWidget

    viewer = make_napari_viewer()
    first = PredictWidget(viewer)
    defaults = first.form.values()
    changes = {"threshold": 0.3, "min_size": 25, "object_diameter": 17.5,
               "own_normalization": True,
               "norm_low": 2.0, "norm_high": 99.0, "tta": True, "split_touching": False,
               "scope": "current slice", "probabilities": True}
    first.form.set_values(changes)
    first.model_choice.set_source("file", str(tiny_model))
    first.close()
    assert dock_settings_file.is_file()

    second = PredictWidget(viewer)  # a new session reads the same settings file
    assert {k: second.form.value(k) for k in changes} == changes
    assert second.model_choice.current_source() == "file"
    assert second.model_choice.path.text() == str(tiny_model)
    second.settings.reset()
    assert second.form.values() == defaults
    third = PredictWidget(viewer)
    assert third.form.values() == defaults


@pytest.mark.gui
def test_batch_settings_remember_all_but_overwrite(make_napari_viewer, tmp_path):
    from napari_unet._widgets.batch import BatchWidget
    from napari_unet._widgets.settings import NEVER_REMEMBERED

    viewer = make_napari_viewer()
    first = BatchWidget(viewer)
    first.input_edit.setText(str(tmp_path / "in"))
    first.input_edit.editingFinished.emit()
    first.form.set_values({"threshold": 0.7, "suffix": "_labels", "probabilities": True,
                           "overwrite": True})
    assert "overwrite" not in first.settings.stored() and "overwrite" in NEVER_REMEMBERED
    second = BatchWidget(viewer)
    assert second.input_edit.text() == str(tmp_path / "in")
    assert second.form.value("threshold") == pytest.approx(0.7)
    assert second.form.value("suffix") == "_labels" and second.form.value("probabilities")
    assert second.form.value("overwrite") is False


@pytest.mark.gui
def test_settings_file_with_stale_values_is_survived(make_napari_viewer, dock_settings_file):
    from napari_unet._widgets.predict import PredictWidget

    dock_settings_file.parent.mkdir(parents=True, exist_ok=True)
    dock_settings_file.write_text('[predict]\nthreshold=7\nscope="\\"gone\\""\ntta=true\n'
                                  'min_size=not json\n')
    widget = PredictWidget(make_napari_viewer())
    assert widget.form.value("threshold") == 0.5  # out of range: the default is kept
    assert widget.form.value("scope") == "whole stack" and widget.form.value("tta") is True


@pytest.mark.gui
def test_annotate_settings_survive_a_fresh_widget(make_napari_viewer):
    from napari_unet._widgets.annotate import AnnotateWidget

    viewer = make_napari_viewer()
    first = AnnotateWidget(viewer)
    first.mode_combo.value = "semantic"
    first.class_names_edit.setText("background, nucleus, membrane")
    first.class_names_edit.editingFinished.emit()
    first.slice_only.setChecked(False)
    second = AnnotateWidget(viewer)
    assert second.mode == "semantic" and not second.slice_only.isChecked()
    assert second.class_names() == ["background", "nucleus", "membrane"]


# -- controls reach the config -----------------------------------------------------------------
@pytest.mark.gui
def test_predict_controls_reach_the_config(make_napari_viewer, tiny_model):
    from napari_unet._widgets.predict import prediction_input

    viewer = make_napari_viewer()
    layer = viewer.add_image(np.zeros((3, 16, 16), np.float32), name="img")
    widget = _dock(viewer, "Predict")
    widget.form.set_values({"threshold": 0.35, "min_size": 12, "object_diameter": 20.0,
                            "tile_size": 64, "tta": True, "split_touching": False,
                            "uncertainty_layer": True, "probabilities": True})
    config = widget._config(layer)
    assert (config.threshold, config.min_size, config.object_diameter) == (0.35, 12, 20.0)
    assert config.tile_size == (64, 64) and config.tta and not config.split_touching
    assert config.uncertainty and config.keep_probabilities
    widget.form.set_values({"min_size": None, "object_diameter": None, "tile_size": None})
    config = widget._config(layer)
    assert config.min_size is None and config.object_diameter is None
    assert config.tile_size is None
    for tiling in ("exact", "fast"):
        widget.form.set_value("tiling", tiling)
        assert widget._config(layer).tiling == tiling
    assert widget._config(layer).volume is None  # auto: from the file's axes
    widget.form.set_value("volume", True)
    assert widget._config(layer).volume is True
    assert widget.form["volume"].currentText() == "3D objects"
    widget.form.set_value("volume", False)
    assert widget._config(layer).volume is False
    widget.form.set_value("volume", None)
    assert widget._config(layer).volume is None
    # PredictConfig's default: the views wherever objects are built in 3D
    assert widget.form.values()["orthogonal_views"] is None
    assert widget._config(layer).orthogonal_views is None
    widget.form.set_value("orthogonal_views", False)
    assert widget._config(layer).orthogonal_views is False  # XY slices only
    widget.form.set_value("orthogonal_views", True)
    assert widget._config(layer).orthogonal_views is True

    assert widget.normalization() is None
    widget.form.set_values({"own_normalization": True, "norm_low": 3.0, "norm_high": 97.5})
    assert widget.normalization() == {"method": "percentile", "low": 3.0, "high": 97.5}

    # channel choice: one channel of a 3-channel axis for a 1-channel model
    widget.channel_combo.value = 0
    assert [c for c in widget.channel_pick.choices] == [None, 0, 1, 2]
    widget.channel_pick.value = 2
    request = prediction_input(layer.data, 0, False, None, channel=widget.channel_pick.value)
    assert request.array.shape == (16, 16) and request.in_channels == 1
    assert request.channel_axis is None and request.out_shape == (16, 16)
    with pytest.raises(ValueError, match="channel 5 does not exist"):
        prediction_input(layer.data, 0, False, None, channel=5)


def test_prediction_job_uses_own_percentiles_and_drops_unused_pixel_size(tiny_model,
                                                                          monkeypatch):
    """The model records no pixel size (the normal case): the image's pixel size is dropped
    quietly instead of making the core warn; chosen percentiles replace the model's."""
    from napari_unet._widgets import predict as predict_module
    from napari_unet._widgets.model_choice import ModelSpec
    from napari_unet.core.inference import prediction
    from napari_unet.core.inference.config import PredictConfig

    seen = {}

    def fake_predict(model, image, config, meta):
        seen.update(config=config, meta=meta)
        yield "result"

    monkeypatch.setattr(prediction, "predict", fake_predict)
    request = predict_module.prediction_input(np.zeros((16, 16), np.float32), None, False, None)
    spec = ModelSpec(source="file", path=str(tiny_model))
    events = list(predict_module.prediction_job(
        spec, request, PredictConfig(pixel_size=0.5),
        {"method": "percentile", "low": 3.0, "high": 97.0}))
    assert events[-1] == "result"
    assert seen["config"].pixel_size is None
    assert seen["meta"].normalization == {"method": "percentile", "low": 3.0, "high": 97.0}


@pytest.mark.gui
def test_batch_controls_reach_the_job_and_overwrite_is_confirmed(make_napari_viewer, qtbot,
                                                                  tmp_path, tiny_model,
                                                                  monkeypatch):
    from napari_unet._widgets import batch as batch_module

    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    tifffile.imwrite(src / "a.tif", np.zeros((16, 16), np.uint8))
    tifffile.imwrite(out / "a_lab.tif", np.zeros((16, 16), np.uint16))
    seen = {}

    def fake_job(spec, input_dir, output_dir, options):
        seen.update(options)
        yield from ()

    monkeypatch.setattr(batch_module, "batch_job", fake_job)
    widget = _dock(make_napari_viewer(), "Batch segment")
    widget.model_choice.set_source("file", str(tiny_model))
    widget.input_edit.setText(str(src))
    widget.output_edit.setText(str(out))
    widget.form.set_values({"threshold": 0.4, "min_size": 9, "object_diameter": 12.0, "tta": True,
                            "probabilities": True, "suffix": "_lab", "overwrite": True,
                            "split_touching": False, "tile_size": 48, "tiling": "exact"})
    questions = []
    widget.confirm = lambda text: questions.append(text) or False
    assert widget.run() is None and "a_lab.tif" in questions[-1]  # refused: nothing starts
    widget.confirm = lambda text: True
    assert widget.run() is not None
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=20000)
    assert seen["threshold"] == 0.4 and seen["min_size"] == 9
    assert seen["object_diameter"] == 12.0 and seen["tta"] and seen["probabilities"]
    assert seen["suffix"] == "_lab" and seen["overwrite"] and not seen["split_touching"]
    assert seen["tile_size"] == 48 and seen["tiling"] == "exact"


@pytest.mark.gui
def test_estimate_button_fills_the_diameter(make_napari_viewer, qtbot, tiny_model,
                                            monkeypatch):
    from napari_unet.core.inference import diameter
    from napari_unet.core.inference.diameter import DiameterEstimate

    calls = []

    def fake_estimate(model, image, meta, channel_axis=None, device="cpu", **kwargs):
        calls.append((np.shape(image), channel_axis))
        return DiameterEstimate(23.44, 7, "objects are about 23.4 px across", usable=True)

    monkeypatch.setattr(diameter, "estimate_diameter", fake_estimate)
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((20, 24), np.float32), name="img")
    widget = _dock(viewer, "Predict")
    widget.model_choice.set_source("file", str(tiny_model))
    assert widget.estimate_button is not None and widget.form.value("object_diameter") is None
    assert widget.estimate_diameter() is not None
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=20000)
    assert calls == [((20, 24), None)]
    assert widget.form.value("object_diameter") == pytest.approx(23.4)
    assert widget.status.text() == "objects are about 23.4 px across"
    assert [layer.name for layer in viewer.layers] == ["img"]  # nothing predicted


# -- napari's own feedback ----------------------------------------------------------------------
@pytest.mark.gui
def test_a_mistake_is_one_line_without_a_traceback(make_napari_viewer, qtbot, tmp_path, shown,
                                                  caplog, monkeypatch):
    monkeypatch.setenv("NAPARI_UNET_LOG", str(tmp_path / "log" / "napari-unet.log"))
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a model")
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((16, 16), np.float32), name="img")
    widget = _dock(viewer, "Predict")
    widget.model_choice.set_source("file", str(bad))
    with caplog.at_level("INFO", logger="napari_unet"):
        assert widget.run() is not None
        qtbot.waitUntil(lambda: not widget.runner.running, timeout=20000)
    errors = [m for severity, m in shown if severity == "error"]
    assert len(errors) == 1 and "broken.pt" in errors[0] and "bug" not in errors[0]
    ours = [r for r in caplog.records if r.name.startswith("napari_unet")]
    assert ours and not any(r.exc_info for r in ours)  # one line, no traceback
    assert not (tmp_path / "log").exists()
    assert "failed" in widget.status.text() and widget.run_button.isEnabled()


def test_a_bug_names_the_log_file_with_its_traceback(tmp_path, shown, monkeypatch, capsys):
    import logging

    from napari_unet._widgets._jobs import notify_error

    path = tmp_path / "log" / "napari-unet.log"
    monkeypatch.setenv("NAPARI_UNET_LOG", str(path))
    try:
        raise KeyError("a bug of ours")
    except KeyError as err:
        notify_error(err)
    errors = [m for severity, m in shown if severity == "error"]
    assert len(errors) == 1 and f"the details are in {path}" in errors[0]
    logger = logging.getLogger("napari_unet")
    for handler in [h for h in logger.handlers if isinstance(h, logging.FileHandler)]:
        handler.flush()
        logger.removeHandler(handler)
        handler.close()
    text = path.read_text()
    assert "Traceback" in text and "a bug of ours" in text
    assert "Traceback" not in capsys.readouterr().err  # nothing on the terminal


@pytest.mark.gui
def test_prediction_reports_in_activity_panel_without_warnings(make_napari_viewer, qtbot,
                                                               tiny_model, shown):
    from napari.utils import progress

    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).random((24, 24)).astype(np.float32),
                     name="img", scale=(0.5, 0.5))  # a pixel size the model does not record
    widget = _dock(viewer, "Predict")
    widget.model_choice.set_source("file", str(tiny_model))
    widget.run()
    entries = [p for p in progress._all_instances if "predict" in p.desc]
    assert len(entries) == 1
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=20000)
    assert entries[0] not in progress._all_instances  # closed when the job ended
    assert "img prediction" in [layer.name for layer in viewer.layers]
    assert [m for severity, m in shown if severity in ("warning", "error")] == []


def test_time_left_comes_from_the_pace_once_there_is_one():
    from napari_unet._widgets._jobs import time_left
    from napari_unet.core.events import Progress

    assert time_left(Progress(1, 100), 1.0) is None  # too early to say
    assert time_left(Progress(10, 100), 30.0) == "about 4 min left"  # 3 s per tile, 90 to go
    assert time_left(Progress(50, 100), 20.0) == "about 20 s left"
    assert time_left(Progress(1, 4, eta_s=7300.0), 0.0) == "about 2 h 2 min left"  # the job's
    assert time_left(Progress(100, 100), 50.0) is None
    # the pace since a phase began (a stack's side views after its slices): 20 steps in 10 s
    assert time_left(Progress(70, 100), 10.0, first_step=50) == "about 15 s left"


def test_pace_starts_again_when_the_bar_does():
    from napari_unet._widgets._jobs import Pace
    from napari_unet.core.events import Progress

    pace = Pace(0.0)
    assert pace.time_left(Progress(50, 100), 100.0) == "about 2 min left"  # 2 s a step
    # the side views: a new total; their first event starts the clock, then their own pace
    assert pace.time_left(Progress(1, 20), 100.0) is None
    assert pace.time_left(Progress(11, 20), 110.0) == "about 10 s left"  # 1 s a step
    # a bar that goes back (the same total, a new part) starts again too
    assert pace.time_left(Progress(2, 20), 120.0) is None
