"""The Train dock's settings form, generated from ``TrainConfig``'s setting declarations.

Each setting declared for the docks (``core.settings``) becomes a control with the declaration's
label, help, range, choices and fold (advanced); it starts at the chosen preset's value, or at
the declared dock default (the time budget). Only the preset combo, the augmentation switches
and the preview switch are made here.

The preset combo shows the chosen recipe's values in the controls when the *user* changes it;
restoring remembered settings sets it without applying, so restored values stay.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from qtpy.QtWidgets import QComboBox, QHBoxLayout, QVBoxLayout, QWidget

from ..core.settings import Setting, settings_of
from ..core.training.augment import AugmentConfig
from ..core.training.config import PRESETS, TrainConfig
from ._form import Field, Form, make_control, setting_fields
from .settings import Binding
from .tooltips import tooltip

DOCK = "train"

#: Boolean AugmentConfig fields become check boxes; "intensity" toggles the three ranges.
AUGMENT_TOGGLES = tuple(f.name for f in dataclasses.fields(AugmentConfig)
                        if f.type in ("bool", bool))
_INTENSITY = ("brightness", "contrast", "gamma")
_NEUTRAL_INTENSITY = {"brightness": (0.0, 0.0), "contrast": (1.0, 1.0), "gamma": (1.0, 1.0)}


def config_fields(preset: str | None = None) -> list[Field]:
    """The form's rows: ``TrainConfig``'s settings declared for the docks, starting at
    ``preset``'s values (or the default preset's), or at a declared dock default."""
    config = TrainConfig() if preset is None else TrainConfig(preset=preset)
    return setting_fields(TrainConfig, {f.name: getattr(config, f.name)
                                        for f in dataclasses.fields(TrainConfig)})


def hidden_settings() -> dict[str, Any]:
    """Settings the dock uses without showing them: their declared dock defaults (batches are
    prepared in worker processes, whose GIL-holding work cannot stall the viewer)."""
    return {item.name: item.setting.dock_default for item in settings_of(TrainConfig)
            if not item.setting.dock and item.setting.dock_default is not Setting.UNSET}


class TrainForm(QWidget):
    """Preset, the generated TrainConfig controls, augmentation toggles and the preview switch.

    Attributes
    ----------
    form : _form.Form
        The generated controls (``form[name]``, ``form.value(name)``, ``form.set_value``).
    preset : QComboBox
        Its default (``default_preset``) is the form's default, e.g.
        ``core.training.config.preset_for``.
    augment : dict[str, QCheckBox]
        ``elastic``, ``flips``, ``rot90``..., and ``intensity``.
    preview : QCheckBox
        Live preview of the view while training.
    """

    def __init__(self, preset: str | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.default_preset = TrainConfig().preset if preset is None else preset
        self.preset = QComboBox()
        self.preset.setObjectName("preset")
        self.preset.addItems(tuple(PRESETS))
        self.preset.setCurrentText(self.default_preset)
        self.preset.setToolTip(tooltip(DOCK, "preset"))
        # activated: only user choices apply a preset (restoring settings sets it silently).
        self.preset.activated.connect(lambda *_: self.apply_preset(self.preset.currentText()))

        self.form = Form(config_fields(self.default_preset), DOCK)
        self.form.layout.insertRow(0, "preset", self.preset)

        row = QWidget()
        row_layout = QHBoxLayout(row)
        row_layout.setContentsMargins(0, 0, 0, 0)
        defaults = TrainConfig(preset=self.default_preset).augment
        self.augment: dict[str, Any] = {}
        for name in (*AUGMENT_TOGGLES, "intensity"):
            value = defaults.has_intensity if name == "intensity" else getattr(defaults, name)
            box = make_control(Field(name, name, "bool", bool(value), text=name))
            box.setToolTip(tooltip(DOCK, name))
            self.augment[name] = box
            row_layout.addWidget(box)
        self.form.add_row("augment", row)
        self.preview = make_control(Field("live_preview", "", "bool", True,
                                          text="live preview of the view"))
        self.preview.setToolTip(tooltip(DOCK, "live_preview"))
        self.form.add_row(None, self.preview)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(self.form.layout)

    # -- values ----------------------------------------------------------------------------
    def set_value(self, name: str, value: Any) -> None:
        """Set one TrainConfig control (tests, scripts)."""
        self.form.set_value(name, value)

    def apply_preset(self, preset: str) -> None:
        """Select ``preset`` and show its recipe in the controls (the fields the preset sets:
        rate, batch, tile, augmentation...; the time budget, device etc. stay)."""
        self.preset.setCurrentText(preset)
        for field in config_fields(preset):
            if field.name in PRESETS[preset]:
                self.form.set_value(field.name, field.default)
        augment = TrainConfig(preset=preset).augment
        for name, box in self.augment.items():
            box.setChecked(bool(augment.has_intensity if name == "intensity"
                                else getattr(augment, name)))

    def config(self) -> TrainConfig:
        """The TrainConfig of the current settings; ``ValueError`` for impossible values."""
        preset = self.preset.currentText()
        augment = TrainConfig(preset=preset).augment
        toggles = {name: box.isChecked() for name, box in self.augment.items()}
        intensity = toggles.pop("intensity")
        changes: dict[str, Any] = dict(toggles)
        if not intensity:
            changes.update(_NEUTRAL_INTENSITY)
        elif not augment.has_intensity:
            default = AugmentConfig()
            changes.update({k: getattr(default, k) for k in _INTENSITY})
        return TrainConfig(preset=preset, augment=dataclasses.replace(augment, **changes),
                           **hidden_settings(), **self.form.values())

    def controls(self) -> list[QWidget]:
        """Everything to disable while a training runs."""
        return [self.preset, *self.form.widgets.values(), *self.augment.values(), self.preview]

    def bindings(self) -> dict[str, Binding]:
        """How the settings store reads and writes the controls outside ``form``."""
        def set_preset(value: Any) -> None:
            if self.preset.findText(str(value)) < 0:
                raise ValueError(f"no preset {value!r}")
            self.preset.setCurrentText(str(value))

        out = {"preset": Binding(self.preset.currentText, set_preset, self.default_preset)}
        for name, box in {**self.augment, "live_preview": self.preview}.items():
            out[f"augment_{name}" if name != "live_preview" else name] = Binding(
                box.isChecked, _checker(box), box.isChecked())
        return out

    def change_signals(self) -> list[Any]:
        """Signals of the controls in :meth:`bindings` (the form's own are saved by the store)."""
        return [self.preset.currentIndexChanged,
                *(box.toggled for box in (*self.augment.values(), self.preview))]


def _checker(box: Any) -> Any:
    def set_checked(value: Any) -> None:
        if not isinstance(value, bool):
            raise TypeError(f"{box.objectName()!r} needs True or False, got {value!r}")
        box.setChecked(value)
    return set_checked


__all__ = ["AUGMENT_TOGGLES", "TrainForm", "config_fields", "hidden_settings"]
