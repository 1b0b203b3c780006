"""Small frozen event objects yielded by the long jobs (train, predict, batch).

Callers (CLI progress bars, napari workers, tests) iterate the job's generator and render these;
they never reach into the job's state. Arrays in events are small (previews), never whole stacks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Progress:
    """``step`` of ``total`` units of work done.

    ``eta_s`` (seconds left) and ``rate`` (units per second) are filled by jobs that can
    estimate them (training with a time budget or a step count); None where unknown.
    """

    step: int
    total: int
    message: str = ""
    eta_s: float | None = None
    rate: float | None = None


@dataclass(frozen=True)
class LossReport:
    """Training loss of one iteration and the learning rate used."""

    step: int
    loss: float
    lr: float


@dataclass(frozen=True)
class ValidationReport:
    """Metrics on the held-out part (e.g. ``{"loss": .., "iou": ..}``)."""

    step: int
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Preview:
    """Foreground probabilities ``(H, W)`` of the preview region, for live display."""

    step: int
    probabilities: np.ndarray
    region: tuple[slice, ...] | None = None


@dataclass(frozen=True)
class Message:
    """Something the user should know that is not an error (a skipped file, a fallback)."""

    text: str
    level: str = "info"
    data: dict[str, Any] = field(default_factory=dict)
