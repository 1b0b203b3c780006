"""The output policy: checks before the work, atomic writes, stale temporary files."""

import errno
import os
import stat
import time

import pytest

from napari_unet.core.io import outputs
from napari_unet.core.io.outputs import (
    atomic_path,
    atomic_write,
    check_free_space,
    clean_stale_temps,
    confirm_overwrite,
    is_stale_temp,
    plan_outputs,
)


def listing(folder):
    return sorted(p.name for p in folder.iterdir())


def test_success_replaces_with_normal_permissions(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with atomic_path(target) as tmp:
        assert os.path.dirname(tmp) == str(tmp_path)
        with open(tmp, "wb") as fh:
            fh.write(b"new")
    assert target.read_bytes() == b"new"
    umask = os.umask(0o022)  # read the umask (and put it back at once)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert listing(tmp_path) == ["out.bin"]


def test_failure_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    for exc in (RuntimeError("disk full"), KeyboardInterrupt()):
        with pytest.raises(type(exc)), atomic_path(target) as tmp:
            with open(tmp, "wb") as fh:
                fh.write(b"half")
            raise exc
        assert target.read_bytes() == b"old"
        assert listing(tmp_path) == ["out.bin"]


def test_no_overwrite_without_permission_even_if_the_file_appears_meanwhile(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(ValueError, match="already exists"), atomic_write(target) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(b"new")
        target.write_bytes(b"someone else's")  # appears while we write
    assert target.read_bytes() == b"someone else's"
    assert listing(tmp_path) == ["out.bin"]
    with pytest.raises(ValueError, match="already exists"), atomic_write(target):
        pass


def test_symlink_at_the_destination_is_replaced_not_written_through(tmp_path):
    precious = tmp_path / "precious.txt"
    precious.write_text("keep")
    link = tmp_path / "out.txt"
    link.symlink_to(precious)
    with pytest.raises(ValueError, match="already exists"), atomic_write(link):
        pass
    with atomic_write(link, overwrite=True) as tmp:
        with open(tmp, "w") as fh:
            fh.write("new")
    assert precious.read_text() == "keep"
    assert not link.is_symlink() and link.read_text() == "new"
    dangling = tmp_path / "dangling.txt"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="already exists"), atomic_write(dangling):
        pass


def test_plan_refuses_inputs_by_path_symlink_and_hard_link(tmp_path):
    image = tmp_path / "a.tif"
    image.write_bytes(b"pixels")
    (tmp_path / "sub").mkdir()
    same = tmp_path / "sub" / ".." / "a.tif"
    soft = tmp_path / "soft.tif"
    soft.symlink_to(image)
    hard = tmp_path / "hard.tif"
    os.link(image, hard)
    for out in (image, same, soft, hard):
        with pytest.raises(ValueError, match="is the input"):
            plan_outputs([out], inputs=[image], overwrite=True)
    assert image.read_bytes() == b"pixels"


def test_plan_existing_distinct_folder_and_hint(tmp_path):
    old = tmp_path / "old.tif"
    old.write_bytes(b"x")
    with pytest.raises(ValueError, match=r"already exists \(use --overwrite"):
        plan_outputs([old], hint="--overwrite")
    assert plan_outputs([old, None], overwrite=True) == [old]
    with pytest.raises(ValueError, match="same file"):
        plan_outputs([tmp_path / "x.tif", tmp_path / "." / "x.tif"])
    with pytest.raises(ValueError, match="is a folder"):
        plan_outputs([tmp_path], overwrite=True)
    with pytest.raises(ValueError, match="does not exist"):
        plan_outputs([tmp_path / "missing" / "x.tif"])
    with pytest.raises(TypeError, match="overwrite"):
        plan_outputs([tmp_path / "x.tif"], overwrite="yes")
    assert listing(tmp_path) == ["old.tif"]  # the write probe left nothing


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_plan_unwritable_folder_is_an_oserror(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="cannot write to folder"):
            plan_outputs([locked / "model.pt"])
    finally:
        locked.chmod(0o700)


def test_free_space_is_checked_before_the_work(tmp_path, monkeypatch):
    class Usage:
        free = 1000

    monkeypatch.setattr(outputs.shutil, "disk_usage", lambda folder: Usage)
    with pytest.raises(OSError, match="need 2.0 KiB, 1000 bytes free") as info:
        plan_outputs([tmp_path / "a.tif"], need_bytes=2048)
    assert info.value.errno == errno.ENOSPC
    plan_outputs([tmp_path / "a.tif"], need_bytes=500)
    with pytest.raises(OSError, match="not enough disk space"):
        plan_outputs([tmp_path / "a.tif", tmp_path / "b.tif"],
                     need_bytes={tmp_path / "a.tif": 600, tmp_path / "b.tif": 600})
    check_free_space(tmp_path, 0)


def test_stale_temps_are_recognised_by_process_and_age(tmp_path):
    host = outputs._HOST
    now_ms = int(time.time() * 1000)
    dead = tmp_path / f".a.tif.{host}-999999999-{now_ms}-0.nutmp"   # no such process
    alive = tmp_path / f".b.tif.{host}-1-{now_ms}-0.nutmp"           # pid 1 runs
    old = tmp_path / f".c.tif.{host}-1-{now_ms - 2 * 86400_000}-0.nutmp"
    foreign = tmp_path / f".d.tif.00000000-999999999-{now_ms}-0.nutmp"  # other host: age only
    user = tmp_path / ".e.tif.tmp"                                      # not ours
    for p in (dead, alive, old, foreign, user):
        p.write_bytes(b"")
    assert sorted(p.name for p in clean_stale_temps(tmp_path)) == [dead.name, old.name]
    assert listing(tmp_path) == sorted([alive.name, foreign.name, user.name])


def test_a_running_write_is_not_stale_and_a_killed_one_is(tmp_path):
    with atomic_write(tmp_path / "x.bin") as tmp:
        assert not is_stale_temp(tmp)
        assert clean_stale_temps(tmp_path) == []
        with open(tmp, "wb") as fh:
            fh.write(b"1")
    assert listing(tmp_path) == ["x.bin"]


def test_confirm_asks_only_for_existing_files_and_remembers_nothing(tmp_path):
    asked = []

    def confirm(question):
        asked.append(question)
        return False

    assert confirm_overwrite([tmp_path / "new.tif", None], confirm) is True
    assert asked == []
    (tmp_path / "old.tif").write_bytes(b"")
    assert confirm_overwrite([tmp_path / "old.tif"], confirm) is False
    assert confirm_overwrite([tmp_path / "old.tif"], lambda q: True) is True
    assert confirm_overwrite([tmp_path / "old.tif"], confirm) is False
    assert asked == ["Replace the existing file old.tif?"] * 2
