"""SIGTERM to ``train`` (a cluster's time limit, ``kill``): the run stops at once, saves the
model of its last whole step, and leaves no process behind, also when the signal reaches the
whole process group while the batch workers are still starting.

``NAPARI_UNET_SIGNAL_REPEATS=20 pytest tests/adversarial/test_stop_signals.py -k group`` runs
the process-group case 20 times (2 by default)."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from napari_unet.core.model.checkpoint import load_model
from napari_unet.core.training.fitting import Fitter

from .conftest import cli_in, spawn_cli

REPEATS = int(os.environ.get("NAPARI_UNET_SIGNAL_REPEATS", "2"))
TRAIN = ["train", "--model", "tiny.pt", "--image", "img.tif", "--labels", "lab.tif",
         "--tile", "32", "--batch-size", "1", "--device", "cpu", "--validation-fraction", "0",
         "--no-plots"]



def test_first_sigterm_stops_a_long_step_at_once_and_saves_the_last_whole_one(
        work, capsys, monkeypatch):
    original = Fitter.gradients
    calls, finished = [], []

    def long_third_step(self, *args):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # a step that would take hours from here
            finished.append(1)
        return original(self, *args)

    monkeypatch.setattr(Fitter, "gradients", long_third_step)
    status, out, err = cli_in(work, capsys, *TRAIN, "--workers", "0", "--iterations", "50",
                               "--out", "model.pt")
    assert status == 130, err
    assert finished == []  # interrupted inside the step, not after it
    assert "stopping after this step" not in err
    assert "interrupted at step 2" in out
    assert load_model(work / "model.pt")[1].step == 2


def test_sigterm_while_the_weights_are_written_lets_the_write_end(work, capsys, monkeypatch):
    original = Fitter.apply
    calls = []

    def signalled_apply(self):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # half-way through the optimizer's update
        return original(self)

    monkeypatch.setattr(Fitter, "apply", signalled_apply)
    status, out, err = cli_in(work, capsys, *TRAIN, "--workers", "0", "--iterations", "50",
                               "--average", "0.9", "--out", "model.pt")
    assert status == 130, err
    assert "interrupted at step 3" in out  # the third step's update was completed
    assert load_model(work / "model.pt")[1].step == 3


def session(sid: int) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter():
        try:
            if os.getsid(p.pid) == sid and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except (ProcessLookupError, psutil.Error):
            pass
    return found


def wait_for(predicate, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.mark.slow
@pytest.mark.parametrize("run", range(REPEATS))
def test_sigterm_to_the_group_of_train_with_two_workers_leaves_no_process(work, run):
    proc = spawn_cli(*TRAIN, "--workers", "2", "--iterations", "100000", "--out", "model.pt",
                     cwd=work)
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if line.startswith("training on"):
            break
    # even runs: while the workers start and the first step runs; odd runs: a few steps in
    time.sleep(0.3 * (run % 3) + (1.5 if run % 2 else 0.0))
    workers = [p for p in psutil.Process(proc.pid).children()
               if "spawn_main" in " ".join(p.cmdline())]
    os.killpg(proc.pid, signal.SIGTERM)  # the whole group, as a cluster's time limit does
    try:
        out, err = proc.communicate(timeout=120)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    err = "".join(lines) + err
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err
    if "interrupted at step" not in out:  # before the loop began: nothing trained to save
        # the last words (a signal during the progress bar's own drawing can leave the bar
        # on that line)
        assert err.rstrip().endswith("napari-unet train: interrupted"), err
        assert not (work / "model.pt").exists()
    # the workers were ended and reaped before train exited
    assert not [w for w in workers if w.is_running() and w.status() != psutil.STATUS_ZOMBIE]
    # multiprocessing's resource tracker reads the end of its pipe and exits just after
    left = []
    if not wait_for(lambda: not session(proc.pid), 5):
        left = session(proc.pid)
        for p in left:
            p.kill()
    assert left == [], [(p.pid, p.cmdline()) for p in left]
    if "interrupted at step" in out:
        assert load_model(work / "model.pt")[1].step >= 0
    assert not [p for p in work.iterdir() if p.name.startswith(".")]  # no temporary file
