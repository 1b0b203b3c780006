"""The shared form table and the remembered settings, without a viewer."""

import pytest

from napari_unet._widgets._form import Field, Form
from napari_unet._widgets.settings import Binding, DockSettings

FIELDS = (
    Field("threshold", "threshold", "float", 0.5, 0.01, 0.99, 0.05),
    Field("min_size", "minimum size", "int", None, 0, 1000, none_text="auto"),
    Field("tta", "", "bool", False, text="TTA"),
    Field("tiling", "tiling", "choice", "fast", choices=(("exact!", "exact"), ("fast!", "fast"))),
    Field("suffix", "suffix", "text", ""),
    Field("overwrite", "", "bool", False, text="overwrite"),
)


def _form():
    return Form(FIELDS, "batch")  # the batch table has a tooltip for each of these names


def test_form_values_defaults_and_none_at_minimum(qtbot):
    form = _form()
    qtbot.addWidget(form["threshold"])
    assert form.values() == form.defaults() == {
        "threshold": 0.5, "min_size": None, "tta": False, "tiling": "fast", "suffix": "",
        "overwrite": False}
    form.set_values({"min_size": 30, "tiling": "exact", "unknown": 1})
    assert form.value("min_size") == 30 and form.value("tiling") == "exact"
    assert form["tiling"].currentText() == "exact!"
    form.set_value("min_size", None)
    assert form["min_size"].value() == 0 and form.value("min_size") is None
    assert all(w.toolTip() for w in form.widgets.values())


def test_form_rejects_values_that_do_not_fit(qtbot):
    form = _form()
    with pytest.raises(ValueError, match="out of range"):
        form.set_value("threshold", 2.0)
    with pytest.raises(ValueError, match="needs a number"):
        form.set_value("threshold", None)
    with pytest.raises(TypeError, match="True or False"):
        form.set_value("tta", "yes")
    with pytest.raises(ValueError, match="offers no 'slow'"):
        form.set_value("tiling", "slow")
    assert form.values() == form.defaults()
    with pytest.raises(ValueError, match="kind must be one of"):
        Field("x", "x", "colour")
    with pytest.raises(KeyError, match="no tooltip for 'nameless'"):
        Form((Field("nameless", "n", "bool", False),), "batch")


def test_settings_round_trip_extras_and_reset(qtbot, dock_settings_file):
    form = _form()
    state = {"value": "a"}
    extras = {"model": Binding(lambda: dict(state), lambda v: state.update(v), {"value": "a"})}
    settings = DockSettings("batch", form, extras)
    form.set_values({"threshold": 0.25, "overwrite": True, "suffix": "_x"})
    state["value"] = "b"
    settings.save()
    stored = settings.stored()
    assert stored["threshold"] == 0.25 and stored["model"] == {"value": "b"}
    assert "overwrite" not in stored  # never remembered

    again = _form()
    state["value"] = "a"
    restored = DockSettings("batch", again, extras).restore()
    assert set(restored) == {"threshold", "min_size", "tta", "tiling", "suffix", "model"}
    assert again.value("threshold") == 0.25 and again.value("suffix") == "_x"
    assert again.value("overwrite") is False and state["value"] == "b"

    settings.reset()
    assert form.values() == form.defaults() and state["value"] == "a"
    assert settings.stored() == {}
