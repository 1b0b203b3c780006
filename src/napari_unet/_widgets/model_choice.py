"""A small reusable model picker: the shipped default, a new net of a named variant, or a file.

The widget only describes the choice (:class:`ModelSpec`, a frozen value object); building or
loading the net happens later, in a worker thread, through :meth:`ModelSpec.build`, which
delegates to ``core.checkpoint`` and ``core.model``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qtpy.QtCore import Signal
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
from .tooltips import tooltip

#: Where a model comes from: the shipped model, a new (untrained) net, or a saved file.
SOURCES = ("default", "original", "modified", "small", "file")
NEW_VARIANTS = ("original", "modified", "small")
UPSAMPLINGS = ("transpose", "bilinear")

_SOURCE_TEXT = {
    "default": "Shipped default model",
    "original": "New: original (paper, valid convs)",
    "modified": "New: modified (padded)",
    "small": "New: small (padded, half channels)",
    "file": "Model file...",
}


@dataclass(frozen=True)
class ModelSpec:
    """What the user picked; :meth:`build` turns it into ``(UNet, meta)``.

    Parameters
    ----------
    source : {"default", "original", "modified", "small", "file"}
        The shipped model, a new net of that variant, or a saved model file.
    upsampling : {"transpose", "bilinear"}
        Upsampling of a new net (ignored for loaded models, whose architecture is stored).
    path : str
        The model file when ``source == "file"``.
    overrides : dict
        Extra architecture arguments of a new net (``base_channels``, ``depth``, ...); used by
        tests and benchmarks to get tiny nets, not shown in the GUI.
    """

    source: str = "small"
    upsampling: str = "transpose"
    path: str = ""
    overrides: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"model source must be one of {SOURCES}, got {self.source!r}")
        if self.upsampling not in UPSAMPLINGS:
            raise ValueError(f"upsampling must be one of {UPSAMPLINGS}, got {self.upsampling!r}")
        if self.source == "file":
            if not self.path:
                raise ValueError("choose a model file (or another model source)")
            path = Path(self.path)
            # a model file, a BioImage Model Zoo .zip, or an unpacked package folder (rdf.yaml)
            if not (path.is_file() or (path / "rdf.yaml").is_file()):
                raise ValueError(f"model file {self.path!r} does not exist")

    @property
    def is_new(self) -> bool:
        """True when the net is created untrained (so it must be trained before predicting)."""
        return self.source in NEW_VARIANTS

    def describe(self) -> str:
        """Short human-readable text, e.g. ``"new small (bilinear)"`` or the file name."""
        if self.is_new:
            return f"new {self.source} ({self.upsampling})"
        if self.source == "file":
            return Path(self.path).name
        return "shipped default"

    def build(
        self, in_channels: int, num_classes: int = 2, device: Any = "cpu"
    ) -> tuple[Any, Any]:
        """Create or load the net; slow for big nets, so call it from a worker.

        Parameters
        ----------
        in_channels, num_classes : int
            Channels of the image and classes wanted; a loaded net must match them.
        device : str or torch.device
            Where to put the net.

        Returns
        -------
        (UNet, ModelMeta)
            The net and its metadata (see ``core.checkpoint.resolve_model``).
        """
        from ..core.checkpoint import resolve_model
        from ..core.meta import ModelMeta
        from ..core.model import UNet

        if self.is_new:
            constructor = getattr(UNet, self.source)
            model = constructor(in_channels=in_channels, num_classes=num_classes,
                                upsampling=self.upsampling, **self.overrides)
            return model.to(device), ModelMeta.for_model(model)
        spec = "default" if self.source == "default" else self.path
        return resolve_model(spec, in_channels=in_channels, num_classes=num_classes,
                             device=device)


def default_model_problem() -> str | None:
    """Why the shipped default model cannot be used, or None when it is installed."""
    from ..core.checkpoint import default_model_path

    try:
        default_model_path()
    except ValueError as err:
        return str(err)
    return None


class ModelChoice(QWidget):
    """Model source combo box, an upsampling choice for new nets and a file picker.

    Parameters
    ----------
    allow_new : bool
        Offer new untrained variants (the Train dock); the Predict dock sets it False.
    parent : QWidget, optional
        Qt parent.

    Notes
    -----
    ``changed`` is emitted whenever the choice changes. When the shipped default model is not
    installed, its entry stays visible but disabled, with the reason as tooltip.
    """

    changed = Signal()

    def __init__(self, allow_new: bool = True, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.overrides: dict[str, Any] = {}
        self.source = QComboBox()
        self.source.setObjectName("model_source")
        sources = SOURCES if allow_new else ("default", "file")
        for name in sources:
            self.source.addItem(_SOURCE_TEXT[name], name)
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
        return self.source.currentData()

    def set_source(self, source: str, path: str | None = None) -> None:
        """Select ``source`` (one of :data:`SOURCES`); ``path`` sets the file for ``"file"``."""
        index = self.source.findData(source)
        if index < 0:
            raise ValueError(f"model source {source!r} is not offered here")
        if path is not None:
            self.path.setText(str(path))
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
        set_row_visible(self._form, self.upsampling, source in NEW_VARIANTS)
        set_row_visible(self._form, self._file_row, source == "file")
        self.changed.emit()

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a napari-unet model",
                                              self.path.text(),
                                              "Models (*.pt *.zip);;All files (*)")
        if path:
            self.path.setText(path)

