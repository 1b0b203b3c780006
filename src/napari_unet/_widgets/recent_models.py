"""The models to offer first: those trained in this napari session and the model files saved or
opened before (remembered across sessions, the newest ten).

One list per napari process (:func:`recent_models`), kept in the docks' settings file. The Train
dock adds each model it writes, the Predict and Batch docks each model file they run; their model
choice (:class:`.model_choice.ModelChoice`) lists the entries, newest first, and follows
``changed``. An entry whose file is gone is left out.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import NamedTuple

from qtpy.QtCore import QObject, QSettings, Signal

from .settings import settings_path

log = logging.getLogger(__name__)

MAX_RECENT = 10
_GROUP, _KEY = "models", "recent"


class RecentModel(NamedTuple):
    """A model file (or package) with the name the model choice shows for it."""

    path: str
    label: str


class RecentModels(QObject):
    """The remembered models; see the module docstring."""

    changed = Signal()

    def _store(self, writing: bool = False) -> QSettings:
        path = settings_path()
        if writing:
            path.parent.mkdir(parents=True, exist_ok=True)
        return QSettings(str(path), QSettings.Format.IniFormat)

    def _stored(self) -> list[dict[str, str]]:
        text = self._store().value(f"{_GROUP}/{_KEY}")
        try:
            entries = json.loads(str(text)) if text is not None else []
        except ValueError:
            log.info("the remembered model list is not JSON; starting a new one")
            return []
        return [e for e in entries if isinstance(e, dict) and {"path", "label"} <= set(e)]

    def entries(self) -> list[RecentModel]:
        """Newest first, only those whose file (or package folder) is still there."""
        return [RecentModel(str(e["path"]), str(e["label"])) for e in self._stored()
                if Path(str(e["path"])).exists()]

    def add(self, path: str | Path, label: str | None = None) -> RecentModel:
        """Put ``path`` first (once), named ``label`` (default: the file's name and the time)."""
        resolved = str(Path(path).resolve())
        entry = RecentModel(resolved, label or f"{Path(path).name} ({time.strftime('%H:%M')})")
        kept = [e for e in self._stored() if str(Path(str(e["path"])).resolve()) != resolved]
        entries = [entry._asdict(), *kept][:MAX_RECENT]
        store = self._store(writing=True)
        store.setValue(f"{_GROUP}/{_KEY}", json.dumps(entries))
        store.sync()
        self.changed.emit()
        return entry


_shared: list[RecentModels] = []


def recent_models() -> RecentModels:
    """The list every dock of this napari process shares."""
    if not _shared:
        _shared.append(RecentModels())
    return _shared[0]


__all__ = ["MAX_RECENT", "RecentModel", "RecentModels", "recent_models"]
