"""The reusable model picker: its spec, the nets it builds, the disabled default entry."""

from __future__ import annotations

import pytest
import torch

from napari_unet._widgets import model_choice as mc
from napari_unet._widgets.model_choice import ModelChoice, ModelSpec
from napari_unet.core.model.checkpoint import save_model
from napari_unet.core.model.unet import UNet

pytestmark = pytest.mark.gui

TINY = {"base_channels": 4, "depth": 2}


def test_spec_builds_each_new_variant_with_its_upsampling():
    for source, padding in (("original", "valid"), ("modified", "same"), ("small", "same")):
        for upsampling in ("transpose", "bilinear"):
            spec = ModelSpec(source, upsampling, overrides=TINY)
            model, meta = spec.build(in_channels=3, num_classes=2)
            assert model.config["padding"] == padding
            assert model.config["upsampling"] == upsampling
            assert model.config["base_channels"] == 4 and model.config["depth"] == 2
            assert model.in_channels == 3 and meta.mode == "instances"
            assert meta.step == 0
            assert spec.is_new and spec.describe() == f"new {source} ({upsampling})"


def test_spec_loads_a_model_file_and_checks_channels(tmp_path):
    saved = UNet.small(in_channels=1, num_classes=2, **TINY)
    path = save_model(tmp_path / "m.pt", saved, {"step": 7})
    model, meta = ModelSpec("file", path=str(path)).build(in_channels=1)
    assert meta.step == 7
    for (k, a), b in zip(saved.state_dict().items(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    with pytest.raises(ValueError, match="input channels"):
        ModelSpec("file", path=str(path)).build(in_channels=2)


def test_spec_rejects_bad_values(tmp_path):
    with pytest.raises(ValueError, match="model source"):
        ModelSpec("huge")
    with pytest.raises(ValueError, match="upsampling"):
        ModelSpec("small", "nearest")
    with pytest.raises(ValueError, match="choose a model file"):
        ModelSpec("file")
    with pytest.raises(ValueError, match="does not exist"):
        ModelSpec("file", path=str(tmp_path / "nope.pt"))


def test_widget_rows_follow_the_source(qtbot, tmp_path):
    widget = ModelChoice()
    qtbot.addWidget(widget)
    widget.show()
    widget.set_source("modified")
    assert widget.upsampling.isVisible() and not widget.path.isVisible()
    widget.upsampling.setCurrentText("bilinear")
    assert widget.spec() == ModelSpec("modified", "bilinear")

    widget.set_source("file")
    assert widget.path.isVisible() and not widget.upsampling.isVisible()
    with pytest.raises(ValueError, match="choose a model file"):
        widget.spec()
    path = save_model(tmp_path / "m.pt", UNet.small(**TINY))
    with qtbot.waitSignal(widget.changed):
        widget.path.setText(str(path))
    assert widget.spec().path == str(path)


def test_overrides_reach_the_spec(qtbot):
    widget = ModelChoice()
    qtbot.addWidget(widget)
    widget.set_source("small")
    widget.overrides = dict(TINY)
    model, _ = widget.spec().build(in_channels=1)
    assert model.config["depth"] == 2


def test_missing_default_is_disabled_with_the_reason(qtbot, monkeypatch):
    monkeypatch.setattr(mc, "default_model_problem", lambda: "the default model is missing")
    widget = ModelChoice()
    qtbot.addWidget(widget)
    item = widget.source.model().item(widget.source.findData("default"))
    assert not item.isEnabled()
    assert item.toolTip() == "the default model is missing"
    assert widget.current_source() == "small"  # a usable choice is preselected
    widget.source.setCurrentIndex(widget.source.findData("default"))  # programmatic bypass
    with pytest.raises(ValueError, match="default model is missing"):
        widget.spec()


def test_installed_default_is_preselected(qtbot, monkeypatch):
    monkeypatch.setattr(mc, "default_model_problem", lambda: None)
    widget = ModelChoice()
    qtbot.addWidget(widget)
    assert widget.current_source() == "default"
    assert widget.source.model().item(widget.source.currentIndex()).isEnabled()
    assert widget.spec() == ModelSpec("default")


def test_predict_mode_offers_no_untrained_nets(qtbot, monkeypatch):
    monkeypatch.setattr(mc, "default_model_problem", lambda: "missing")
    widget = ModelChoice(allow_new=False)
    qtbot.addWidget(widget)
    offered = [widget.source.itemData(i) for i in range(widget.source.count())]
    assert offered == ["default", "file"]
    assert widget.current_source() == "file"
