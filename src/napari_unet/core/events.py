"""Small frozen event objects yielded by the long jobs (train, predict, batch).

Callers (CLI progress bars, napari workers, tests) iterate the job's generator and render these;
they never reach into the job's state. Arrays in events are small (previews), never whole stacks.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
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


# -- a batch of files (core.inference.batch) --------------------------------------------------
@dataclass(frozen=True)
class FileDone:
    """One input finished: ``status`` is ``"done"``, ``"skipped"`` or ``"failed"``."""

    path: Path
    output: Path | None
    status: str
    message: str = ""


@dataclass(frozen=True)
class SliceProgress:
    """``step`` of ``total`` of the file being segmented, and where it is (``message``, e.g.
    "slice 2/24" or "block 3/81")."""

    path: Path
    step: int
    total: int
    message: str = ""


@dataclass(frozen=True)
class BatchSummary:
    """The end of a batch: outputs written, inputs skipped, and ``(path, message)`` failures."""

    done: list[Path]
    skipped: list[Path]
    failed: list[tuple[Path, str]]


# -- driving a sub-job ------------------------------------------------------------------------

#: Progress steps a part of a job (a block of a plane, a slice of a stack) counts for: its
#: sub-job's progress is mapped into them (:func:`within`).
PART_STEPS = 100


def within(gen: Generator[Any, None, Any], start: int, span: int, total: int, message: str
           ) -> Generator[Any, None, Any]:
    """Run a sub-job that is steps ``start`` to ``start + span`` of its caller's ``total``:
    its messages pass on as they are, its progress mapped into that span (so a long part, a
    slice of a stack or a block of a plane, reports in the caller's bar, and a Stop waits for
    its next event, not for the whole part). Returns the sub-job's value."""
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return stop.value
        if isinstance(event, Progress):
            event = Progress(start + span * event.step // max(event.total, 1), total, message)
        yield event


def pass_messages_on(gen: Generator[Any, None, Any], notes: list[str]
                     ) -> Generator[Any, None, Any]:
    """Pass a sub-job's events on, keeping its messages' text in ``notes``; return its
    value."""
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return stop.value
        if isinstance(event, Message):
            notes.append(event.text)
        yield event
