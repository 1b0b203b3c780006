import pytest
import torch

# One intra-op thread: the tests' nets are tiny, and the training loop's data thread, Qt and
# pytest-xvfb share the two cores of CI; more threads made tiny-net steps up to 35x slower there.
torch.set_num_threads(1)


class _NoProcess:
    """Stands in for the docks' job process: jobs run in the worker thread."""

    ready = busy = False

    def start(self):
        pass

    def stop(self):
        pass

    def close(self):
        pass


@pytest.fixture(autouse=True)
def jobs_in_threads(monkeypatch):
    """Dock tests run their jobs in the worker thread (each would otherwise spawn a process that
    imports torch: seconds of the two cores); tests of the process path use ``job_process``."""
    from napari_unet._widgets import _jobs

    dock = _jobs.DockProcess()
    dock.process = _NoProcess()
    monkeypatch.setattr(_jobs, "_DOCK_PROCESS", dock)


@pytest.fixture
def job_process(monkeypatch):
    """The docks' real job process, started and ready (up to a minute on a busy machine)."""
    import time

    from napari_unet._widgets import _jobs

    dock = _jobs.DockProcess()
    monkeypatch.setattr(_jobs, "_DOCK_PROCESS", dock)
    dock.process.start()
    deadline = time.monotonic() + 120
    while not dock.process.ready:
        assert time.monotonic() < deadline, "the job process did not start"
        time.sleep(0.1)
    yield dock
    dock.process.close()


@pytest.fixture
def unguarded_script(tmp_path):
    """Runs ``body`` as a script without an ``if __name__ == "__main__":`` guard (as most napari
    scripts are), asserts it succeeded and that its top level ran once (in its own process,
    not again in the workers it spawned), and returns its standard output."""
    import subprocess
    import sys

    def run(body: str, path: list[str] = ()) -> str:
        runs = tmp_path / "runs.txt"
        script = (f"import os, sys\nsys.path[:0] = {list(path)!r}\n"
                  f"with open({str(runs)!r}, 'a') as f:\n    f.write(f'{{os.getpid()}}\\n')\n"
                  + body)
        (tmp_path / "unguarded.py").write_text(script)
        out = subprocess.run([sys.executable, str(tmp_path / "unguarded.py")],
                             capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, out.stderr
        assert len(runs.read_text().split()) == 1  # the top level ran once, here
        return out.stdout

    return run
