"""Atomic file writes: a hidden temporary file beside the target, renamed over it on success."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from .errors import OutputError


def write_failed(path: Path, error: OSError, what: str = "cannot write") -> OutputError:
    """One line for an OSError met writing ``path``, with the fix that fits its cause."""
    reason = error.strerror or str(error)
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = f"free some space on the disk that holds {path.parent}, or write elsewhere"
    elif error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = f"check that {path.parent} is writable, or write elsewhere"
    elif error.errno == errno.EFBIG:  # a file size limit (ulimit -f), or FAT's 4 GB
        hint = "the file is larger than this file system or a limit allows: write elsewhere"
    elif error.errno == errno.ENAMETOOLONG:
        hint = "choose a shorter name or folder"
    else:
        hint = "check the folder, or write elsewhere"
    return OutputError(f"{path}: {what} ({reason})", hint)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: Path, replace: bool = True) -> Iterator[IO[bytes]]:
    """Write through a hidden temporary file beside ``path``, renamed over it only on success.

    An error or interrupt leaves nothing under ``path``. With ``replace`` False, a file that
    appeared under ``path`` meanwhile (another process writing the same output) is kept: the
    result is linked into place only where nothing is, as one atomic step. Raises OutputError
    when the folder cannot be written, or ``path`` exists and may not be replaced.
    """
    folder = path.parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=folder)
    except OSError as e:
        raise write_failed(path, e, f"cannot write to {folder}") from e
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results should look like any file
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            _publish_new(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _publish_new(tmp: str, path: Path) -> None:
    """``tmp`` under ``path``, only if nothing is there: a hard link fails atomically where a
    file exists (a rename would replace it). A file system without hard links gets a check, then
    the rename."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise OutputError(
            f"{path}: already exists (another run wrote it meanwhile)", "pass --overwrite to replace it"
        ) from None
    except OSError:  # no hard links here (FAT, some network file systems): best effort
        if path.exists():
            raise OutputError(
                f"{path}: already exists (another run wrote it meanwhile)", "pass --overwrite to replace it"
            ) from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def remove_stale_parts(path: Path) -> list[Path]:
    """Delete the temporary files that killed writers of ``path`` left (``.NAME.XXXXXXXX.part``,
    as ``atomic_write`` names them); called once ``path`` is complete, when they can only be
    leftovers. It lists the folder: call it once per output, not per frame of a folder of frames.
    Returns what was removed."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.part")
    removed = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(path.parent):
            if pattern.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


def write_bytes_atomic(path: Path, data: bytes, replace: bool = True) -> Path:
    with atomic_write(path, replace) as f:
        f.write(data)
    return path
