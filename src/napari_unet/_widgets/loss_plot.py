"""Live training-loss plot for the Train dock: a small matplotlib canvas (qtagg backend).

Points arrive at every training step (hundreds per second for tiny nets), but drawing a
matplotlib figure costs milliseconds to (on a busy machine) hundreds of milliseconds of the GUI
thread, so:

- points are only appended to lists; a timer redraws at most ``max_fps`` times a second, and
  only when something changed;
- the axes limits move in coarse steps (x: the run's total iterations, or doubling; y: whole
  decades of the log axis), so most redraws *blit*: restore the cached axes background, draw
  the three lines, copy that rectangle to the screen. A full draw (ticks, labels) happens only
  when a limit changes or the widget is resized;
- tick labels are plain text (no mathtext).
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QSizePolicy, QVBoxLayout, QWidget

#: Plotting more points than this per curve only costs time; older ones are thinned out.
MAX_DRAWN_POINTS = 1500
#: Initial loss axis: wide enough for the usual cross-entropy/Dice values, so that a training
#: run rarely needs a full redraw for the y axis.
DEFAULT_YLIM = (0.01, 10.0)
#: Runs up to this many iterations get their whole x range at once (no redraws for x).
FIXED_X_UP_TO = 5000


class LossPlot(QWidget):
    """Training loss (raw and smoothed) and validation curve against the iteration.

    Parameters
    ----------
    max_fps : float
        Upper bound on redraws per second.
    smoothing : float
        Weight of the past in the exponential moving average drawn over the raw loss.
    dark : bool, optional
        Dark colours (napari's dark theme); None: guess from the widget's palette, which
        napari's style sheet may not have reached yet.
    parent : QWidget, optional
        Qt parent.
    """

    def __init__(self, max_fps: float = 3.0, smoothing: float = 0.9,
                 dark: bool | None = None, parent: QWidget | None = None) -> None:
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

        if dark is None:
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
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlim(0, 100)
        ax.set_ylim(*DEFAULT_YLIM)
        # Animated lines are left out of full draws and drawn on the cached background.
        (self._raw_line,) = ax.plot([], [], color="#4c9be8", alpha=0.35, lw=0.8,
                                    animated=True)
        (self._smooth_line,) = ax.plot([], [], color="#4c9be8", lw=1.6, label="training",
                                       animated=True)
        (self._val_line,) = ax.plot([], [], "o-", color="#f39c12", ms=3, lw=1.2,
                                    label=self._val_name, animated=True)
        self._background = None
        self._total: int | None = None
        legend = ax.legend(fontsize=7, loc="upper right", frameon=False)
        for text in legend.get_texts():
            text.set_color(fg)
        self.axes = ax

        self.canvas.mpl_connect("draw_event", self._on_full_draw)
        self.full_draw_count = 0

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

    @property
    def total(self) -> int | None:
        """The run length the x axis stops at (None: it grows by doubling)."""
        return self._total

    def set_total(self, iterations: int | None) -> None:
        """Let the x axis stop growing at ``iterations`` (the run's length)."""
        self._total = int(iterations) if iterations else None
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
        """Draw now if points arrived since the last draw (blitting when the axes are still)."""
        if not self._dirty or not self.isVisible():
            return
        self._dirty = False
        steps = np.asarray(self._steps)
        stride = max(1, -(-len(steps) // MAX_DRAWN_POINTS))
        self._raw_line.set_data(steps[::stride], np.asarray(self._losses)[::stride])
        self._smooth_line.set_data(steps[::stride], np.asarray(self._smoothed)[::stride])
        self._val_line.set_data(self._val_steps, self._val_values)
        if self._update_limits() or self._background is None:
            self.canvas.draw()  # _on_full_draw caches the background and draws the lines
        else:
            self.canvas.restore_region(self._background)
            self._draw_lines()
            self.canvas.blit(self.axes.bbox)
        self.draw_count += 1

    def _update_limits(self) -> bool:
        """Move the limits in coarse steps; True when they changed (a full draw is needed)."""
        ax = self.axes
        last = self._steps[-1] if self._steps else 0
        if self._total and self._total <= FIXED_X_UP_TO and last <= self._total:
            x1 = float(self._total)
        else:
            x1 = 100.0
            while x1 < last:
                x1 *= 2  # doubling: a handful of full draws for a whole run
        values = self._losses + self._val_values
        y0, y1 = DEFAULT_YLIM
        if values:  # widen by whole decades only when a value falls outside
            y0 = min(y0, 10.0 ** math.floor(math.log10(min(values))))
            y1 = max(y1, 10.0 ** math.ceil(math.log10(max(values))))
        changed = (x1, y0, y1) != (ax.get_xlim()[1], *ax.get_ylim())
        if changed:
            ax.set_xlim(0, x1)
            ax.set_ylim(y0, y1)
        return changed

    def _draw_lines(self) -> None:
        for line in (self._raw_line, self._smooth_line, self._val_line):
            self.axes.draw_artist(line)

    def _on_full_draw(self, _event: object) -> None:
        self._background = self.canvas.copy_from_bbox(self.axes.bbox)
        self._draw_lines()
        self.full_draw_count += 1

    def stop(self) -> None:
        """Stop the redraw timer (the dock is closing)."""
        self._timer.stop()
