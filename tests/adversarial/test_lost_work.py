"""Lost work: problems with the outputs are found before the work starts; SIGTERM is Ctrl-C.

Signals are sent to real processes (``python -m napari_unet.cli``) where the point is what a
closed terminal or a cluster's time limit does; in-process otherwise.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
import tifffile

from napari_unet.core.io import outputs
from napari_unet.core.model.checkpoint import load_model
from napari_unet.core.training import trainer as train

from .conftest import assert_one_line_error, cli_in, snapshot, spawn_cli

TRAIN = ["train", "--model", "tiny.pt", "--image", "img.tif", "--labels", "lab.tif",
         "--tile", "32", "--batch-size", "1", "--device", "cpu", "--validation-fraction", "0"]


@pytest.fixture
def no_training(monkeypatch):
    """Fail loudly if a test reaches the training loop."""
    def events(self, *a, **k):
        raise AssertionError("training started although the output could not be written")

    monkeypatch.setattr(train.Trainer, "events", events)



def test_unwritable_output_folder_stops_train_before_the_first_step(work, capsys, monkeypatch,
                                                                    no_training):
    locked = work / "locked"
    locked.mkdir()
    real_open = os.open

    def deny(path, flags, mode=0o777, *, dir_fd=None):
        if os.path.dirname(os.fspath(path)) == str(locked) and flags & os.O_CREAT:
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_open(path, flags, mode, dir_fd=dir_fd)

    monkeypatch.setattr(outputs.os, "open", deny)  # root ignores chmod; the kernel's answer
    status, _, err = cli_in(work, capsys, *TRAIN, "--iterations", "5", "--out",
                            locked / "model.pt")
    assert_one_line_error(status, err, "cannot write to folder", str(locked))
    assert list(locked.iterdir()) == []


def test_missing_output_folder_stops_train_before_reading_data(work, capsys, no_training):
    status, _, err = cli_in(work, capsys, *TRAIN, "--out", work / "nowhere" / "model.pt")
    assert_one_line_error(status, err, "does not exist")


def test_full_disk_stops_train_before_the_first_step(work, capsys, monkeypatch, no_training):
    class Usage:
        free = 4096

    monkeypatch.setattr(outputs.shutil, "disk_usage", lambda folder: Usage)
    status, _, err = cli_in(work, capsys, *TRAIN, "--out", work / "model.pt")
    assert_one_line_error(status, err, "not enough disk space", "4.0 KiB free")
    assert not (work / "model.pt").exists()


def test_full_disk_stops_predict_before_predicting(work, capsys, monkeypatch):
    from napari_unet.core.model.unet import UNet

    class Usage:
        free = 10_000  # room for a 64 x 64 label image, not for 2 float maps of it

    def forward(*a, **k):
        raise AssertionError("prediction started although the outputs do not fit on disk")

    monkeypatch.setattr(outputs.shutil, "disk_usage", lambda folder: Usage)
    monkeypatch.setattr(UNet, "lean_forward", forward)
    status, _, err = cli_in(work, capsys, "predict", "--model", "tiny.pt", "--image", "img.tif",
                            "--out", "l.tif", "--probabilities", "p.tif", "--device", "cpu")
    assert_one_line_error(status, err, "not enough disk space", "need 48.0 KiB")
    assert not (work / "l.tif").exists() and not (work / "p.tif").exists()


def _wait_for(predicate, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
def test_sigterm_during_train_saves_a_loadable_model_and_ends_workers(work):
    """A closed terminal or a cluster's time limit: the model trained so far is saved.
    (Ctrl-C takes the same path: both stop the loop between steps through GracefulStop.)"""
    sig = signal.SIGTERM
    proc = spawn_cli(*TRAIN, "--iterations", "100000", "--out", "model.pt", "--no-plots",
                     cwd=work)
    lines = []
    for line in proc.stderr:  # wait until the training loop is about to start
        lines.append(line)
        if line.startswith("training on"):
            break
    time.sleep(3)
    children = psutil.Process(proc.pid).children(recursive=True)
    os.killpg(proc.pid, sig)  # the whole group, workers included, as a cluster's limit does
    try:
        out, err = proc.communicate(timeout=120)
    except Exception:
        proc.kill()
        raise
    err = "".join(lines) + err
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err
    assert "interrupted at step" in out
    model, meta = load_model(work / "model.pt")
    assert meta.step >= 1
    assert _wait_for(lambda: not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE
                                     for c in children), 20), "worker processes outlived train"
    assert not [p for p in work.iterdir() if p.name.startswith(".")]


@pytest.fixture
def many_images(work):
    folder = work / "many"
    folder.mkdir()
    image = tifffile.imread(work / "img.tif")
    for i in range(8):
        tifffile.imwrite(folder / f"im{i:02d}.tif", np.tile(image, (4, 4)))
    return folder


@pytest.mark.slow
def test_sigterm_during_batch_ends_cleanly_and_resumes(work, many_images):
    out = work / "out"
    argv = ["batch", "--model", "tiny.pt", "--input", many_images, "--out", out,
            "--tile", "64", "--device", "cpu"]
    proc = spawn_cli(*argv, cwd=work)
    assert _wait_for(lambda: out.is_dir() and any(p.suffix == ".tif" for p in out.iterdir()),
                     240), proc.communicate(timeout=5)
    proc.send_signal(signal.SIGTERM)
    stdout, err = proc.communicate(timeout=120)
    assert proc.returncode in (130, 0), err  # 0: it finished before the signal came
    assert "Traceback" not in err, err
    if proc.returncode == 130:
        assert err.strip().splitlines()[-1].startswith("interrupted: done")
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temp left
    for p in out.iterdir():
        assert tifffile.imread(p).shape == (256, 256)  # every file there is complete
    status = main_in(work, *argv)
    assert status == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in
                                                           many_images.iterdir())


def main_in(work, *argv):
    from napari_unet.cli import main

    old = os.getcwd()
    os.chdir(work)
    try:
        return main([str(a) for a in argv])
    finally:
        os.chdir(old)


def test_temp_of_a_sigkilled_writer_is_removed_by_the_next_batch(work, capsys):
    out = work / "out"
    out.mkdir()
    script = ("import sys, time\n"
              "from napari_unet.core.io.outputs import atomic_write\n"
              "with atomic_write(sys.argv[1]) as tmp:\n"
              "    open(tmp, 'wb').write(b'half')\n"
              "    print(tmp, flush=True)\n"
              "    time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", script, str(out / "img.tif")],
                            stdout=subprocess.PIPE, text=True)
    tmp = proc.stdout.readline().strip()
    assert not outputs.is_stale_temp(tmp)  # its writer is alive: not stale
    proc.kill()
    proc.wait(timeout=30)
    assert os.path.exists(tmp) and outputs.is_stale_temp(tmp)
    status, _, err = cli_in(work, capsys, "batch", "--model", "tiny.pt", "--input", "img.tif",
                            "--out", "out", "--tile", "64", "--device", "cpu")
    assert status == 0, err
    assert f"removed {os.path.basename(tmp)}" in err
    assert sorted(p.name for p in out.iterdir()) == ["img.tif"]


@pytest.mark.parametrize("command", ["predict", "eval", "batch"])
def test_sigterm_in_process_is_an_interrupt_with_one_line(work, capsys, monkeypatch, command):
    """SIGTERM raised in the middle of prediction: status 130, one line, no outputs, no temps."""
    from napari_unet.core.model.unet import UNet

    def killed(*a, **k):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler interrupts the sleep
        raise AssertionError("SIGTERM did not interrupt")

    monkeypatch.setattr(UNet, "lean_forward", killed)  # every prediction runs the net
    before = snapshot(work)
    handler = signal.getsignal(signal.SIGTERM)
    argv = {
        "predict": ["predict", "--model", "tiny.pt", "--image", "img.tif", "--out", "l.tif",
                    "--tile", "64", "--device", "cpu"],
        "eval": ["eval", "--model", "tiny.pt", "--image", "img.tif", "--labels", "lab.tif",
                 "--json", "s.json", "--tile", "64", "--device", "cpu"],
        "batch": ["batch", "--model", "tiny.pt", "--input", "img.tif", "--out", "out",
                  "--tile", "64", "--device", "cpu"],
    }[command]
    status, _, err = cli_in(work, capsys, *argv)
    assert signal.getsignal(signal.SIGTERM) == handler  # restored after the command
    assert status == 130, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].split(":")[0] in (f"napari-unet {command}",
                                                          "interrupted")
    after = snapshot(work)
    assert {k: v for k, v in after.items() if k in before} == before
    assert not [k for k in after if k not in before and not k.startswith("out")]
    assert not [k for k in after if os.path.basename(k).startswith(".")]
