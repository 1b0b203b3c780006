"""A small reusable model picker: the shipped default, a new net of a named variant, or a file.

The widget only describes the choice (:class:`.model_spec.ModelSpec`, a frozen value object
without Qt); building or loading the net happens later, in a worker thread or the docks' job
process, through :meth:`ModelSpec.build`, which delegates to ``core.model.checkpoint`` and
``core.model``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QWidget,
)

from ._form import set_row_visible
from .model_spec import NEW_VARIANTS, SOURCES, UPSAMPLINGS, ModelSpec, default_model_problem
from .recent_models import recent_models
from .tooltips import tooltip

_SOURCE_TEXT = {
    "default": "Shipped default model",
    "original": "New: original (paper, valid convs)",
    "modified": "New: modified (padded)",
    "small": "New: small (padded, half channels)",
    "file": "Model file...",
}


_RECENT = "recent:"


def remember_file(spec: ModelSpec) -> None:
    """A model file a dock runs is offered first next time (:mod:`.recent_models`)."""
    if spec.source == "file" and spec.path:
        recent_models().add(spec.path)


def _recent_path(data: Any) -> str | None:
    """The path of a remembered model's item data, None for the other entries."""
    return data[len(_RECENT):] if isinstance(data, str) and data.startswith(_RECENT) else None


class ModelChoice(QWidget):
    """Model source combo box, an upsampling choice for new nets and a file picker.

    Parameters
    ----------
    allow_new : bool
        Offer new untrained variants (the Train dock); the Predict dock sets it False.
    offer_recent : bool, optional
        List the models trained and opened lately (:mod:`.recent_models`); by default where
        no new nets are offered (the Predict and Batch docks).
    parent : QWidget, optional
        Qt parent.

    Notes
    -----
    ``changed`` is emitted whenever the choice changes. When the shipped default model is not
    installed, its entry stays visible but disabled, with the reason as tooltip.
    """

    changed = Signal()

    def __init__(self, allow_new: bool = True, parent: QWidget | None = None,
                 offer_recent: bool | None = None) -> None:
        super().__init__(parent)
        self.overrides: dict[str, Any] = {}
        self.source = QComboBox()
        self.source.setObjectName("model_source")
        sources = SOURCES if allow_new else ("default", "file")
        for name in sources:
            self.source.addItem(_SOURCE_TEXT[name], name)
        # the models trained and opened lately, between the shipped one and "Model file..."
        self.offer_recent = (not allow_new) if offer_recent is None else offer_recent
        if self.offer_recent:
            self._fill_recent()
            recent_models().changed.connect(self._fill_recent)
        self.upsampling = QComboBox()
        self.upsampling.setObjectName("model_upsampling")
        self.upsampling.addItems(UPSAMPLINGS)
        self.path = QLineEdit()
        self.path.setObjectName("model_path")
        self.path.setPlaceholderText("path/to/model.pt")
        self.browse = QPushButton("Browse...")
        self.browse.setObjectName("model_browse")
        self.browse.clicked.connect(self._browse)
        for widget in (self.source, self.upsampling, self.path, self.browse):
            widget.setToolTip(tooltip("model", widget.objectName()))

        file_row = QWidget()
        row = QHBoxLayout(file_row)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.path)
        row.addWidget(self.browse)
        self._file_row = file_row

        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("model", self.source)
        form.addRow("upsampling", self.upsampling)
        form.addRow("file", file_row)
        self._form = form

        self.default_problem = self.refresh_default()
        start = "default" if self.default_problem is None else (
            "small" if allow_new else "file")
        self.set_source(start)

        self.source.currentIndexChanged.connect(self._on_source)
        self.upsampling.currentIndexChanged.connect(lambda *_: self.changed.emit())
        self.path.textChanged.connect(lambda *_: self.changed.emit())
        self._on_source()

    # -- public ----------------------------------------------------------------------------
    def refresh_default(self) -> str | None:
        """Enable or disable the default entry depending on whether the model is installed."""
        problem = default_model_problem()
        index = self.source.findData("default")
        item = self.source.model().item(index)
        item.setEnabled(problem is None)
        item.setToolTip(problem or "the model shipped with napari-unet")
        if problem is not None:
            item.setText(_SOURCE_TEXT["default"] + " (not installed)")
        return problem

    def current_source(self) -> str:
        """One of :data:`SOURCES`: a remembered model is a ``"file"``."""
        data = self.source.currentData()
        return "file" if _recent_path(data) is not None else data

    def set_source(self, source: str, path: str | None = None) -> None:
        """Select ``source`` (one of :data:`SOURCES`); ``path`` sets the file for ``"file"``
        (the remembered model of that file, when there is one)."""
        index = self.source.findData(source)
        if index < 0:
            raise ValueError(f"model source {source!r} is not offered here")
        if path is not None:
            self.path.setText(str(path))
            remembered = self._recent_index(str(path)) if source == "file" else -1
            index = remembered if remembered >= 0 else index
        self.source.setCurrentIndex(index)
        self._on_source()

    def spec(self) -> ModelSpec:
        """The current choice; ``ValueError`` with a clear message when it is incomplete."""
        source = self.current_source()
        if source == "default" and self.default_problem is not None:
            raise ValueError(self.default_problem)
        return ModelSpec(source=source, upsampling=self.upsampling.currentText(),
                         path=self.path.text().strip(), overrides=dict(self.overrides))

    def state(self) -> dict[str, str]:
        """The choice as plain values (remembered between sessions by ``settings``)."""
        return {"source": self.current_source(), "upsampling": self.upsampling.currentText(),
                "path": self.path.text()}

    def set_state(self, state: dict[str, str]) -> None:
        """Restore :meth:`state`; ``ValueError`` for a source not offered here (nothing set)."""
        if not isinstance(state, dict):
            raise TypeError(f"a model choice state is a dict, got {type(state).__name__}")
        source = state.get("source", "default")
        if self.source.findData(source) < 0:
            raise ValueError(f"model source {source!r} is not offered here")
        upsampling = state.get("upsampling", UPSAMPLINGS[0])
        if upsampling in UPSAMPLINGS:
            self.upsampling.setCurrentText(upsampling)
        self.set_source(source, str(state.get("path", "")))

    # -- private ---------------------------------------------------------------------------
    def _on_source(self, *_: Any) -> None:
        source = self.current_source()
        remembered = _recent_path(self.source.currentData())
        if remembered is not None:
            self.path.setText(remembered)
        set_row_visible(self._form, self.upsampling, source in NEW_VARIANTS)
        set_row_visible(self._form, self._file_row, source == "file" and remembered is None)
        self.changed.emit()

    def _recent_index(self, path: str) -> int:
        wanted = str(Path(path).resolve())
        for index in range(self.source.count()):
            if _recent_path(self.source.itemData(index)) == wanted:
                return index
        return -1

    def _fill_recent(self) -> None:
        """(Re)list the remembered models, keeping the current choice."""
        current = self.source.currentData()
        self.source.blockSignals(True)
        try:
            for index in reversed(range(self.source.count())):
                if _recent_path(self.source.itemData(index)) is not None:
                    self.source.removeItem(index)
            at = self.source.findData("default") + 1
            for offset, entry in enumerate(recent_models().entries()):
                self.source.insertItem(at + offset, entry.label, _RECENT + entry.path)
                self.source.setItemData(at + offset, entry.path, Qt.ItemDataRole.ToolTipRole)
            index = self.source.findData(current)
            self.source.setCurrentIndex(index if index >= 0 else self.source.findData("file"))
        finally:
            self.source.blockSignals(False)

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a napari-unet model",
                                              self.path.text(),
                                              "Models (*.pt *.zip);;All files (*)")
        if path:
            self.path.setText(path)

