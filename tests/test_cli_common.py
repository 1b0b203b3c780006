"""The CLI's shared pieces: signals, the job runner, one-line errors, option spellings."""

from __future__ import annotations

import argparse
import errno
import os
import signal
import time

import pytest

from napari_unet._cli_common import (
    GracefulStop,
    add_out_argument,
    one_line,
    run_job,
    signals_as_interrupt,
)
from napari_unet.core.events import Message, Progress


def test_sigterm_is_ctrl_c_inside_and_handlers_come_back():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    for sig in (signal.SIGTERM, signal.SIGHUP):  # kill / a cluster's time limit; a closed terminal
        with pytest.raises(KeyboardInterrupt), signals_as_interrupt():
            os.kill(os.getpid(), sig)
            time.sleep(5)  # the handler interrupts the sleep
            raise AssertionError(f"{sig!r} did not interrupt")
        assert {s: signal.getsignal(s) for s in before} == before


def test_graceful_stop_first_signal_asks_second_interrupts(capsys):
    before = signal.getsignal(signal.SIGTERM)
    with GracefulStop() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            raise AssertionError("second signal did not interrupt")
    assert signal.getsignal(signal.SIGTERM) == before
    assert "stopping after this step" in capsys.readouterr().err


def test_run_job_returns_results_and_closes_the_generator_on_interrupt(capsys):
    closed = []

    def job(interrupt):
        try:
            yield Progress(1, 2)
            yield Message("hello")
            if interrupt:
                raise KeyboardInterrupt
            yield "result"
        finally:
            closed.append(True)

    assert run_job(job(False), "x") == ["result"]
    assert "note: hello" in capsys.readouterr().err
    with pytest.raises(KeyboardInterrupt):
        run_job(job(True), "x")
    seen = []

    def endless():
        try:
            while True:
                yield "event"
        finally:
            closed.append("endless")

    def stop(event):
        seen.append(event)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_job(endless(), "x", on_event=stop)
    assert closed == [True, True, "endless"] and seen == ["event"]


def test_one_line_errors():
    assert one_line(ValueError("a\n  b")) == "a b"
    assert one_line(PermissionError(errno.EACCES, "cannot write to folder 'x'")) == \
        "cannot write to folder 'x'"
    assert one_line(FileNotFoundError(errno.ENOENT, "No such file", "/a/b")) == \
        "No such file: /a/b"
    assert one_line(ValueError()) == "ValueError"


def test_out_alias_and_device_spelling():
    from napari_unet._cli_settings import add_setting_options
    from napari_unet.core.inference.config import PredictConfig

    parser = argparse.ArgumentParser(exit_on_error=False)
    add_out_argument(parser, "where")
    add_setting_options(parser, PredictConfig)
    assert parser.parse_args(["--output", "a"]).out == "a"
    assert parser.parse_args(["--out", "b", "--device", "cuda:1"]).device == "cuda:1"
    with pytest.raises(argparse.ArgumentError, match=r"--device: device must be one of .*'gpu'"):
        parser.parse_args(["--out", "b", "--device", "gpu"])


@pytest.mark.parametrize("command", ["predict", "batch", "train", "eval", "export"])
def test_no_command_reads_a_prefix_as_a_longer_option(command, capsys):
    # argparse's prefix matching read "--channel 1" as "--channel-axis 1": every parser refuses
    # an abbreviation instead
    from napari_unet.cli import build_parser

    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices[command]
    required = [arg for a in sub._actions if a.required for arg in (a.option_strings[0], "x")]
    optional = next(o for a in sub._actions if not a.required for o in a.option_strings
                    if o.startswith("--") and o != "--help")
    with pytest.raises(SystemExit) as stop:
        parser.parse_args([command, *required, optional[:-1]])
    assert stop.value.code == 2
    assert f"unrecognized arguments: {optional[:-1]}" in capsys.readouterr().err


def test_the_description_names_every_command():
    from napari_unet.cli import COMMANDS, build_parser

    description = build_parser().description
    assert all(name in description for name in COMMANDS)
