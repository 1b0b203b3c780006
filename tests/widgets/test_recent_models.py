"""The models offered first: newest first, once each, the newest ten, remembered across
sessions, files that are gone left out; the model choice lists them."""

from __future__ import annotations

import pytest

from napari_unet._widgets.recent_models import MAX_RECENT, RecentModels


def test_newest_first_once_each_at_most_ten_and_only_existing(tmp_path):
    files = [tmp_path / f"m{i}.pt" for i in range(MAX_RECENT + 2)]
    for f in files:
        f.write_bytes(b"x")
    recent = RecentModels()
    for f in files:
        recent.add(f, f"model {f.stem}")
    recent.add(files[3], "again")  # first again, and only once
    entries = RecentModels().entries()  # a new session reads the same list
    assert [e.label for e in entries[:3]] == ["again", "model m11", "model m10"]
    assert len(entries) == MAX_RECENT and len({e.path for e in entries}) == MAX_RECENT
    files[11].unlink()
    assert "model m11" not in [e.label for e in RecentModels().entries()]


@pytest.mark.gui
def test_the_model_choice_lists_them_and_restores_one(qtbot, tmp_path):
    from napari_unet._widgets.model_choice import ModelChoice
    from napari_unet._widgets.recent_models import recent_models

    model = tmp_path / "trained.pt"
    model.write_bytes(b"x")
    choice = ModelChoice(allow_new=False)
    qtbot.addWidget(choice)
    recent_models().add(model, "cells, trained 10:00 (trained.pt)")  # the list follows
    index = choice.source.findText("cells, trained 10:00 (trained.pt)")
    assert index == 1  # after the shipped model
    choice.source.setCurrentIndex(index)
    spec = choice.spec()
    assert (spec.source, spec.path) == ("file", str(model.resolve()))
    state = choice.state()
    other = ModelChoice(allow_new=False)
    qtbot.addWidget(other)
    other.set_state(state)  # a remembered file selects its entry
    assert other.source.currentIndex() == index
    train = ModelChoice(allow_new=True)  # the Train dock starts from its own choices
    qtbot.addWidget(train)
    assert train.source.findText("cells, trained 10:00 (trained.pt)") < 0
