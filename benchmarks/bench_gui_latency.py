"""Does the viewer stay responsive while the Train dock trains at its DEFAULT settings?

    xvfb-run -a python benchmarks/bench_gui_latency.py [--runs 3] [--seconds 20]

What a user gets: the dock as it opens (its default model, normally the shipped one, with the
recipe the dock picks for it; batch preparation in worker processes; live preview and loss
plot on), on a 512 x 512 synthetic image with its left half painted (sparse convention). A
10 ms QTimer probe in the GUI thread records how late each tick fires (the event-loop stall),
from 2 s after Start (building the net, the first texture upload) for ``--seconds``. Each run
is a fresh dock on the same viewer; an idle phase (no training) comes first, side by side.

Target (issue 11): p99 < 30 ms and max < 100 ms in at least 2 of 3 runs. Before each run the
dock sits open for 5 s (a user sets it up; the dock imports torch's compiler stack in the
background then) and those stalls are printed too. The script also times
the dock's GUI-thread handlers (events, preview, loss-plot redraw, labels push) and Python's
full garbage collections (the dock freezes the heap during a run to keep them short), to tell
which one a stall came from, and prints the load average: on a shared machine it matters.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time

import numpy as np

PROBE_MS = 10
WARMUP_S = 2.0
OPEN_S = 5.0  # between opening the dock and pressing Start
TARGET_P99_MS = 30.0
TARGET_MAX_MS = 100.0


def stalls_ms(ticks: list[float], since: float) -> np.ndarray:
    """Lateness of each probe tick after ``since`` (ms), i.e. the gap minus the period."""
    t = np.asarray(ticks)
    gaps = np.diff(t)[t[1:] >= since]
    return np.maximum(gaps * 1000.0 - PROBE_MS, 0.0)


def summary(name: str, stalls: np.ndarray) -> str:
    if stalls.size == 0:
        return f"{name:<12} no ticks"
    return (f"{name:<12} ticks {stalls.size:5d}  p50 {np.percentile(stalls, 50):6.1f} ms  "
            f"p99 {np.percentile(stalls, 99):6.1f} ms  max {stalls.max():6.1f} ms")


def draw_summary(draws: list[tuple[float, float]], ticks: list[float], since: float) -> str:
    """Canvas draws after ``since`` and how many of the probe's stalls > 30 ms overlap one."""
    mine = [(a, b) for a, b in draws if a >= since]
    t = np.asarray(ticks)
    late = [(t[i], t[i + 1]) for i in range(len(t) - 1)
            if t[i + 1] >= since and (t[i + 1] - t[i]) * 1000 - PROBE_MS > TARGET_P99_MS]
    explained = sum(any(a < t1 and b > t0 for a, b in mine) for t0, t1 in late)
    ms = [(b - a) * 1000 for a, b in mine]
    return (f"canvas draws {len(mine)} (median {np.median(ms) if ms else 0:.1f} ms, max "
            f"{max(ms) if ms else 0:.1f} ms); stalls > {TARGET_P99_MS:.0f} ms: {len(late)}, "
            f"{explained} during a draw")


def met(stalls: np.ndarray) -> bool:
    return bool(stalls.size and np.percentile(stalls, 99) < TARGET_P99_MS
                and stalls.max() < TARGET_MAX_MS)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="training runs (fresh dock each)")
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="measured seconds per run, after the 2 s warm-up")
    parser.add_argument("--idle-seconds", type=float, default=8.0,
                        help="length of the idle phase")
    parser.add_argument("--size", type=int, default=512, help="image side in pixels")
    args = parser.parse_args()

    os.environ.setdefault("NAPARI_UNET_SESSION_DIR", tempfile.mkdtemp(prefix="unet-bench-"))
    # A settings file of its own: the dock's defaults, not whatever a user last chose.
    os.environ["NAPARI_UNET_SETTINGS"] = os.path.join(tempfile.mkdtemp(prefix="unet-bench-"),
                                                      "docks.ini")
    import napari
    import torch
    from qtpy.QtCore import Qt, QTimer
    from qtpy.QtWidgets import QApplication

    from napari_unet._widgets.train import TrainWidget
    from napari_unet.core.data.synthetic import synthetic_nuclei

    image, instances = synthetic_nuclei((args.size, args.size), seed=3)
    labels = np.where(instances > 0, instances + 1, 1).astype(np.int32)
    labels[:, args.size // 2:] = 0  # left half annotated (sparse convention)

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1400, 900)
    viewer.add_image(image, name="cells")
    viewer.add_labels(labels, name="training", metadata={"napari_unet_convention": "sparse"})
    app = QApplication.instance()

    # every canvas draw (start, end): the stalls it explains
    draws: list[tuple[float, float]] = []
    scene = viewer.window._qt_viewer.canvas._scene_canvas
    draw_start: list[float] = []
    scene.events.draw.connect(lambda e: draw_start.append(time.perf_counter()), position="first")
    scene.events.draw.connect(lambda e: draws.append((draw_start.pop(), time.perf_counter()))
                              if draw_start else None, position="last")

    # every full (generation 2) garbage collection (start, end): it holds the GIL throughout
    full_gcs: list[tuple[float, float]] = []
    gc_start: list[float] = []

    def on_gc(phase: str, info: dict) -> None:
        if info["generation"] == 2:
            if phase == "start":
                gc_start.append(time.perf_counter())
            elif gc_start:
                full_gcs.append((gc_start.pop(), time.perf_counter()))

    gc.callbacks.append(on_gc)

    ticks: list[float] = []
    probe = QTimer()
    probe.setTimerType(Qt.TimerType.PreciseTimer)
    probe.setInterval(PROBE_MS)
    probe.timeout.connect(lambda: ticks.append(time.perf_counter()))

    def run_for(seconds: float) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            app.processEvents()
            time.sleep(0.001)

    def measure(seconds: float) -> tuple[np.ndarray, float, list[float]]:
        """Stalls after the warm-up; also the start time and the ticks, for other windows."""
        ticks.clear()
        t0 = time.perf_counter()
        run_for(seconds)
        return stalls_ms(ticks, t0 + WARMUP_S), t0, list(ticks)

    run_for(2.0)  # let the window settle
    probe.start()
    idle = measure(args.idle_seconds + WARMUP_S)[0]
    print(f"GUI stalls while the Train dock trains at its defaults (napari "
          f"{napari.__version__}, torch {torch.__version__}, {os.cpu_count()} CPUs, "
          f"image {args.size}x{args.size}, {args.seconds:g} s per run after {WARMUP_S:g} s)")
    print(summary("idle", idle) + f"   load {os.getloadavg()[0]:.1f}")
    results = []
    for run in range(args.runs):
        dock = TrainWidget(viewer)
        viewer.window.add_dock_widget(dock, name=f"Train {run}")
        # A user opens the dock and then sets it up; the dock warms up torch's lazy imports in
        # the background meanwhile: its stalls are reported, not hidden.
        _, t_open, open_ticks = measure(OPEN_S)
        opened = stalls_ms(open_ticks, t_open)
        print(f"run {run + 1}: " + summary("dock open", opened))
        config = dock.config()
        handler_ms: dict[str, list[float]] = {"event": [], "preview": [], "plot": [],
                                              "labels": []}

        def timed(name: str, fn, store=handler_ms):
            def wrapper(*a, **k):
                t = time.perf_counter()
                try:
                    return fn(*a, **k)
                finally:
                    store[name].append((time.perf_counter() - t) * 1000)
            return wrapper

        # Time the dock's GUI-thread handlers (rebinding before Start, so the signals hold
        # the wrappers).
        first_step: list[float] = []
        on_event = timed("event", dock.jobs.on_event)  # includes the preview

        def event_handler(event, on_event=on_event, first_step=first_step):
            if not first_step and type(event).__name__ == "LossReport":
                first_step.append(time.perf_counter())
            return on_event(event)

        dock.jobs.on_event = event_handler
        dock.preview.show = timed("preview", dock.preview.show)
        dock.loss_plot._timer.timeout.disconnect()
        dock.loss_plot._timer.timeout.connect(timed("plot", dock.loss_plot.redraw))
        dock.label_edits.timer.timeout.disconnect()
        dock.label_edits.timer.timeout.connect(timed("labels", dock.label_edits.push))
        viewer.reset_view()
        started = time.perf_counter()
        if not dock.start():
            print("the Train dock refused to start", file=sys.stderr)
            return 2
        # Start itself (it adds the preview layer: ~0.2 s) comes before the warm-up: apart
        start_ms = (time.perf_counter() - started) * 1000
        handler_ms["preview"].clear()
        load = os.getloadavg()[0]
        stalls, t0, run_ticks = measure(args.seconds + WARMUP_S)
        trainer = dock.trainer
        steps = trainer.step if trainer is not None else 0
        dock.stop()
        deadline = time.perf_counter() + 120
        while dock.worker is not None and time.perf_counter() < deadline:
            app.processEvents()
            time.sleep(0.01)
        run_for(1.0)  # the auto-save
        ok = met(stalls)
        results.append(ok)
        print(f"run {run + 1}: " + summary("training", stalls)
              + f"   load {load:.1f}  target {'met' if ok else 'NOT met'}")
        print(f"       model {describe_model(dock, trainer)}, preset {config.preset}, tile "
              f"{config.tile_size}, batch {config.batch_size}, workers {config.workers}, "
              f"preview every {config.preview_every_s:g} s; {steps} steps, "
              f"{dock.preview.updates} previews, {dock.loss_plot.draw_count} plot redraws")
        if first_step:
            # The start-up (net, first texture upload, worker processes, torch's lazy imports)
            # can outlast the 2 s warm-up on a busy machine: the same run from its first step.
            steady = stalls_ms(run_ticks, max(t0 + WARMUP_S, first_step[0]))
            print(f"       first step {first_step[0] - t0:.1f} s after Start; from there: "
                  + summary("", steady).strip())
        print("       " + draw_summary(draws, run_ticks, t0 + WARMUP_S))
        run_gcs = [(end - begin) * 1000 for begin, end in full_gcs if begin >= t0 + WARMUP_S]
        print(f"       full garbage collections: {len(run_gcs)}"
              + (f", longest {max(run_gcs):.0f} ms" if run_gcs else ""))
        print(f"       Start (checks, preview layer, job launch) {start_ms:.0f} ms; "
              "slowest GUI handlers while training: " + ", ".join(
            f"{name} {max(v):.1f} ms (median {np.median(v):.2f}, n={len(v)})"
            for name, v in handler_ms.items() if v))
        dock.shutdown()
        viewer.window.remove_dock_widget(dock)
    probe.stop()
    print(f"target p99 < {TARGET_P99_MS:.0f} ms and max < {TARGET_MAX_MS:.0f} ms: met in "
          f"{sum(results)} of {len(results)} runs")
    viewer.close()
    return 0


def describe_model(dock, trainer) -> str:
    source = dock.model_choice.current_source()
    if trainer is None:
        return source
    n = sum(p.numel() for p in trainer.model.parameters())
    return f"{source} ({n / 1e6:.1f} M parameters, {trainer.device.type})"


if __name__ == "__main__":
    sys.exit(main())
