"""Shared pieces of the adversarial suite: tiny files, a CLI runner, a hard per-case deadline.

The contract every test here checks: the public API raises ValueError/TypeError/OSError with a
message naming the problem; the CLI exits 2 with one line on stderr (130 and one line when
interrupted); no input is changed, no temporary file is left behind, nothing hangs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_unet.cli import main
from napari_unet.core.data.synthetic import synthetic_nuclei
from napari_unet.core.model.checkpoint import save_model
from napari_unet.core.model.unet import UNet

LONG_ENV = "NAPARI_UNET_FUZZ_LONG"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", f"fuzz_long: >= 1000 fuzz cases per target (run with {LONG_ENV}=1)")


def pytest_collection_modifyitems(config, items):
    if os.environ.get(LONG_ENV):
        return
    skip = pytest.mark.skip(reason=f"long fuzz run: set {LONG_ENV}=1")
    for item in items:
        if "fuzz_long" in item.keywords:
            item.add_marker(skip)


class Timeout(BaseException):
    """Raised by :func:`deadline`; a BaseException so no ``except Exception`` swallows it."""


@contextmanager
def deadline(seconds: float):
    """Interrupt the block after ``seconds`` (main thread only: SIGALRM), raising Timeout."""
    if threading.current_thread() is not threading.main_thread():  # pragma: no cover
        yield
        return

    def fire(signum, frame):
        raise Timeout(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (symlinks by target): to prove nothing changed."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_symlink():
            out[str(p.relative_to(folder))] = b"->" + os.readlink(p).encode()
        elif p.is_file():
            out[str(p.relative_to(folder))] = p.read_bytes()
    return out


def leftovers(folder: Path) -> list[str]:
    """What a command left in a temp folder, ignoring torch's own compiler cache folder."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("torchinductor"))


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """Run ``napari-unet argv`` in-process: (status, stdout, stderr); argparse's usage errors
    (SystemExit) count as their exit status, as they would for the console script."""
    try:
        status = main([str(a) for a in argv])
    except SystemExit as exit_:
        status = exit_.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def cli_in(folder: Path, capsys, *argv: str) -> tuple[int, str, str]:
    """:func:`cli` run from ``folder`` (relative outputs land there)."""
    old = os.getcwd()
    os.chdir(folder)
    try:
        return cli(capsys, *argv)
    finally:
        os.chdir(old)


def args(template, work, *extra) -> list[str]:
    """A command line from a template whose "{w}" stands for the work folder."""
    return [str(a).format(w=work) for a in (*template, *extra)]


def assert_one_line_error(status: int, err: str, *needles: str) -> None:
    assert status == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    # tqdm may have drawn a bar before the error; the error itself is the last, single line
    assert lines and "Traceback" not in err, err
    assert lines[-1].startswith("napari-unet"), err
    assert "error:" in lines[-1], err
    for needle in needles:
        assert needle in lines[-1], (needle, lines[-1])


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """A private temp folder for the code under test (TMPDIR and tempfile): leftovers show."""
    folder = tmp_path / "tmpdir"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_net_state():
    torch.manual_seed(0)
    return UNet(1, 2, base_channels=4, depth=2, padding="same")


@pytest.fixture
def work(tmp_path, tiny_net_state):
    """A folder with img.tif, lab.tif (a synthetic pair) and tiny.pt (a depth-2 net)."""
    folder = tmp_path / "work"
    folder.mkdir()
    image, labels = synthetic_nuclei((64, 64), seed=3)[:2]
    tifffile.imwrite(folder / "img.tif", (image * 1000).astype(np.uint16))
    tifffile.imwrite(folder / "lab.tif", labels.astype(np.uint16))
    save_model(folder / "tiny.pt", tiny_net_state)
    return folder


def bomb_tiff(path: Path, height: int = 65536, width: int = 65536) -> Path:
    """A ~250-byte zlib TIFF whose one strip declares ``height`` x ``width`` uint8 pixels."""
    tifffile.imwrite(path, np.zeros((64, 64), np.uint8), compression="zlib", rowsperstrip=64,
                     metadata=None)
    with tifffile.TiffFile(path, mode="r+") as tif:
        page = tif.pages[0]
        page.tags["ImageWidth"].overwrite(width)
        page.tags["ImageLength"].overwrite(height)
        page.tags["RowsPerStrip"].overwrite(height)
    return path


def spawn_cli(*argv: str, cwd: Path) -> subprocess.Popen:
    """``python -m napari_unet.cli argv`` in its own process and process group (for signals:
    ``os.killpg(proc.pid, sig)`` reaches it and its workers, as a cluster's time limit does)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "napari_unet.cli", *map(str, argv)],
                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
