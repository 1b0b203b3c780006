"""The Train dock's Run box, and how a running training shows in it.

:class:`RunPanel` holds Start/Stop, the progress bar and the status line (``_form.RunBlock``),
the trainer's notes, what was saved last, the Save/Export buttons and the loss plot, and renders
the events of a run (the dock hands them on). Each event only appends to the loss plot or
remembers the last progress: the bar, the status line and the plot are repainted together, at
most every :data:`REFRESH_EVERY_S` and with each preview (:meth:`RunPanel.refresh`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from ..core.events import LossReport, Message, Progress, ValidationReport
from ._form import RunBlock
from ._jobs import JobRunner, notify_warning
from .loss_plot import LossPlot
from .tooltips import tooltip

log = logging.getLogger(__name__)

#: The progress bar, status line and loss plot are repainted together, at most this often and
#: with each preview: under software OpenGL (remote desktops, virtual machines) every repaint of
#: a dock re-composes the whole window with napari's GL canvas, 30-50 ms of the GUI thread on
#: the 2-core test machine; one repaint per step (progress bar, plot, status, each on its own)
#: stalled the viewer ~1.5 times a second (benchmarks/bench_gui_latency.py).
REFRESH_EVERY_S = 2.0


def format_duration(seconds: float) -> str:
    """``"42 s"``, ``"3:05"`` (min:s) or ``"1:02:03"`` (h:min:s)."""
    s = int(round(max(0.0, seconds)))
    if s < 60:
        return f"{s} s"
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def progress_text(event: Progress, loss: float | None = None) -> str:
    """The status line while training: step, steps/s, time left, last loss."""
    parts = [f"step {event.step} / {event.total}"]
    if event.rate:
        parts.append(f"{event.rate:.2g} steps/s" if event.rate < 10 else
                     f"{event.rate:.0f} steps/s")
    if event.eta_s is not None:
        parts.append(f"{format_duration(event.eta_s)} left")
    if loss is not None:
        parts.append(f"loss {loss:.3g}")
    return " · ".join(parts)


def start_text(model: str, config: Any, annotated_pixels: int) -> str:
    """The status line when a run starts: the model, its limits, the annotated pixels."""
    budget = getattr(config, "minutes", None)
    steps = f"{config.iterations} steps" if config.iterations is not None else None
    limit = " or ".join(t for t in (f"{budget:g} min" if budget else None, steps) if t)
    return f"starting: {model}, {limit}, {annotated_pixels} annotated pixels"


def _say(label: QLabel, text: str) -> None:
    """Set a note line; an empty one takes no room in the dock."""
    label.setText(text)
    label.setVisible(bool(text))


def napari_is_dark(viewer: Any) -> bool | None:
    """Whether the viewer's napari theme is dark (None when it cannot tell)."""
    try:
        from napari.utils.theme import get_theme

        theme = viewer.theme
        if theme == "system":
            from napari.utils.theme import get_system_theme

            theme = get_system_theme()
        r, g, b = get_theme(theme).background.as_rgb_tuple()[:3]
    except (AttributeError, ValueError, KeyError, ImportError):
        return None
    return (r + g + b) / 3 < 128


def _note() -> QLabel:
    label = QLabel("")
    label.setWordWrap(True)
    label.setVisible(False)
    return label


def _button(text: str, name: str, on_click: Callable[[], None]) -> QPushButton:
    button = QPushButton(text)
    button.setObjectName(name)
    button.setToolTip(tooltip("train", name))
    button.clicked.connect(lambda *_: on_click())
    return button


class RunPanel(QWidget):
    """The Run box of the Train dock (see the module docstring).

    Parameters
    ----------
    on_save, on_export : callable
        Called by the "Save model..." and "Export to Model Zoo..." buttons.
    dark : bool, optional
        Dark colours for the loss plot (napari's theme); None: guess.
    """

    def __init__(self, on_save: Callable[[], None], on_export: Callable[[], None],
                 dark: bool | None = None, parent: QWidget | None = None,
                 on_predict: Callable[[], None] | None = None) -> None:
        super().__init__(parent)
        self.block = RunBlock("Start", "train")
        self.status_label = self.block.status
        self.status_label.setText("idle")
        self.note_label = _note()
        self.saved_label = _note()
        self.save_button = _button("Save model...", "save", on_save)
        self.export_button = _button("Export to Model Zoo...", "export", on_export)
        self.predict_button = _button("Predict with this model", "predict_with",
                                      on_predict or (lambda: None))
        self.predict_button.setEnabled(False)  # once a model is saved
        # the saved file's path can be selected and copied
        self.saved_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        # no timer of its own: repainted with the rest of the dock (:meth:`refresh`)
        self.loss_plot = LossPlot(max_fps=None, dark=dark)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for widget in (self.block, self.note_label, self.saved_label):
            layout.addWidget(widget)
        row = QHBoxLayout()
        row.addWidget(self.save_button)
        row.addWidget(self.export_button)
        layout.addLayout(row)
        layout.addWidget(self.predict_button)
        layout.addWidget(self.loss_plot)
        self.jobs: JobRunner | None = None
        self._last_loss: float | None = None
        self._last_refresh = 0.0
        self._progress: Progress | None = None

    def runner(self, on_event: Callable[[Any], None], on_finished: Callable[[str], None],
               controls: Iterable[Any]) -> JobRunner:
        """The dock's JobRunner: this panel's Stop button and progress bar; the bar is repainted
        by :meth:`refresh`."""
        # the dock's own bar shows steps/s and the time left; napari's activity spinner
        # would cost the GUI thread while training (see _jobs.JobRunner)
        self.jobs = self.block.runner(on_event, on_finished, controls=controls,
                                      label="U-Net training", activity=False,
                                      deferred_bar=True)
        self.block.stop_button.clicked.connect(
            lambda *_: self.status_label.setText("stopping after the current step..."))
        return self.jobs

    def begin(self, total: int | None, status: str) -> None:
        """Clear what the last run showed; a run of (about) ``total`` steps starts."""
        _say(self.saved_label, "")
        _say(self.note_label, "")
        self.loss_plot.clear()
        self._last_loss, self._progress, self._last_refresh = None, None, 0.0
        self.loss_plot.set_total(total)
        self.status_label.setText(status)

    def add_event(self, event: Any) -> None:
        """Take one event of the run (GUI thread; short): losses, progress, validation, notes."""
        if isinstance(event, LossReport):
            self.loss_plot.add_loss(event.step, event.loss)
            self._last_loss = event.loss
        elif isinstance(event, Progress):
            # With a time budget the total is an estimate that settles as the rate does: the
            # plot's x axis follows it in coarse moves (each one is a full redraw).
            shown = self.loss_plot.total
            if shown is None or abs(event.total - shown) > 0.25 * shown:
                self.loss_plot.set_total(event.total)
            self._progress = event
            if (time.monotonic() - self._last_refresh >= REFRESH_EVERY_S
                    or event.step >= event.total):
                self.refresh()
        elif isinstance(event, ValidationReport):
            self.loss_plot.add_validation(event.step, event.metrics)
        elif isinstance(event, Message):
            # Notes of the trainer (budget reached, which weights are kept): in the dock, not
            # a toast each; warnings are toasts.
            log.info("napari-unet training: %s", event.text)
            if event.level == "warning":
                notify_warning(event.text)
            else:
                _say(self.note_label, event.text)

    def refresh(self) -> None:
        """Repaint the run's progress at once: bar, status line (steps/s, time left), plot."""
        self._last_refresh = time.monotonic()
        if self.jobs is not None:
            self.jobs.flush_progress()
        if self._progress is not None:
            self.status_label.setText(progress_text(self._progress, self._last_loss))
        self.loss_plot.redraw()

    def show_saved(self, step: int, best: bool, name: str) -> None:
        """Say which step the saved model holds, and in which file (its whole path)."""
        what = "best validation score" if best else "last step"
        _say(self.saved_label, f"saved model: step {step} ({what}) in {name}")
        self.predict_button.setEnabled(True)

    def enable_saving(self, enabled: bool) -> None:
        self.save_button.setEnabled(enabled)
        self.export_button.setEnabled(enabled)


__all__ = ["REFRESH_EVERY_S", "RunPanel", "format_duration", "napari_is_dark", "progress_text",
           "start_text"]
