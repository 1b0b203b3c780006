"""Live training-loss plot for the Train dock, painted with QPainter.

Points arrive at every training step; the plot lives in the GUI thread, which must never stall
while training runs. A matplotlib canvas cost 100-300 ms of the GUI thread per full draw on a
2-core laptop (text layout of the tick labels), and any repaint of the dock (a progress-bar
update) asked for one: that was the largest source of viewer hitches while training
(docs/performance.md, "GUI latency while training"). Here a paint is a handful of polylines
and at most a dozen short labels (about a millisecond), so:

- points are only appended to lists; a timer asks Qt for a repaint at most ``max_fps`` times a
  second, and only when something changed;
- the axes limits move in coarse steps (x: the run's total iterations, or doubling; y: whole
  decades of the log axis), so the axes stay readable while the curves grow;
- at most :data:`MAX_DRAWN_POINTS` points per curve are drawn (older ones thinned out).
"""

from __future__ import annotations

import math

import numpy as np
from qtpy.QtCore import QPointF, QRectF, QTimer
from qtpy.QtGui import QColor, QFont, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget

#: Plotting more points than this per curve only costs time; older ones are thinned out.
MAX_DRAWN_POINTS = 1500
#: Initial loss axis: wide enough for the usual cross-entropy/Dice values, so that a training
#: run rarely needs to widen the y axis.
DEFAULT_YLIM = (0.01, 10.0)
#: Runs up to this many iterations get their whole x range at once.
FIXED_X_UP_TO = 5000
#: Curve colours: training loss (raw drawn translucent, smoothed solid) and validation.
TRAIN_COLOUR = "#4c9be8"
VALIDATION_COLOUR = "#f39c12"
# Plot margins in pixels (left for the loss labels, bottom for the iteration labels).
MARGINS = (44, 8, 10, 30)  # left, top, right, bottom



def step_ticks(end: float, most: int = 5) -> list[int]:
    """Tick values for a step axis from 0 to ``end``: whole numbers 1, 2 or 5 x 10^k apart,
    at most ``most`` of them (19.25 / 38.5 steps mean nothing to a person)."""
    if end <= 0:
        return [0]
    spacing = next(s for s in _round_numbers() if end / s <= most - 1)
    return list(range(0, int(end) + 1, spacing))


def _round_numbers():
    k = 1
    while True:
        yield from (k, 2 * k, 5 * k)
        k *= 10

class LossPlot(QWidget):
    """Training loss (raw and smoothed) and validation curve against the iteration.

    Parameters
    ----------
    max_fps : float or None
        Upper bound on repaints per second (a timer repaints when points arrived); None: no
        timer, the owner calls :meth:`redraw` (the Train dock, in step with its other repaints).
    smoothing : float
        Weight of the past in the exponential moving average drawn over the raw loss.
    dark : bool, optional
        Dark colours (napari's dark theme); None: guess from the widget's palette, which
        napari's style sheet may not have reached yet.
    parent : QWidget, optional
        Qt parent.
    """

    def __init__(self, max_fps: float | None = 3.0, smoothing: float = 0.9,
                 dark: bool | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        if max_fps is not None and max_fps <= 0:
            raise ValueError(f"max_fps must be > 0, got {max_fps!r}")
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing!r}")
        self.smoothing = smoothing
        self.draw_count = 0
        self.paint_count = 0
        self._steps: list[int] = []
        self._losses: list[float] = []
        self._smoothed: list[float] = []
        self._val_steps: list[int] = []
        self._val_values: list[float] = []
        self._val_name = "validation loss"
        self._dirty = False
        self._total: int | None = None
        self._xmax = 100.0
        self._ylim = DEFAULT_YLIM

        if dark is None:
            dark = self.palette().window().color().lightness() < 128
        self._fg, self._bg = ((QColor("#d0d0d0"), QColor("#262930")) if dark
                              else (QColor("#202020"), QColor("#ffffff")))
        self._font = QFont(self.font())
        self._font.setPointSizeF(7.5)
        self.setMinimumHeight(160)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

        self._timer = QTimer(self)
        self._timer.timeout.connect(self.redraw)
        if max_fps is not None:
            self._timer.setInterval(int(round(1000.0 / max_fps)))
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
    def smoothed(self) -> np.ndarray:
        """The exponential moving average drawn over the raw losses, ``(n,)``."""
        return np.asarray(self._smoothed, dtype=np.float64)

    @property
    def validation(self) -> tuple[np.ndarray, np.ndarray]:
        """``(steps, values)`` of the validation curve."""
        return (np.asarray(self._val_steps, dtype=np.int64),
                np.asarray(self._val_values, dtype=np.float64))

    @property
    def validation_name(self) -> str:
        """Legend text of the validation curve (``"validation loss"`` or the metric's name)."""
        return self._val_name

    @property
    def limits(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """``((x0, x1), (y0, y1))`` of the axes as last drawn."""
        return (0.0, self._xmax), self._ylim

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
        """Ask for a repaint if points arrived since the last one (the timer calls this)."""
        if not self._dirty or not self.isVisible():
            return
        self._dirty = False
        self._update_limits()
        self.update()
        self.draw_count += 1

    def _update_limits(self) -> None:
        """Move the limits in coarse steps: the whole run, or doubling; whole decades."""
        last = self._steps[-1] if self._steps else 0
        if self._total and self._total <= FIXED_X_UP_TO and last <= self._total:
            x1 = float(self._total)
        else:
            x1 = 100.0
            while x1 < last:
                x1 *= 2  # doubling: the axis moves a handful of times in a whole run
        values = [v for v in self._losses + self._val_values if v > 0]  # log axis
        y0, y1 = DEFAULT_YLIM
        if values:  # widen by whole decades only when a value falls outside
            y0 = min(y0, 10.0 ** math.floor(math.log10(min(values))))
            y1 = max(y1, 10.0 ** math.ceil(math.log10(max(values))))
        self._xmax, self._ylim = x1, (y0, y1)

    def _frame(self) -> QRectF:
        left, top, right, bottom = MARGINS
        return QRectF(left, top, max(1, self.width() - left - right),
                      max(1, self.height() - top - bottom))

    def _polygon(self, frame: QRectF, xs: np.ndarray, ys: np.ndarray) -> QPolygonF:
        """Data -> widget coordinates (linear x, log y), clipped to the frame by the painter."""
        lo, hi = (math.log10(v) for v in self._ylim)
        px = frame.left() + frame.width() * np.asarray(xs, np.float64) / self._xmax
        # a loss of exactly 0 sits on the bottom edge of the log axis (clipped there)
        py = frame.bottom() - frame.height() * (
            np.log10(np.maximum(ys, self._ylim[0])) - lo) / (hi - lo)
        return QPolygonF([QPointF(float(x), float(y)) for x, y in zip(px, py, strict=True)])

    def paintEvent(self, _event: object) -> None:  # noqa: N802 - Qt's name
        painter = QPainter(self)
        try:
            self._paint(painter)
        finally:
            painter.end()
        self.paint_count += 1

    def _paint(self, p: QPainter) -> None:
        p.fillRect(self.rect(), self._bg)
        p.setFont(self._font)
        frame = self._frame()
        p.setPen(QPen(self._fg, 1))
        p.drawRect(frame)
        metrics = p.fontMetrics()
        # y: one tick per decade
        lo, hi = (round(math.log10(v)) for v in self._ylim)
        for e in range(lo, hi + 1):
            y = frame.bottom() - frame.height() * (e - lo) / max(hi - lo, 1)
            p.drawLine(QPointF(frame.left() - 3, y), QPointF(frame.left(), y))
            text = f"{10.0 ** e:g}"
            p.drawText(QPointF(frame.left() - 5 - metrics.horizontalAdvance(text),
                               y + metrics.ascent() / 2 - 1), text)
        # x: whole steps at a round spacing
        for value in step_ticks(self._xmax):
            x = frame.left() + frame.width() * value / self._xmax
            p.drawLine(QPointF(x, frame.bottom()), QPointF(x, frame.bottom() + 3))
            text = f"{value:d}"
            p.drawText(QPointF(x - metrics.horizontalAdvance(text) / 2,
                               frame.bottom() + 4 + metrics.ascent()), text)
        p.drawText(QPointF(frame.center().x() - metrics.horizontalAdvance("iteration") / 2,
                           self.height() - 3), "iteration")
        p.save()
        p.translate(10, frame.center().y() + metrics.horizontalAdvance("loss") / 2)
        p.rotate(-90)
        p.drawText(QPointF(0, 0), "loss")
        p.restore()

        p.setClipRect(frame)
        p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        steps = np.asarray(self._steps)
        stride = max(1, -(-len(steps) // MAX_DRAWN_POINTS))
        if len(steps):
            raw = QColor(TRAIN_COLOUR)
            raw.setAlphaF(0.35)
            p.setPen(QPen(raw, 0.8))
            p.drawPolyline(self._polygon(frame, steps[::stride],
                                         np.asarray(self._losses)[::stride]))
            p.setPen(QPen(QColor(TRAIN_COLOUR), 1.6))
            p.drawPolyline(self._polygon(frame, steps[::stride],
                                         np.asarray(self._smoothed)[::stride]))
        if self._val_steps:
            colour = QColor(VALIDATION_COLOUR)
            p.setPen(QPen(colour, 1.2))
            points = self._polygon(frame, np.asarray(self._val_steps),
                                   np.asarray(self._val_values))
            p.drawPolyline(points)
            p.setBrush(colour)
            for point in points:
                p.drawEllipse(point, 2.0, 2.0)
        p.setClipping(False)
        self._paint_legend(p, frame)

    def _paint_legend(self, p: QPainter, frame: QRectF) -> None:
        metrics = p.fontMetrics()
        entries = [("training", QColor(TRAIN_COLOUR))]
        if self._val_steps:
            entries.append((self._val_name, QColor(VALIDATION_COLOUR)))
        y = frame.top() + metrics.height()
        for text, colour in entries:
            x = frame.right() - 6 - metrics.horizontalAdvance(text)
            p.setPen(QPen(colour, 1.6))
            p.drawLine(QPointF(x - 18, y - metrics.ascent() / 2 + 1),
                       QPointF(x - 4, y - metrics.ascent() / 2 + 1))
            p.setPen(QPen(self._fg, 1))
            p.drawText(QPointF(x, y), text)
            y += metrics.height()

    def stop(self) -> None:
        """Stop the redraw timer (the dock is closing)."""
        self._timer.stop()


__all__ = ["DEFAULT_YLIM", "FIXED_X_UP_TO", "LossPlot", "MAX_DRAWN_POINTS"]
