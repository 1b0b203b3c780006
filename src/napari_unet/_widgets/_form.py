"""Form pieces shared by the docks: controls built from a table, and the run/stop block.

Public API
----------
``Field(name, label, kind, default, minimum=None, maximum=None, step=None, decimals=2,
none_text=None, choices=(), text=None)``
    One row of a form. ``kind`` is ``"int"``, ``"float"``, ``"bool"``, ``"choice"`` or
    ``"text"``. ``name`` is the control's Qt object name, its key in the tooltip table
    (``tooltips.TOOLTIPS[dock][name]``) and in the saved settings. For numbers, ``none_text``
    (e.g. ``"auto"``) makes the minimum mean None: the spin box shows that text there and
    :meth:`Form.value` returns None. ``choices`` are ``(text, value)`` pairs (or plain values).
    ``text`` is a check box's own text (its row then has no label).
``Form(fields, dock)``
    Builds the controls (tooltips from the table of ``dock``) into ``form.layout``, a
    QFormLayout. ``form[name]`` is the widget; ``value(name)`` / ``set_value(name, v)``,
    ``values()`` / ``set_values(d)`` (unknown names ignored), ``defaults()``, ``add_row(label,
    widget)`` for hand-made rows, ``add_beside(name, widget)`` puts a widget (a button) to the
    right of a control, ``on_change(callback)`` connects every control's change signal.
``control_value(widget)`` / ``set_control_value(widget, value)``
    Read/write a plain Qt control (spin boxes, check box, combo box, line edit) as a Python value.
``change_signal(widget)``
    The signal a plain Qt control emits when the user changes it.
``RunBlock(run_text, dock, parent=None)``
    The block the Predict and Batch docks repeat: Run + Stop buttons, a progress bar and a status
    line (``run_button``, ``stop_button``, ``progress``, ``status``). ``runner(on_event,
    on_finished, controls, label)`` returns a ``_jobs.JobRunner`` wired to the Stop button and
    the progress bar (and napari's activity panel); ``say(text)`` sets the status line.
``ask_yes_no(parent, text) -> bool``
    The default confirmation (a modal Yes/No box, No by default). Docks keep it in an attribute
    ``confirm(text) -> bool`` that tests replace.
``with_browse(edit, on_browse, name)``
    A line edit with a "Browse..." button next to it (the button's object name is ``name``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractSpinBox,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from superqt import QCollapsible

from ._jobs import JobRunner
from .tooltips import tooltip

KINDS = ("int", "float", "bool", "choice", "text")
_NONE_PROPERTY = "napari_unet_none_at_minimum"


@dataclass(frozen=True)
class Field:
    """One control of a form; see the module docstring."""

    name: str
    label: str
    kind: str
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    decimals: int = 2
    none_text: str | None = None
    choices: tuple[Any, ...] = ()
    text: str | None = None
    help: str | None = None
    advanced: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"field {self.name!r}: kind must be one of {KINDS}, got "
                             f"{self.kind!r}")
        if self.kind == "choice" and not self.choices:
            raise ValueError(f"field {self.name!r}: a choice needs choices")


def _choice_pairs(choices: Iterable[Any]) -> list[tuple[str, Any]]:
    return [c if isinstance(c, tuple) else (str(c), c) for c in choices]


# A combo box item's data cannot be None (Qt reads it as "no data"): None is stored as this.
_NONE_DATA = "napari_unet_none"


def setting_fields(cls: type, defaults: Mapping[str, Any] | None = None,
                   exclude: Iterable[str] = ()) -> list[Field]:
    """The rows of every setting of ``cls`` declared for the docks (``core.settings``), in
    declaration order: label, help, range, choices and advanced from the declaration; the
    default is the declared dock default, else ``defaults`` (e.g. a preset's), else the
    field's."""
    from ..core.settings import settings_of

    rows, skip = [], set(exclude)
    for item in settings_of(cls):
        s = item.setting
        if not s.dock or item.name in skip:
            continue
        default = (defaults or {}).get(item.name, item.default)
        if s.dock_default is not s.UNSET:
            default = s.dock_default
        label = f"{s.label} ({s.unit})" if s.unit else s.label
        rows.append(Field(item.name, label, s.kind, default, minimum=s.minimum,
                          maximum=s.maximum, step=s.step, decimals=s.decimals,
                          none_text=s.none_text,
                          choices=tuple((text, value) for value, text in s.choices),
                          text=label if s.kind == "bool" else None, help=s.help,
                          advanced=s.advanced))
    return rows


def make_control(field: Field) -> QWidget:
    """The Qt control of ``field``, set to its default (no tooltip, no layout)."""
    widget: QWidget
    if field.kind in ("int", "float"):
        widget = QSpinBox() if field.kind == "int" else QDoubleSpinBox()
        if field.kind == "float":
            widget.setDecimals(field.decimals)
        low = field.minimum if field.minimum is not None else 0
        high = field.maximum if field.maximum is not None else 1_000_000
        cast = int if field.kind == "int" else float
        widget.setRange(cast(low), cast(high))
        if field.step is not None:
            widget.setSingleStep(cast(field.step))
        if field.none_text is not None:
            widget.setSpecialValueText(field.none_text)
            widget.setProperty(_NONE_PROPERTY, True)
        widget.setKeyboardTracking(False)  # one change per edit, not per typed digit
    elif field.kind == "bool":
        widget = QCheckBox(field.text or field.label)
    elif field.kind == "choice":
        widget = QComboBox()
        for text, value in _choice_pairs(field.choices):
            widget.addItem(text, _NONE_DATA if value is None else value)
    else:
        widget = QLineEdit()
    widget.setObjectName(field.name)
    set_control_value(widget, field.default)
    return widget


def control_value(widget: QWidget) -> Any:
    """The value of a plain Qt control (None for a spin box at its "none" minimum)."""
    if isinstance(widget, QAbstractSpinBox):
        value = widget.value()
        if widget.property(_NONE_PROPERTY) and value == widget.minimum():
            return None
        return value
    if isinstance(widget, QCheckBox):
        return widget.isChecked()
    if isinstance(widget, QComboBox):
        data = widget.currentData()
        if isinstance(data, str) and data == _NONE_DATA:
            return None
        return widget.currentText() if data is None else data
    if isinstance(widget, QLineEdit):
        return widget.text()
    raise TypeError(f"no value for a {type(widget).__name__}")


def set_control_value(widget: QWidget, value: Any) -> None:
    """Set a plain Qt control; ``ValueError``/``TypeError`` when ``value`` does not fit it."""
    if isinstance(widget, QAbstractSpinBox):
        if value is None:
            if not widget.property(_NONE_PROPERTY):
                raise ValueError(f"{widget.objectName()!r} needs a number")
            widget.setValue(widget.minimum())
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{widget.objectName()!r} needs a number, got {value!r}")
        if not widget.minimum() <= value <= widget.maximum():
            raise ValueError(f"{widget.objectName()!r}: {value} is out of range")
        widget.setValue(int(value) if isinstance(widget, QSpinBox) else float(value))
    elif isinstance(widget, QCheckBox):
        if not isinstance(value, bool):
            raise TypeError(f"{widget.objectName()!r} needs True or False, got {value!r}")
        widget.setChecked(value)
    elif isinstance(widget, QComboBox):
        index = _find_data(widget, _NONE_DATA if value is None else value)
        if index < 0:
            index = widget.findText(str(value))
        if index < 0:
            raise ValueError(f"{widget.objectName()!r} offers no {value!r}")
        widget.setCurrentIndex(index)
    elif isinstance(widget, QLineEdit):
        if not isinstance(value, str):
            raise TypeError(f"{widget.objectName()!r} needs text, got {value!r}")
        widget.setText(value)
    else:
        raise TypeError(f"cannot set a {type(widget).__name__}")


def _find_data(widget: QComboBox, value: Any) -> int:
    """The item whose data is ``value`` of the same type (Qt's findData takes True for 1)."""
    for index in range(widget.count()):
        data = widget.itemData(index)
        if type(data) is type(value) and data == value:
            return index
    return -1


def change_signal(widget: QWidget) -> Any:
    """The signal a plain Qt control emits when its value changes."""
    if isinstance(widget, QAbstractSpinBox):
        return widget.valueChanged
    if isinstance(widget, QCheckBox):
        return widget.toggled
    if isinstance(widget, QComboBox):
        return widget.currentIndexChanged
    if isinstance(widget, QLineEdit):
        return widget.textChanged
    raise TypeError(f"no change signal for a {type(widget).__name__}")


class Form:
    """Controls built from a table of :class:`Field` rows; see the module docstring."""

    def __init__(self, fields: Sequence[Field], dock: str) -> None:
        self.dock = dock
        self.fields = {f.name: f for f in fields}
        if len(self.fields) != len(fields):
            raise ValueError("field names of a form must be distinct")
        self.layout = QFormLayout()
        # advanced settings are folded away (a laptop screen holds the main ones)
        self.advanced_box: QCollapsible | None = None
        self.advanced_layout: QFormLayout | None = None
        self.widgets: dict[str, QWidget] = {}
        for field in fields:
            widget = make_control(field)
            widget.setToolTip(field.help or tooltip(dock, field.name))
            self.widgets[field.name] = widget
            self.add_row(None if field.kind == "bool" else field.label, widget,
                         advanced=field.advanced)

    def _advanced(self) -> QFormLayout:
        if self.advanced_layout is None:
            self.advanced_box = QCollapsible("advanced settings")
            self.advanced_box.setObjectName("advanced_settings")
            toggle = self.advanced_box.toggleButton()
            toggle.setObjectName("advanced_settings")
            toggle.setToolTip(tooltip(self.dock, "advanced_settings"))
            inner = QWidget()
            self.advanced_layout = QFormLayout(inner)
            self.advanced_layout.setContentsMargins(0, 0, 0, 0)
            self.advanced_box.addWidget(inner)
            self.layout.addRow(self.advanced_box)
        return self.advanced_layout

    def _layout_of(self, widget: QWidget) -> QFormLayout:
        row, _ = self.layout.getWidgetPosition(widget)
        return self.layout if row >= 0 or self.advanced_layout is None else self.advanced_layout

    def __getitem__(self, name: str) -> QWidget:
        return self.widgets[name]

    def add_row(self, label: str | None, widget: QWidget, advanced: bool = False) -> None:
        """A row of the main part (before the folded advanced settings) or of the advanced
        part (e.g. a spin box with a button next to it, made by hand)."""
        if advanced:
            layout = self._advanced()
            layout.addRow(label, widget) if label else layout.addRow(widget)
            return
        row = self.layout.rowCount()
        if self.advanced_box is not None:
            row, _ = self.layout.getWidgetPosition(self.advanced_box)
        if label:
            self.layout.insertRow(row, label, widget)
        else:
            self.layout.insertRow(row, widget)

    def add_beside(self, name: str, widget: QWidget) -> None:
        """Put ``widget`` (e.g. an "Estimate" button) to the right of control ``name``."""
        control = self.widgets[name]
        layout = self._layout_of(control)
        row, _ = layout.getWidgetPosition(control)
        taken = layout.takeRow(row)  # removes the row, keeps its widgets
        label = taken.labelItem.widget() if taken.labelItem is not None else None
        box = QWidget()
        line = QHBoxLayout(box)
        line.setContentsMargins(0, 0, 0, 0)
        line.addWidget(control, 1)
        line.addWidget(widget)
        if label is not None:
            layout.insertRow(row, label, box)
        else:
            layout.insertRow(row, box)

    def value(self, name: str) -> Any:
        return control_value(self.widgets[name])

    def set_value(self, name: str, value: Any) -> None:
        set_control_value(self.widgets[name], value)

    def values(self) -> dict[str, Any]:
        return {name: self.value(name) for name in self.widgets}

    def set_values(self, values: Mapping[str, Any]) -> None:
        for name, value in values.items():
            if name in self.widgets:
                self.set_value(name, value)

    def defaults(self) -> dict[str, Any]:
        return {name: field.default for name, field in self.fields.items()}

    def on_change(self, callback: Callable[..., Any]) -> None:
        for widget in self.widgets.values():
            change_signal(widget).connect(lambda *_: callback())

    def set_row_visible(self, name: str, visible: bool) -> None:
        widget = self.widgets[name]
        set_row_visible(self._layout_of(widget), widget, visible)


def set_row_visible(form: QFormLayout, field_widget: QWidget, visible: bool) -> None:
    """Hide or show a form row (QFormLayout.setRowVisible needs Qt >= 6.4)."""
    field_widget.setVisible(visible)
    label = form.labelForField(field_widget)
    if label is not None:
        label.setVisible(visible)


def ask_yes_no(parent: QWidget | None, text: str) -> bool:
    """A modal Yes/No question, No by default; True for Yes."""
    answer = QMessageBox.question(parent, "napari-unet", text,
                                  QMessageBox.Yes | QMessageBox.No, QMessageBox.No)
    return answer == QMessageBox.Yes


def with_browse(edit: QLineEdit, on_browse: Callable[[], Any], name: str,
                tip: str = "") -> QWidget:
    """``edit`` with a "Browse..." button (object name ``name``) to its right."""
    box = QWidget()
    row = QHBoxLayout(box)
    row.setContentsMargins(0, 0, 0, 0)
    row.addWidget(edit)
    button = QPushButton("Browse...")
    button.setObjectName(name)
    if tip:
        button.setToolTip(tip)
    button.clicked.connect(lambda *_: on_browse())
    row.addWidget(button)
    return box


class RunBlock(QWidget):
    """Run + Stop buttons, a progress bar and a status line; see the module docstring."""

    def __init__(self, run_text: str, dock: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.run_button = QPushButton(run_text)
        self.run_button.setObjectName("run")
        self.run_button.setToolTip(tooltip(dock, "run"))
        self.stop_button = QPushButton("Stop")
        self.stop_button.setObjectName("stop")
        self.stop_button.setToolTip(tooltip(dock, "stop"))
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        row.addWidget(self.run_button)
        row.addWidget(self.stop_button)
        layout.addLayout(row)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)

    def runner(self, on_event: Callable[[Any], None], on_finished: Callable[[str], None],
               controls: Iterable[Any], label: str, activity: bool = True,
               deferred_bar: bool = False) -> JobRunner:
        """A JobRunner whose Stop button and progress bar are this block's (``activity``: also
        an entry in napari's activity panel; ``deferred_bar``: see :class:`JobRunner`)."""
        runner = JobRunner(on_event, on_finished, [self.run_button, *controls],
                           self.stop_button, label=label, progress_bar=self.progress,
                           activity=activity, deferred_bar=deferred_bar)
        self.stop_button.clicked.connect(lambda *_: runner.stop())
        return runner

    def say(self, text: str) -> None:
        self.status.setText(text)

    def clear(self) -> None:
        """Forget the last run: an empty status line and bar (a new attempt starts clean, even
        when its input is refused)."""
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status.setText("")


__all__ = ["Field", "Form", "RunBlock", "ask_yes_no", "change_signal", "control_value",
           "make_control", "set_control_value", "set_row_visible", "setting_fields", "with_browse"]
