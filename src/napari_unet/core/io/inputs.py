"""What an input path is: a regular file this process can read, or one line saying why not.

A folder, a named pipe (FIFO), a device such as ``/dev/zero`` or a socket is not "missing": the
message says what it is. Nothing but a regular file is ever opened here, so a FIFO cannot
block the check (opening one for reading waits for a writer), and a file that exists but
cannot be opened is "permission denied", not "corrupt".
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

_SPECIAL = ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a device"),
            (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket"))


def check_input_file(path: str | os.PathLike, what: str, folder_note: str = "") -> Path:
    """``path`` when it is a regular file that can be opened for reading; else ``ValueError``.

    ``what`` starts the message (``"image file"``, ``"model file"``); ``folder_note`` ends the
    one for a folder (e.g. what a folder would need to hold to be accepted).
    """
    path = Path(path)
    name = repr(str(path))
    try:
        info = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        if path.is_symlink():
            raise ValueError(f"{what} {name} is a link to {os.readlink(path)!r}, which does "
                             "not exist") from None
        raise ValueError(f"{what} {name} does not exist") from None
    except PermissionError:
        raise ValueError(f"{what} {name} cannot be read (permission denied on its "
                         "folder)") from None
    except OSError as err:
        raise ValueError(f"{what} {name} cannot be read ({err.strerror or err})") from None
    if stat.S_ISDIR(info.st_mode):
        raise ValueError(f"{what} {name} is a folder, not a file{folder_note}")
    if not stat.S_ISREG(info.st_mode):
        kind = next((k for is_kind, k in _SPECIAL if is_kind(info.st_mode)), "a special file")
        raise ValueError(f"{what} {name} is not a regular file (it is {kind})")
    try:
        with open(path, "rb"):
            pass
    except PermissionError:
        raise ValueError(f"{what} {name} cannot be read (permission denied)") from None
    except OSError as err:
        raise ValueError(f"{what} {name} cannot be read ({err.strerror or err})") from None
    return path


__all__ = ["check_input_file"]
