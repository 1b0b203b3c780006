"""The docks' job process: generators run in the main thread of a spawned process."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from napari_unet.core.runtime.processes import JobProcess


# -- jobs (module level: the process imports this module to unpickle them) ----------------------
def counting(n: int):
    for i in range(n):
        yield (i, os.getpid(), threading.current_thread() is threading.main_thread())


def failing(text: str):
    yield "started"
    raise ValueError(text)


class _Unpicklable(Exception):
    def __init__(self, a, b):  # pickling keeps only args=(message,): unpickling fails
        super().__init__(f"{a}/{b}")


def failing_oddly():
    yield "started"
    raise _Unpicklable("x", "y")


def endless(marker: str):
    try:
        i = 0
        while True:
            yield i
            i += 1
            time.sleep(0.01)
    finally:
        with open(marker, "w") as f:  # the job's clean-up runs in the process on stop
            f.write("closed")


def sleeping():
    yield "started"
    time.sleep(60)
    yield "late"


@pytest.fixture(scope="module")
def process():
    jobs = JobProcess(preload=("numpy",))
    jobs.start()
    deadline = time.monotonic() + 120
    while not jobs.ready:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    yield jobs
    jobs.close()


def test_a_job_runs_in_the_main_thread_of_the_process_and_its_events_come_back_in_order(process):
    events = list(process.run(counting, 5))
    assert [e[0] for e in events] == [0, 1, 2, 3, 4]
    assert {e[1] for e in events} == {process.pid} and process.pid != os.getpid()
    assert all(e[2] for e in events)  # the main thread: glibc keeps its freed memory there
    assert not process.busy
    # the process is kept for the next job
    assert {e[1] for e in process.run(counting, 2)} == {process.pid}


def test_the_jobs_exception_comes_back_with_its_type_and_the_process_traceback(process):
    gen = process.run(failing, "bad threshold")
    assert next(gen) == "started"
    with pytest.raises(ValueError, match="bad threshold") as info:
        next(gen)
    assert any("in the job process" in note and "failing" in note
               for note in info.value.__notes__)
    # an exception that cannot travel becomes a RuntimeError naming it
    with pytest.raises(RuntimeError, match="_Unpicklable: x/y"):
        list(process.run(failing_oddly))
    assert list(process.run(counting, 1))[0][0] == 0  # and the process goes on


def test_stop_closes_the_job_there_and_the_next_job_runs_in_the_same_process(process, tmp_path):
    marker = tmp_path / "closed.txt"
    pid = process.pid
    seen = []
    for event in process.run(endless, str(marker)):
        seen.append(event)
        if len(seen) == 3:
            process.stop()
    # the run ends with the "stopped" message; the job's finally ran in the process
    assert seen[:3] == [0, 1, 2] and len(seen) < 10
    assert marker.read_text() == "closed"
    assert process.pid == pid and [e[0] for e in process.run(counting, 2)] == [0, 1]


def test_a_job_left_early_is_stopped_there(process, tmp_path):
    marker = tmp_path / "closed.txt"
    gen = process.run(endless, str(marker))
    assert next(gen) == 0
    gen.close()  # the consumer went away (a dock's worker thread was stopped)
    assert not process.busy
    # the next job waits for that one to stop, then runs
    assert [e[0] for e in process.run(counting, 2)] == [0, 1]
    assert marker.read_text() == "closed"


def test_arguments_that_cannot_travel_are_refused_before_anything_runs(process):
    with pytest.raises(ValueError, match="cannot run in a separate process"):
        next(process.run(counting, lambda: 3))
    assert not process.busy


def test_the_process_ignores_group_signals_and_a_killed_process_is_reported():
    jobs = JobProcess()
    try:
        gen = jobs.run(sleeping)
        assert next(gen) == "started"
        pid = jobs.pid
        os.kill(pid, signal.SIGINT)  # Ctrl-C in the terminal reaches the whole group
        time.sleep(0.3)
        assert jobs.ready
        os.kill(pid, signal.SIGKILL)  # the out-of-memory killer, say
        with pytest.raises(RuntimeError, match="ended unexpectedly"):
            next(gen)
        # the next job starts a new process
        events = list(jobs.run(counting, 1))
        assert events[0][1] == jobs.pid != pid
    finally:
        jobs.close()
    assert jobs.pid is None


def test_close_ends_the_process_even_in_a_job_and_fork_is_refused():
    jobs = JobProcess()
    gen = jobs.run(sleeping)
    assert next(gen) == "started"
    proc = jobs._proc
    t0 = time.monotonic()
    jobs.close()
    assert not proc.is_alive() and time.monotonic() - t0 < 10
    assert list(gen) == []  # closed on purpose: the job ends quietly, no error
    assert not jobs.busy
    with pytest.raises(ValueError, match="fork is unsafe"):
        JobProcess(start_method="fork")


def test_an_orphaned_process_stops_its_job_and_exits(tmp_path):
    # the parent is killed mid-job (SIGKILL: no clean-up there): the job process closes the
    # job at its next event (its finally runs) and exits instead of working for nobody
    import subprocess
    import sys

    marker = tmp_path / "closed.txt"
    script = (
        "import sys, time\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from napari_unet.core.runtime.processes import JobProcess\n"
        "from test_processes import endless\n"
        "if __name__ == '__main__':\n"
        "    jobs = JobProcess()\n"
        f"    gen = jobs.run(endless, {str(marker)!r})\n"
        "    next(gen)\n"
        "    print(jobs.pid, flush=True)\n"
        "    time.sleep(600)\n"
    )
    (tmp_path / "parent.py").write_text(script)
    parent = subprocess.Popen([sys.executable, str(tmp_path / "parent.py")],
                              stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        parent.kill()
        parent.wait(timeout=10)
        deadline = time.monotonic() + 30
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(child)
        assert marker.read_text() == "closed"
    finally:
        parent.kill()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by init) counts as gone
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ")[-1][0] != "Z"


def test_a_main_script_without_a_guard_is_not_run_again_in_the_process(unguarded_script):
    # most napari scripts have no `if __name__ == "__main__":`; spawn would run them again in
    # the job process (a second viewer); the process runs only importable functions instead
    out = unguarded_script(
        "from napari_unet.core.runtime.processes import JobProcess\n"
        "from test_processes import counting\n"
        "jobs = JobProcess()\n"
        "print([e[0] for e in jobs.run(counting, 3)], flush=True)\n"
        "jobs.close()\n", path=[str(Path(__file__).parent)])
    assert out.strip() == "[0, 1, 2]"
