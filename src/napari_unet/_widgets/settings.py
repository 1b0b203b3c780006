"""Dock settings that survive a restart of napari, with "reset to defaults".

Public API
----------
``DockSettings(dock, form=None, extras=None)``
    Remembers the controls of ``form`` (a ``_form.Form``: saved on every change) and of
    ``extras``, a mapping ``name -> Binding(get, set, default)`` for anything else (the model
    picker, magicgui widgets, generated forms); connect their change signals to ``save``.
    ``restore()`` applies the stored values (call it once the controls exist; a stored value
    that no longer fits, e.g. a removed choice, is skipped and the default kept) and returns the
    names restored; ``save()`` stores the current values; ``reset()`` puts every control back to
    its default and forgets the stored values; ``reset_button()`` is a "Reset to defaults"
    button (object name ``reset_settings``) wired to ``reset``.
``Binding(get, set, default)``
    How to read and write one remembered value (plain JSON values: numbers, text, booleans,
    lists, dicts, None).
``NEVER_REMEMBERED``
    Names that are never stored whatever a dock passes ("overwrite": replacing files must be
    chosen anew each session).
``settings_path() -> Path``
    The INI file: ``$NAPARI_UNET_SETTINGS`` when set (tests point it to a temporary file), else
    ``napari-unet/docks.ini`` in the user's configuration folder.

Values are stored in one INI file through ``QSettings``, one group per dock, each value as JSON
text (so types survive the INI format).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from qtpy.QtCore import QSettings, QStandardPaths
from qtpy.QtWidgets import QPushButton

from .tooltips import tooltip

log = logging.getLogger(__name__)

ENV_VAR = "NAPARI_UNET_SETTINGS"
NEVER_REMEMBERED = frozenset({"overwrite"})


class Binding(NamedTuple):
    """Read (``get()``) and write (``set(value)``) one remembered value; ``default``."""

    get: Callable[[], Any]
    set: Callable[[Any], None]
    default: Any


def settings_path() -> Path:
    """Where the dock settings live (see the module docstring)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    base = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.GenericConfigLocation)
    return Path(base or Path.home() / ".config") / "napari-unet" / "docks.ini"


class DockSettings:
    """Remembered settings of one dock; see the module docstring."""

    def __init__(self, dock: str, form: Any = None,
                 extras: Mapping[str, Binding] | None = None) -> None:
        self.dock = dock
        self.bindings: dict[str, Binding] = {}
        if form is not None:
            for name in form.widgets:
                self.bindings[name] = Binding(
                    (lambda n=name: form.value(n)), (lambda v, n=name: form.set_value(n, v)),
                    form.fields[name].default)
        for name, binding in (extras or {}).items():
            self.bindings[name] = Binding(*binding)
        self._quiet = False
        if form is not None:
            form.on_change(self.save)

    def _store(self, writing: bool = False) -> QSettings:
        path = settings_path()
        if writing:  # reading a missing file is fine; only a write creates the folder
            path.parent.mkdir(parents=True, exist_ok=True)
        return QSettings(str(path), QSettings.Format.IniFormat)

    @property
    def remembered(self) -> list[str]:
        return [name for name in self.bindings if name not in NEVER_REMEMBERED]

    def save(self) -> None:
        """Store the current values (not while restoring or resetting)."""
        if self._quiet:
            return
        store = self._store(writing=True)
        store.beginGroup(self.dock)
        for name in self.remembered:
            try:
                store.setValue(name, json.dumps(self.bindings[name].get()))
            except (TypeError, ValueError) as err:  # a value that is not plain JSON
                log.debug("setting %s/%s not saved: %s", self.dock, name, err)
        store.endGroup()
        store.sync()

    def stored(self) -> dict[str, Any]:
        """The stored values of this dock (for tests and for debugging)."""
        store = self._store()
        store.beginGroup(self.dock)
        out = {}
        for name in store.childKeys():
            try:
                out[name] = json.loads(str(store.value(name)))
            except ValueError:
                log.debug("setting %s/%s is not JSON; ignored", self.dock, name)
        store.endGroup()
        return out

    def restore(self) -> list[str]:
        """Apply the stored values; returns the names restored."""
        restored = []
        self._quiet = True
        try:
            for name, value in self.stored().items():
                if name not in self.bindings or name in NEVER_REMEMBERED:
                    continue
                try:
                    self.bindings[name].set(value)
                except (TypeError, ValueError) as err:  # a choice that is gone, a bad type
                    log.info("setting %s/%s=%r not restored: %s", self.dock, name, value, err)
                    continue
                restored.append(name)
        finally:
            self._quiet = False
        return restored

    def reset(self) -> None:
        """Every control back to its default; the stored values are forgotten."""
        self._quiet = True
        try:
            for binding in self.bindings.values():
                binding.set(binding.default)
        finally:
            self._quiet = False
        store = self._store(writing=True)
        store.remove(self.dock)
        store.sync()

    def reset_button(self) -> QPushButton:
        button = QPushButton("Reset to defaults")
        button.setObjectName("reset_settings")
        button.setToolTip(tooltip(self.dock, "reset_settings"))
        button.clicked.connect(lambda *_: self.reset())
        return button


__all__ = ["NEVER_REMEMBERED", "Binding", "DockSettings", "settings_path"]
