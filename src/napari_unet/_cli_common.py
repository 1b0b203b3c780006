"""What every ``napari-unet`` command shares: options, model loading, outputs, jobs, signals.

- Options: ``--model``, ``--device`` (spelling checked by ``core.device``), ``--overwrite`` and
  ``--out`` (``--output`` is the same option, the spelling older commands used).
- Models: :func:`load_model` goes through ``core.checkpoint.resolve_model``, the one loader.
- Outputs: :func:`plan` applies the output policy of ``core.outputs`` before any work starts,
  with the message naming ``--overwrite``.
- Jobs: :func:`run_job` drives a job generator with a progress bar on stderr and always
  closes it, so the job's clean-up (worker processes, temporary files) runs on Ctrl-C too.
- Signals: :func:`signals_as_interrupt` makes SIGTERM (a cluster job's time limit, ``kill``)
  and SIGHUP (a closed terminal) behave like Ctrl-C; :class:`GracefulStop` lets a loop finish
  its current step on the first Ctrl-C/SIGTERM (the second one interrupts at once).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

OVERWRITE_HINT = "--overwrite"
# Signals that mean "stop" besides Ctrl-C's SIGINT (SIGHUP does not exist on Windows).
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP")
                     if hasattr(signal, name))


# -- options ---------------------------------------------------------------------------------
def device_name(text: str) -> str:
    """argparse type for ``--device``: the spelling is checked before any work starts."""
    from .core.runtime.device import check_device_name

    return check_device_name(text)


device_name.__name__ = "device"  # argparse names the type in its message: "invalid device value"


def add_model_argument(parser: argparse.ArgumentParser, default: str | None = "default",
                       help: str | None = None) -> None:
    parser.add_argument(
        "--model", default=default, required=default is None,
        help=help or "'default' (the shipped model), a new 'original', 'modified' or 'small' "
                     "net, or a model file")


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", type=device_name,
                        help="auto, cpu, cuda, cuda:N or mps (default: auto)")


def add_overwrite_argument(parser: argparse.ArgumentParser, what: str = "outputs") -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help=f"replace existing {what} (inputs are never replaced)")


def add_out_argument(parser: argparse.ArgumentParser, help: str, metavar: str | None = None,
                     required: bool = True) -> None:
    """``--out`` with ``--output`` as an alias (both spellings land in ``args.out``)."""
    parser.add_argument("--out", "--output", dest="out", required=required, metavar=metavar,
                        help=f"{help} (--output is the same option)")


# -- models and outputs ----------------------------------------------------------------------
def load_model(spec: str, in_channels: int | None = None, num_classes: int | None = None,
               device: str = "cpu") -> tuple[Any, Any]:
    """``(UNet, ModelMeta)`` through the one model loader, ``core.checkpoint.resolve_model``."""
    from .core.model.checkpoint import resolve_model

    return resolve_model(spec, in_channels=in_channels, num_classes=num_classes, device=device)


def model_file(spec: str) -> Path | None:
    """The file behind a ``--model`` value, or None for a name (a preset, ``default``)."""
    from .core.constants import ARCHITECTURES

    if spec in (*ARCHITECTURES, "default"):
        return None
    return Path(spec)


def plan(outputs: Iterable[Any], inputs: Iterable[Any], overwrite: bool,
         need_bytes: int = 0) -> list[Path]:
    """The output policy (``core.outputs.plan_outputs``) with the CLI's wording."""
    from .core.io.outputs import plan_outputs

    return plan_outputs(outputs, inputs, overwrite=overwrite, need_bytes=need_bytes,
                        hint=OVERWRITE_HINT)


def save_figure(fig: Any, path: Path) -> None:
    """Write a matplotlib figure as PNG through a temporary file (outputs planned before)."""
    from .core.io.outputs import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


# -- jobs ------------------------------------------------------------------------------------
def run_job(job: Iterator[Any], desc: str,
            on_event: Callable[[Any], None] | None = None) -> list[Any]:
    """Drive ``job`` with a tqdm bar on stderr; return the events that are not progress or
    messages (e.g. a ``PredictionResult``). ``Progress`` moves the bar, ``Message`` is printed
    as a note, anything else goes to ``on_event`` (if given) and into the returned list.

    The generator is closed on every exit, Ctrl-C included, so its clean-up runs.
    """
    from tqdm import tqdm

    from .core.events import Message, Progress

    results: list[Any] = []
    try:
        with tqdm(desc=desc, unit="step", file=sys.stderr) as bar:
            for event in job:
                if isinstance(event, Progress):
                    bar.total = event.total
                    bar.n = event.step
                    bar.refresh()
                elif isinstance(event, Message):
                    tqdm.write(f"note: {event.text}", file=sys.stderr)
                else:
                    if on_event is not None:
                        on_event(event)
                    results.append(event)
    finally:
        close = getattr(job, "close", None)
        if close is not None:
            close()
    return results


# -- signals ---------------------------------------------------------------------------------
def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def signals_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise ``KeyboardInterrupt`` in the main thread like
    Ctrl-C; the previous handlers are restored afterwards. Outside the main thread
    (where Python cannot install handlers) the block runs unchanged."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, *STOP_SIGNALS)}
    for sig in STOP_SIGNALS:
        signal.signal(sig, _raise_interrupt)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            with suppress(TypeError, ValueError):  # None: set from C, cannot be restored
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


class GracefulStop:
    """Ctrl-C/SIGTERM/SIGHUP asks a loop to stop at its next step instead of interrupting mid-step.

    The first signal sets :attr:`requested` (the loop checks it after each event, so the
    model stays consistent); a second one raises ``KeyboardInterrupt`` at once. Use as a
    context manager; the previous handlers come back on exit.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt(f"signal {signum}")
        self.requested = True
        print("\nstopping after this step (press Ctrl-C again to stop at once)",
              file=sys.stderr)

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, *STOP_SIGNALS):
                self._previous[sig] = signal.getsignal(sig)
                signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            with suppress(TypeError, ValueError):
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()


def one_line(err: BaseException) -> str:
    """An error as one line for stderr (messages with line breaks are joined)."""
    raw = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
    text = " ".join(str(raw).split()) or type(err).__name__
    if isinstance(err, OSError) and err.filename and str(err.filename) not in text:
        text = f"{text}: {err.filename}"
    return text


def debug() -> bool:
    """``NAPARI_UNET_DEBUG=1`` shows tracebacks for errors the CLI otherwise reports in a line."""
    return os.environ.get("NAPARI_UNET_DEBUG", "") not in ("", "0")


__all__ = ["GracefulStop", "add_device_argument", "add_model_argument", "add_out_argument",
           "add_overwrite_argument", "device_name", "load_model", "model_file", "one_line",
           "plan", "run_job", "save_figure", "signals_as_interrupt"]
