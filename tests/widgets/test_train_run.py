"""The Train dock's Run box: status texts, notes, what was saved (no viewer)."""

from types import SimpleNamespace

from napari_unet._widgets.train_run import RunPanel, format_duration, progress_text, start_text
from napari_unet.core.events import LossReport, Message, Progress


def test_progress_text_shows_rate_and_time_left():
    assert format_duration(42.4) == "42 s" and format_duration(185) == "3:05"
    assert format_duration(3723) == "1:02:03"
    text = progress_text(Progress(120, 360, eta_s=125.0, rate=1.94), loss=0.2345)
    assert text == "step 120 / 360 · 1.9 steps/s · 2:05 left · loss 0.234"
    assert progress_text(Progress(3, 500)) == "step 3 / 500"


def test_start_text_names_the_limits():
    both = SimpleNamespace(minutes=2.5, iterations=300)
    assert start_text("small U-Net", both, 1200) == (
        "starting: small U-Net, 2.5 min or 300 steps, 1200 annotated pixels")
    budget = SimpleNamespace(minutes=3.0, iterations=None)
    assert start_text("m", budget, 5) == "starting: m, 3 min, 5 annotated pixels"


def test_panel_shows_notes_and_the_saved_step_and_clears_them(qtbot):
    panel = RunPanel(lambda: None, lambda: None, dark=True)
    qtbot.addWidget(panel)
    panel.add_event(LossReport(1, 0.5, 1e-3))
    panel.add_event(Message("time budget reached"))
    panel.show_saved(7, True, "model.pt")
    assert panel.note_label.text() == "time budget reached"
    assert panel.saved_label.text() == "saved model: step 7 (best validation score) in model.pt"
    assert panel.loss_plot.steps.tolist() == [1]
    panel.begin(20, "starting")
    assert panel.note_label.text() == "" and panel.saved_label.text() == ""
    assert panel.loss_plot.steps.size == 0 and panel.loss_plot.total == 20
    assert panel.status_label.text() == "starting"
    panel.enable_saving(False)
    assert not panel.save_button.isEnabled() and not panel.export_button.isEnabled()
