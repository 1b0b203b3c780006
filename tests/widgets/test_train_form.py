"""The Train dock's settings form, generated from TrainConfig."""

from __future__ import annotations

import pytest

from napari_unet._widgets import train_form
from napari_unet._widgets.tooltips import controls_without_tooltip
from napari_unet._widgets.train_form import TrainForm, config_fields, hidden_settings
from napari_unet.core.settings import declared, settings_of
from napari_unet.core.training.config import LOSSES, PRESETS, TrainConfig

DOCK_DEFAULTS = {"minutes": 3.0, "iterations": None}  # a person thinks "train for 3 minutes"


def test_fields_come_from_the_declarations():
    fields = {f.name: f for f in config_fields("fast")}
    shown = [item.name for item in settings_of(TrainConfig) if item.setting.dock]
    assert list(fields) == shown and "minutes" in fields and "preset" not in fields
    fast = TrainConfig.fast()
    assert fields["iterations"].kind == "int" and fast.iterations == 500
    # the dock's budget is its minutes: no step limit by default
    assert {name: fields[name].default for name in DOCK_DEFAULTS} == DOCK_DEFAULTS
    assert fields["iterations"].none_text and fields["minutes"].none_text
    assert fields["lr"].kind == "float" and fields["lr"].default == fast.lr
    assert fields["tile_size"].default == fast.tile_size
    assert fields["loss"].kind == "choice"
    assert [value for _, value in fields["loss"].choices] == list(LOSSES)
    assert fields["lr"].advanced and not fields["minutes"].advanced
    assert fields["w0"].help == declared(TrainConfig, "w0").setting.help
    assert {f.name: f for f in config_fields("paper")}["tile_size"].default == 572
    assert hidden_settings() == {"workers": "auto"}


@pytest.mark.gui
def test_form_gives_the_config_of_its_controls(qtbot, monkeypatch):
    form = TrainForm(preset="finetune")
    qtbot.addWidget(form)
    expected = TrainConfig(preset="finetune", **DOCK_DEFAULTS, workers="auto")
    assert form.config() == expected
    assert form.preset.currentText() == "finetune"
    # Tooltips: the declarations' help
    assert [c for c in controls_without_tooltip(form) if c != "QScrollBar"] == []
    assert form.form["iterations"].toolTip() == declared(TrainConfig, "iterations").setting.help
    assert form.augment["flips"].toolTip().startswith("Random mirror images")

    form.set_value("minutes", None)  # the spin box's minimum: no time limit
    assert form.form["minutes"].text() == "no time limit" and form.config().minutes is None
    form.apply_preset("paper")
    config = form.config()
    assert (config.preset, config.tile_size, config.lr) == ("paper", 572, PRESETS["paper"]["lr"])
    assert config.minutes is None  # a recipe leaves the budget alone
    form.augment["intensity"].setChecked(True)  # the paper has none: the defaults come in
    assert form.config().augment.has_intensity

    bindings = form.bindings()
    bindings["preset"].set("fast")
    bindings["augment_flips"].set(False)
    assert form.config().preset == "fast" and form.config().augment.flips is False
    assert form.config().tile_size == 572  # restoring a preset does not apply its recipe
    with pytest.raises(ValueError, match="no preset"):
        bindings["preset"].set("gone")
    with pytest.raises(TypeError):
        bindings["live_preview"].set("yes")
    monkeypatch.setattr(train_form, "hidden_settings", lambda: {"workers": 0})
    assert form.config().workers == 0
