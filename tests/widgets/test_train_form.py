"""The Train dock's settings form, generated from TrainConfig."""

from __future__ import annotations

import pytest

from napari_unet._widgets import train_form
from napari_unet._widgets.tooltips import TOOLTIPS, controls_without_tooltip
from napari_unet._widgets.train_form import (
    DOCK_DEFAULTS,
    HIDDEN,
    TrainForm,
    config_fields,
    docstring_fields,
    shown_fields,
)
from napari_unet.core.training.config import LOSSES, PRESETS, TrainConfig


class Documented:
    """Example.

    Parameters
    ----------
    alpha, beta : int
        Shared text
        on two lines.
    gamma : {"x", "y"}
    delta : float

    Notes
    -----
    not : a field
        ignored.
    """


def test_docstring_fields_reads_numpy_parameters():
    assert docstring_fields(Documented) == {
        "alpha": "Shared text on two lines.", "beta": "Shared text on two lines.",
        "gamma": '{"x", "y"}', "delta": "float"}
    docs = docstring_fields(TrainConfig)
    assert "optimizer steps" in docs["iterations"]
    assert set(shown_fields()) <= set(docs)  # every shown field is documented


def test_fields_come_from_the_dataclass():
    fields = {f.name: f for f in config_fields("fast")}
    assert tuple(fields) == shown_fields() and "minutes" in fields
    fast = TrainConfig.fast()
    assert fields["iterations"].kind == "int" and fast.iterations == 500
    # the dock's budget is its minutes: no step limit by default
    assert fields["iterations"].default is None and fields["iterations"].none_text
    assert fields["lr"].kind == "float" and fields["lr"].default == fast.lr
    assert fields["tile_size"].default == fast.tile_size
    assert fields["loss"].kind == "choice" and tuple(fields["loss"].choices) == tuple(LOSSES)
    assert fields["minutes"].default == DOCK_DEFAULTS["minutes"]
    assert fields["minutes"].none_text  # the minimum means "no time limit"
    assert config_fields("paper")[shown_fields().index("tile_size")].default == 572


@pytest.mark.gui
def test_form_gives_the_config_of_its_controls(qtbot, monkeypatch):
    form = TrainForm(preset="finetune")
    qtbot.addWidget(form)
    expected = TrainConfig(preset="finetune", **DOCK_DEFAULTS, **HIDDEN)
    assert form.config() == expected
    assert form.preset.currentText() == "finetune"
    # Tooltips from the one table, filled from TrainConfig's docstring.
    assert [c for c in controls_without_tooltip(form) if c != "QScrollBar"] == []
    assert form.form["iterations"].toolTip() == docstring_fields(TrainConfig)["iterations"]
    assert TOOLTIPS["train"]["minutes"] == form.form["minutes"].toolTip()

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
    monkeypatch.setitem(train_form.HIDDEN, "workers", 0)
    assert form.config().workers == 0
