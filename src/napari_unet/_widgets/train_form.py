"""The Train dock's settings form, generated from ``TrainConfig`` (one source for the settings).

Each shown field's control comes from the dataclass: its kind from the field's type, its default
from ``TrainConfig()``, its choices from the core's registries (``LOSSES``, ``DEVICE_CHOICES``),
its tooltip from ``TrainConfig``'s docstring (put into the one tooltip table,
``tooltips.TOOLTIPS["train"]``). Only presentation lives here: which fields, their labels and
spin-box ranges. Fields the installed ``TrainConfig`` lacks are left out.

The preset combo shows the chosen recipe's values in the controls when the *user* changes it;
restoring remembered settings sets it without applying, so restored values stay.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from qtpy.QtWidgets import QComboBox, QHBoxLayout, QVBoxLayout, QWidget

from ..core.runtime.device import DEVICE_CHOICES
from ..core.training.augment import AugmentConfig
from ..core.training.config import LOSSES, OPTIMIZERS, PRESETS, TrainConfig
from ._form import Field, Form, make_control
from .settings import Binding
from .tooltips import TOOLTIPS, tooltip

DOCK = "train"

#: Shown TrainConfig fields, in order, with how they look (label, range, step, decimals; a
#: ``none_text`` makes the spin box's minimum mean None).
LOOK: dict[str, dict[str, Any]] = {
    "minutes": dict(label="train for (minutes)", minimum=0.0, maximum=24 * 60.0, step=0.5,
                    decimals=2, none_text="no time limit"),
    "iterations": dict(label="at most (steps)", minimum=0, maximum=10**7, step=50,
                       none_text="no step limit"),
    "lr": dict(label="learning rate", minimum=0.0, maximum=1.0, step=1e-4, decimals=6),
    "batch_size": dict(label="batch size", minimum=1, maximum=256),
    "tile_size": dict(label="tile size (px)", minimum=16, maximum=4096, step=16),
    "loss": dict(label="loss"),
    "w0": dict(label="border weight w0", minimum=0.0, maximum=1000.0, step=0.5),
    "sigma": dict(label="border sigma (px)", minimum=0.0, maximum=1000.0, step=0.5),
    "validate_every": dict(label="validate every (steps)", minimum=0, maximum=10**6, step=10),
    "preview_every_s": dict(label="preview every (s)", minimum=0.0, maximum=3600.0, step=0.5,
                            decimals=1),
    "device": dict(label="device"),
}
#: Where the dock's default differs from TrainConfig's: a person thinks "train for a few
#: minutes", not "500 steps" (10-40 minutes on a laptop CPU before issue 11's loop, 1.6 on this
#: 2-core machine with it): the minutes are the budget, with no step limit.
DOCK_DEFAULTS: dict[str, Any] = {"minutes": 3.0, "iterations": None}
#: Settings the dock always uses and does not show: batches are prepared in worker processes,
#: whose GIL-holding warps and weight maps cannot stall the viewer.
HIDDEN: dict[str, Any] = {"workers": "auto"}
#: Choice fields and their registry in the core.
CHOICES: dict[str, tuple[str, ...]] = {"loss": tuple(LOSSES), "device": tuple(DEVICE_CHOICES),
                                       "optimizer": tuple(OPTIMIZERS)}
#: Boolean AugmentConfig fields become check boxes; "intensity" toggles the three ranges.
AUGMENT_TOGGLES = tuple(f.name for f in dataclasses.fields(AugmentConfig)
                        if f.type in ("bool", bool))
_INTENSITY = ("brightness", "contrast", "gamma")
_NEUTRAL_INTENSITY = {"brightness": (0.0, 0.0), "contrast": (1.0, 1.0), "gamma": (1.0, 1.0)}


def docstring_fields(cls: type) -> dict[str, str]:
    """Per-field text of a numpy-style ``Parameters`` section (``name : type`` + indented text).

    Fields documented without text get their type line (e.g. ``{"sgd", "adam"}``).
    """
    docs: dict[str, str] = {}
    current: list[str] = []
    in_parameters = False
    previous = ""
    for line in (cls.__doc__ or "").splitlines():
        if line.strip() and set(line.strip()) == {"-"}:  # a section's underline
            in_parameters = previous.strip() == "Parameters"
            current = []
            continue
        previous = line
        if not in_parameters:
            continue
        if line.startswith("    ") and not line.startswith("        ") and " : " in line:
            names, kind = line.split(" : ", 1)
            current = [n.strip() for n in names.split(",")]
            for name in current:
                docs[name] = ""
                docs[f"{name} (type)"] = kind.strip()
        elif line.startswith("        ") and current:
            for name in current:
                docs[name] = (docs[name] + " " + line.strip()).strip()
        elif not line.strip():
            continue
        else:
            current = []
    out = {}
    for name, text in docs.items():
        if not name.endswith(" (type)"):
            out[name] = text or docs.get(f"{name} (type)", "")
    return out


def register_tooltips() -> None:
    """Put TrainConfig's and AugmentConfig's field docs into the one tooltip table.

    The table's hand-written entries win; the docstrings fill in every other field, so a new
    TrainConfig field gets its tooltip from where it is documented.
    """
    table = TOOLTIPS[DOCK]
    for name, text in {**docstring_fields(AugmentConfig),
                       **docstring_fields(TrainConfig)}.items():
        if text:
            table.setdefault(name, text)


def shown_fields() -> tuple[str, ...]:
    """The LOOK fields the installed TrainConfig has."""
    have = {f.name for f in dataclasses.fields(TrainConfig)}
    return tuple(name for name in LOOK if name in have)


def _plain_type(hint: Any) -> Any:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def config_fields(preset: str | None = None) -> list[Field]:
    """The form's rows: kinds and defaults from TrainConfig (``preset`` or its default)."""
    hints = typing.get_type_hints(TrainConfig)
    defaults = TrainConfig() if preset is None else TrainConfig(preset=preset)
    rows = []
    for name in shown_fields():
        look = dict(LOOK[name])
        label = look.pop("label")
        default = DOCK_DEFAULTS.get(name, getattr(defaults, name))
        kind = {int: "int", float: "float", bool: "bool", str: "choice"}[_plain_type(hints[name])]
        choices = CHOICES.get(name, ())
        rows.append(Field(name, label, kind, default, choices=choices, **look))
    return rows


class TrainForm(QWidget):
    """Preset, the generated TrainConfig controls, augmentation toggles and the preview switch.

    Attributes
    ----------
    form : _form.Form
        The generated controls (``form[name]``, ``form.value(name)``, ``form.set_value``).
    preset : QComboBox
        Its default (``default_preset``) is the form's default, e.g. ``core.train.preset_for``.
    augment : dict[str, QCheckBox]
        ``elastic``, ``flips``, ``rot90``..., and ``intensity``.
    preview : QCheckBox
        Live preview of the view while training.
    """

    def __init__(self, preset: str | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        register_tooltips()
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
        have = {f.name for f in dataclasses.fields(TrainConfig)}
        hidden = {k: v for k, v in HIDDEN.items() if k in have}
        return TrainConfig(preset=preset, augment=dataclasses.replace(augment, **changes),
                           **hidden, **self.form.values())

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


__all__ = ["AUGMENT_TOGGLES", "CHOICES", "DOCK_DEFAULTS", "LOOK", "TrainForm", "config_fields",
           "docstring_fields", "register_tooltips", "shown_fields"]
