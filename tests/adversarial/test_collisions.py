"""Collisions: two images never share an autosaved session; two outputs never share a file."""

from __future__ import annotations

import numpy as np

from napari_unet._widgets.session import SESSION_DIR_ENV, Session
from napari_unet.core.io.outputs import plan_outputs


def test_sessions_of_names_differing_after_the_first_dot_are_distinct(tmp_path):
    for name in ("cell.1.tif", "cell.2.tif", "cell.tif", "cell.png", "cell.ome.tif"):
        (tmp_path / name).write_bytes(b"")
    folders = {Session.for_image(n, tmp_path / n).folder
               for n in ("cell.1.tif", "cell.2.tif", "cell.tif", "cell.png", "cell.ome.tif")}
    assert len(folders) == 5
    one = Session.for_image("cell.1", tmp_path / "cell.1.tif")
    two = Session.for_image("cell.2", tmp_path / "cell.2.tif")
    one.save_labels(np.full((4, 4), 1, np.uint16), "dense")
    two.save_labels(np.full((4, 4), 2, np.uint16), "sparse")
    assert one.load_labels()[0].max() == 1 and one.load_labels()[1] == "dense"
    assert two.load_labels()[0].max() == 2 and two.load_labels()[1] == "sparse"


def test_per_user_sessions_of_same_named_layers_from_different_files(tmp_path, monkeypatch):
    monkeypatch.setenv(SESSION_DIR_ENV, str(tmp_path / "sessions"))
    a, b = tmp_path / "ro_a", tmp_path / "ro_b"
    # folders we may not write to: simulated by pointing at files that are not in a folder
    # we can write (os.access says no) -> the per-user root is used
    monkeypatch.setattr("napari_unet._widgets.session.os.access", lambda *args: False)
    for folder in (a, b):
        folder.mkdir()
        (folder / "cells.tif").write_bytes(b"")
    sa = Session.for_image("cells", a / "cells.tif")
    sb = Session.for_image("cells", b / "cells.tif")
    assert sa.folder != sb.folder
    assert sa.folder.parent == sb.folder.parent == tmp_path / "sessions"
    assert Session.for_image("cells", a / "cells.tif").folder == sa.folder  # stable key


def test_session_save_leaves_no_temp_and_cleans_stale_ones(tmp_path):
    session = Session(tmp_path / "s")
    session.ensure_folder()
    stale = session.folder / ".training_labels.tif.00000000-1-0-0.nutmp"  # 1970: stale by age
    stale.write_bytes(b"half")
    session.save_labels(np.ones((3, 3), np.uint16), "dense")
    session.ensure_folder()
    assert sorted(p.name for p in session.folder.iterdir()) == ["training_labels.tif"]


def test_outputs_equal_after_resolution_collide(tmp_path):
    (tmp_path / "a").mkdir()
    link = tmp_path / "b"
    link.symlink_to(tmp_path / "a", target_is_directory=True)
    import pytest

    with pytest.raises(ValueError, match="same file"):
        plan_outputs([tmp_path / "a" / "x.tif", link / "x.tif"])
