"""The one output policy for every file napari-unet writes (CLI, docks, batch, autosave).

Rules, checked by :func:`plan_outputs` *before* a job starts, so that nothing is computed for
an hour and then lost:

- an output is never one of the command's inputs (compared as resolved paths and, for files
  that exist, as the same inode: symlinks and hard links count). The model a command uses is
  an input too: its file, and every file of a model package folder, so no output is written
  inside such a folder; nor inside the installed napari-unet package (:data:`PACKAGE_DIR`);
- an output is a regular file or nothing yet: a folder, a device, a pipe or a link to one is
  never replaced, and a name ending in a path separator names a folder;
- an existing file is replaced only with ``overwrite`` (the CLI's ``--overwrite``, a dock's
  confirmation); a folder is never replaced;
- the outputs of one command are distinct files;
- each destination folder exists, is writable (tried, not guessed from permission bits) and
  has room for what the job says it will write.

:func:`atomic_write` then writes each file through a temporary file in the same folder that is
moved into place with a rename; the rename replaces a symlink at the destination instead of
writing through it, and the temporary file is removed on every failure path (Ctrl-C included).
Temporary names carry the host, process id and creation time
(``.<name>.<host>-<pid>-<ms>-<n>.nutmp``), so :func:`clean_stale_temps` can remove what a killed
run left behind while leaving the temporary files of running jobs alone.

Files are created with ``os.open(..., 0o666)``: the kernel applies the process umask, so the
result has the permissions a plain ``open()`` gives, and the umask is never changed (changing
it is process-wide and races with other threads).
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path

TEMP_SUFFIX = ".nutmp"
# A temp file older than this is stale even when its process id is alive again (ids are reused).
STALE_AFTER_S = 24 * 3600.0
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-(?P<ms>\d+)-\d+"
                      + re.escape(TEMP_SUFFIX) + "$")
_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]
_active: set[str] = set()  # temp files this process is writing right now
_active_lock = threading.Lock()
_counter = iter(range(1 << 62))  # distinct names for temps created in the same millisecond

PathLike = str | os.PathLike
#: The installed package (its shipped model, sample data, manifest): an input of every command.
PACKAGE_DIR = Path(__file__).resolve().parents[2]


def _describe(path: Path) -> str:
    return repr(str(path))


class OutputExists(ValueError):
    """An output that is already there. ``hint`` is how the caller allows replacing it, in the
    caller's words: ``overwrite=True`` in Python; the command line rewords it as
    ``--overwrite`` with :meth:`with_hint` (one place, whatever raised it)."""

    def __init__(self, path: PathLike, hint: str = "overwrite=True") -> None:
        self.path = Path(path)
        self.hint = hint
        super().__init__(f"{_describe(self.path)} already exists (use {hint} to replace it)")

    def with_hint(self, hint: str) -> OutputExists:
        return OutputExists(self.path, hint)


# -- checks before the work ----------------------------------------------------------------
def same_file(a: PathLike, b: PathLike) -> bool:
    """Whether ``a`` and ``b`` name the same file: equal resolved paths, or (both existing) the
    same inode, which catches hard links and symlinks; a symlink ``a`` pointing at ``b`` too."""
    pa, pb = Path(a), Path(b)
    if pa.resolve() == pb.resolve():
        return True
    try:
        return os.path.samefile(pa, pb)
    except OSError:  # one of them does not exist (yet)
        return False


def plan_outputs(
    outputs: Iterable[PathLike | None],
    inputs: Iterable[PathLike | None] = (),
    overwrite: bool = False,
    need_bytes: int | Mapping[PathLike, int] = 0,
    hint: str = "overwrite=True",
) -> list[Path]:
    """Check that ``outputs`` may be written; return them as absolute paths (None skipped).

    Parameters
    ----------
    outputs : paths (None entries are ignored)
        Files the job will write.
    inputs : paths
        Files the job reads: no output may be one of them, whatever ``overwrite`` says.
    overwrite : bool
        Allow replacing existing files (never folders, never inputs).
    need_bytes : int or mapping path -> int
        Room the job needs on disk: in total for each folder (an int is charged to every
        folder), or per output file.
    hint : str
        How the user allows overwriting, named in the message (e.g. ``"--overwrite"``).

    Raises
    ------
    ValueError
        An output is an input, already exists (without ``overwrite``), is a folder, is named
        twice, or its folder does not exist.
    OSError
        A destination folder is not writable (``PermissionError``) or lacks room (``ENOSPC``).
    """
    if not isinstance(overwrite, bool):
        raise TypeError(f"overwrite must be True or False, got {overwrite!r}")
    given = [os.fspath(p) for p in outputs if p is not None]
    for text in given:
        if text.endswith(("/", os.sep)):
            raise ValueError(f"output {text!r} ends with a path separator, so it names a "
                             "folder; give a file name")
    outs = [Path(os.path.abspath(text)) for text in given]
    ins = [Path(p) for p in inputs if p is not None]
    for out in outs:
        check_not_an_input(out, ins)
        if out.is_dir():
            raise ValueError(f"output {_describe(out)} is a folder; give a file name")
        if os.path.lexists(out) and not out.resolve().is_file() and out.resolve().exists():
            raise ValueError(f"output {_describe(out)} is not a regular file (a device, a pipe "
                             "or a link to one); give a file name")
        if os.path.lexists(out) and not overwrite:
            raise OutputExists(out, hint)
    for i, out in enumerate(outs):
        for other in outs[:i]:
            if same_file(out, other):
                raise ValueError(f"two outputs are the same file {_describe(out)}; "
                                 "give each output its own name")
    per_folder: dict[Path, int] = {}
    for out in outs:
        folder = out.parent
        if isinstance(need_bytes, Mapping):
            want = int(next((v for k, v in need_bytes.items() if same_file(k, out)), 0))
        else:
            want = int(need_bytes) if folder not in per_folder else 0
        per_folder[folder] = per_folder.get(folder, 0) + want
    for folder, want in per_folder.items():
        check_writable(folder)
        check_free_space(folder, want)
    return outs


def check_not_an_input(out: PathLike, inputs: Iterable[PathLike]) -> None:
    """``ValueError`` when ``out`` is one of ``inputs`` (a symlink or hard link to one counts),
    lies inside an input that is a folder (an unpacked model package) or inside the installed
    package."""
    out = Path(os.path.abspath(os.fspath(out)))
    for src in (Path(p) for p in inputs):
        if same_file(out, src) or (out.is_symlink() and same_file(out.resolve(), src)):
            raise ValueError(f"output {_describe(out)} is the input {_describe(src)}; "
                             "choose another output name")
        if src.is_dir() and _inside(out, src):
            raise ValueError(f"output {_describe(out)} is inside the model package folder "
                             f"{_describe(src)}, which is an input; write it elsewhere")
    if _inside(out, PACKAGE_DIR):
        raise ValueError(f"output {_describe(out)} is inside the installed napari-unet "
                         "package; write it elsewhere")


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` (resolved, links followed) lies in ``folder``."""
    return path.resolve().is_relative_to(folder.resolve())


def check_writable(folder: PathLike) -> Path:
    """Raise unless ``folder`` exists and a file can be created in it (tried for real: the
    permission bits do not tell about read-only mounts, ACLs or root)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"output folder {_describe(folder)} does not exist")
    probe = _temp_name(folder / "write-test")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as err:
        raise PermissionError(err.errno or errno.EACCES,
                              f"cannot write to folder {_describe(folder)}: "
                              f"{err.strerror or err}") from None
    os.close(fd)
    os.unlink(probe)
    return folder


def check_free_space(folder: PathLike, need_bytes: int, what: str = "the outputs") -> None:
    """Raise ``OSError(ENOSPC)`` when ``folder``'s disk has less than ``need_bytes`` free."""
    if need_bytes <= 0:
        return
    free = shutil.disk_usage(folder).free
    if free < need_bytes:
        raise OSError(errno.ENOSPC, f"not enough disk space in {_describe(Path(folder))} for "
                                    f"{what}: need {format_bytes(need_bytes)}, "
                                    f"{format_bytes(free)} free")


def format_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"``: sizes in messages."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def confirm_overwrite(paths: Iterable[PathLike | None],
                      confirm: Callable[[str], bool]) -> bool:
    """For the docks: ask ``confirm(question)`` once if any of ``paths`` exists.

    Returns True when nothing exists or the user agreed. Nothing is remembered: each call
    asks again (overwriting is never a standing setting).
    """
    existing = [Path(p) for p in paths if p is not None and os.path.lexists(p)]
    if not existing:
        return True
    names = ", ".join(p.name for p in existing[:3]) + (" ..." if len(existing) > 3 else "")
    return bool(confirm(f"Replace the existing file{'s' if len(existing) > 1 else ''} "
                        f"{names}?"))


# -- writing -------------------------------------------------------------------------------
def _temp_name(path: Path) -> Path:
    ms = int(time.time() * 1000)
    return path.with_name(f".{path.name}.{_HOST}-{os.getpid()}-{ms}-{next(_counter)}"
                          f"{TEMP_SUFFIX}")


@contextmanager
def atomic_write(path: PathLike, overwrite: bool = False,
                 hint: str = "overwrite=True") -> Iterator[str]:
    """Yield a temporary path beside ``path`` to write to; on success it becomes ``path``.

    The temporary file is created empty (mode 0o666 less the umask, as ``open`` would), the
    writer fills it by name, it is flushed to disk, then renamed over ``path``. Without
    ``overwrite`` an existing ``path`` (a dangling symlink too) is an error, checked again at
    the rename so a file appearing meanwhile is not clobbered. A symlink at ``path`` is
    replaced, never written through. On any error, Ctrl-C included, the temporary file is
    removed and ``path`` is left as it was.
    """
    path = Path(os.path.abspath(os.fspath(path)))
    if not path.parent.is_dir():
        raise ValueError(f"cannot write {_describe(path)}: folder {_describe(path.parent)} "
                         "does not exist")
    if path.is_dir() and not path.is_symlink():
        raise ValueError(f"cannot write {_describe(path)}: it is a folder")
    if os.path.lexists(path) and not overwrite:
        raise OutputExists(path, hint)
    tmp = _temp_name(path)
    with _active_lock:
        _active.add(str(tmp))
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        os.close(fd)
        yield str(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(tmp, path)
        else:
            _rename_no_replace(tmp, path, hint)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    finally:
        with _active_lock:
            _active.discard(str(tmp))


def _rename_no_replace(tmp: Path, path: Path, hint: str) -> None:
    """Move ``tmp`` to ``path`` unless ``path`` exists (atomically where links work)."""
    try:
        os.link(tmp, path, follow_symlinks=False)
    except FileExistsError:
        raise OutputExists(path, hint) from None
    except OSError:  # no hard links on this file system (FAT, some network shares)
        if os.path.lexists(path):
            raise OutputExists(path, hint) from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def atomic_path(path: PathLike) -> AbstractContextManager[str]:
    """``atomic_write(path, overwrite=True)``: for writers whose callers already applied
    :func:`plan_outputs` (or decide about existing files themselves)."""
    return atomic_write(path, overwrite=True)


# -- stale temporary files -----------------------------------------------------------------
def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process there
        try:
            import psutil  # a dependency of distributed

            return bool(psutil.pid_exists(pid))
        except ImportError:
            return True  # cannot tell: only the age rule removes it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def is_stale_temp(path: PathLike, now: float | None = None) -> bool:
    """Whether ``path`` is a temporary file of ours that no running job will finish: its
    process is gone (same host), or it is older than :data:`STALE_AFTER_S`."""
    path = Path(path)
    match = _TEMP_RE.match(path.name)
    if match is None:
        return False
    with _active_lock:
        if str(path) in _active or str(Path(os.path.abspath(path))) in _active:
            return False
    now = time.time() if now is None else now
    created = int(match["ms"]) / 1000.0
    if now - created > STALE_AFTER_S:
        return True
    if match["host"] != _HOST:
        return False  # another machine's job on a shared disk: only its age tells
    pid = int(match["pid"])
    if pid == os.getpid():
        return True  # ours but not active: left by an earlier failure that could not clean
    return not _pid_alive(pid)


def clean_stale_temps(folder: PathLike) -> list[Path]:
    """Remove the stale temporary files (see :func:`is_stale_temp`) in ``folder``; return them.

    Unreadable folders and files that vanish meanwhile are skipped silently: this is tidying.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if entry.name.endswith(TEMP_SUFFIX) and is_stale_temp(entry.path):
            try:
                os.unlink(entry.path)
            except OSError:
                continue
            removed.append(Path(entry.path))
    return removed


__all__ = ["OutputExists", "STALE_AFTER_S", "TEMP_SUFFIX", "atomic_path", "atomic_write",
           "check_free_space", "check_writable", "clean_stale_temps", "confirm_overwrite",
           "format_bytes", "check_not_an_input", "is_stale_temp", "plan_outputs", "same_file",
           "PACKAGE_DIR"]
