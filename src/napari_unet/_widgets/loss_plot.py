"""Live training-loss plot for the Train dock: a small matplotlib canvas (qtagg backend).

Points arrive at every training step (hundreds per second for tiny nets), but drawing a
matplotlib figure costs several milliseconds of the GUI thread, so points are only appended to
arrays and a timer redraws at most ``max_fps`` times a second, and only when something changed.
"""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QSizePolicy, QVBoxLayout, QWidget

#: Plotting more points than this per curve only costs time; older ones are thinned out.
MAX_DRAWN_POINTS = 1500


class LossPlot(QWidget):
    """Training loss (raw and smoothed) and validation curve against the iteration.

    Parameters
    ----------
    max_fps : float
        Upper bound on redraws per second.
    smoothing : float
        Weight of the past in the exponential moving average drawn over the raw loss.
    parent : QWidget, optional
        Qt parent.
    """

    def __init__(self, max_fps: float = 3.0, smoothing: float = 0.9,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        if max_fps <= 0:
            raise ValueError(f"max_fps must be > 0, got {max_fps!r}")
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing!r}")
        self.smoothing = smoothing
        self.draw_count = 0
        self._steps: list[int] = []
        self._losses: list[float] = []
        self._smoothed: list[float] = []
        self._val_steps: list[int] = []
        self._val_values: list[float] = []
        self._val_name = "validation loss"
        self._dirty = False

        dark = self.palette().window().color().lightness() < 128
        fg, bg = ("#d0d0d0", "#262930") if dark else ("#202020", "#ffffff")
        self.figure = Figure(figsize=(3.2, 2.0), dpi=100, facecolor=bg)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(160)
        self.canvas.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        # Fixed margins: a layout engine would re-measure all text at every redraw.
        self.figure.subplots_adjust(left=0.17, right=0.97, top=0.92, bottom=0.2)
        ax = self.figure.add_subplot(111)
        ax.set_facecolor(bg)
        for spine in ax.spines.values():
            spine.set_color(fg)
        ax.tick_params(colors=fg, labelsize=7)
        ax.set_xlabel("iteration", color=fg, fontsize=8)
        ax.set_ylabel("loss", color=fg, fontsize=8)
        ax.set_yscale("log")
        (self._raw_line,) = ax.plot([], [], color="#4c9be8", alpha=0.35, lw=0.8)
        (self._smooth_line,) = ax.plot([], [], color="#4c9be8", lw=1.6, label="training")
        (self._val_line,) = ax.plot([], [], "o-", color="#f39c12", ms=3, lw=1.2,
                                    label=self._val_name)
        legend = ax.legend(fontsize=7, loc="upper right", frameon=False)
        for text in legend.get_texts():
            text.set_color(fg)
        self.axes = ax

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.canvas)

        self._timer = QTimer(self)
        self._timer.setInterval(int(round(1000.0 / max_fps)))
        self._timer.timeout.connect(self.redraw)
        self._timer.start()

    # -- data ------------------------------------------------------------------------------
    @property
    def steps(self) -> np.ndarray:
        """Iterations of the training-loss points received so far, ``(n,)``."""
        return np.asarray(self._steps, dtype=np.int64)

    @property
    def losses(self) -> np.ndarray:
        """Raw training losses received so far, ``(n,)``."""
        return np.asarray(self._losses, dtype=np.float64)

    @property
    def validation(self) -> tuple[np.ndarray, np.ndarray]:
        """``(steps, values)`` of the validation curve."""
        return (np.asarray(self._val_steps, dtype=np.int64),
                np.asarray(self._val_values, dtype=np.float64))

    def add_loss(self, step: int, loss: float) -> None:
        """Append one training-loss point (cheap; drawing happens on the timer)."""
        loss = float(loss)
        if not np.isfinite(loss):
            return  # the trainer reports divergence itself; a NaN would blank the axes
        prev = self._smoothed[-1] if self._smoothed else loss
        self._steps.append(int(step))
        self._losses.append(loss)
        self._smoothed.append(self.smoothing * prev + (1.0 - self.smoothing) * loss)
        self._dirty = True

    def add_validation(self, step: int, metrics: dict[str, float]) -> None:
        """Append a validation point: its ``"loss"`` if present, else its first metric."""
        if not metrics:
            return
        name = "loss" if "loss" in metrics else next(iter(metrics))
        value = float(metrics[name])
        if not np.isfinite(value) or value <= 0:
            return  # log axis; metrics such as IoU = 0 cannot be drawn there
        if name != "loss":
            self._val_name = f"validation {name}"
            self._val_line.set_label(self._val_name)
        self._val_steps.append(int(step))
        self._val_values.append(value)
        self._dirty = True

    def clear(self) -> None:
        """Forget all points (a new training run)."""
        for values in (self._steps, self._losses, self._smoothed, self._val_steps,
                       self._val_values):
            values.clear()
        self._dirty = True
        self.redraw()

    # -- drawing ---------------------------------------------------------------------------
    def redraw(self) -> None:
        """Draw now if points arrived since the last draw."""
        if not self._dirty or not self.isVisible():
            return
        self._dirty = False
        steps = np.asarray(self._steps)
        stride = max(1, -(-len(steps) // MAX_DRAWN_POINTS))
        self._raw_line.set_data(steps[::stride], np.asarray(self._losses)[::stride])
        self._smooth_line.set_data(steps[::stride], np.asarray(self._smoothed)[::stride])
        self._val_line.set_data(self._val_steps, self._val_values)
        self.axes.relim()
        self.axes.autoscale_view()
        self.canvas.draw()
        self.draw_count += 1

    def stop(self) -> None:
        """Stop the redraw timer (the dock is closing)."""
        self._timer.stop()
