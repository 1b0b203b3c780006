"""Saving and exporting the Train dock's model: the step it holds, the dialogs' answers."""

from pathlib import Path
from types import SimpleNamespace

from napari_unet._widgets import train_saving
from napari_unet._widgets.train_saving import ask_model_path, ask_package_path, saved_step


def test_saved_step_prefers_the_best_validation_step():
    assert saved_step(SimpleNamespace(step=40, best_step=25)) == (25, True)
    assert saved_step(SimpleNamespace(step=40, best_step=None)) == (40, False)
    assert saved_step(SimpleNamespace(step=40)) == (40, False)


def test_dialogs_start_in_the_session_folder_and_name_a_zip(monkeypatch, tmp_path):
    asked = []

    def answer(reply):
        def dialog(parent, title, start, filters):
            asked.append(start)
            return reply, filters
        monkeypatch.setattr(train_saving.QFileDialog, "getSaveFileName", dialog)

    answer(str(tmp_path / "mine"))
    assert ask_package_path(None, tmp_path) == str(tmp_path / "mine.zip")
    assert ask_model_path(None, None) == str(tmp_path / "mine")
    assert asked == [str(tmp_path / "model.zip"), "model.pt"]
    answer("")  # cancelled
    assert ask_package_path(None, Path("x")) is None and ask_model_path(None, None) is None
