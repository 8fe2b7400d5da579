"""Publishing a file atomically: a temporary name in the same folder, fsync, rename, then
fsync the folder (RELIABILITY.md rule 5). A reader never sees a half file under the
final name; a killed writer leaves only its temporary, which the next export sweeps.
"""

from __future__ import annotations

import hashlib
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

from tessera.engine.space import naming_space

_TEMP_NAME = re.compile(r"^\.[^/]+\.tmp-(?P<pid>[0-9]+)$")


def temp_path(path: Path) -> Path:
    """The temporary a file is written to before it is renamed to ``path``."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_temps(folder: Path, started: float) -> dict:
    """Remove the temporaries that killed exports left in ``folder``: only names of the
    ``temp_path`` pattern, only plain files in that folder (no recursion, no links), only
    those last written before ``started`` (the running export's start), and not one whose
    writing process still runs. Returns how many files and bytes were removed."""
    removed = {"files": 0, "bytes": 0}
    if not folder.is_dir():
        return removed
    for entry in os.scandir(folder):
        m = _TEMP_NAME.match(entry.name)
        if not m or not entry.is_file(follow_symlinks=False):
            continue
        st = entry.stat(follow_symlinks=False)
        pid = int(m["pid"])
        if st.st_mtime >= started or (pid != os.getpid() and _pid_alive(pid)):
            continue
        try:
            os.unlink(entry.path)
        except FileNotFoundError:
            continue
        removed["files"] += 1
        removed["bytes"] += st.st_size
    return removed


@contextmanager
def _atomically(path: Path, needed: int | None = None, **open_args) -> Iterator[IO]:
    """A file written under a temporary name, fsynced, then renamed to ``path``: a reader
    never sees a partial file under the final name; a full disk is named, and leaves no
    temporary file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with naming_space("the feed folder", path, needed=needed), open(tmp, **open_args) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def fsync_path(path: Path) -> None:
    """fsync a file (or a folder) by path: what a rename publishes must be on disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def published(path: Path, needed: int | None = None) -> Iterator[Path]:
    """A temporary path to write (by any writer: the engine's COPY, openpyxl, lxml); on a
    clean exit it is fsynced and renamed to ``path``, and the folder fsynced. On an error
    the temporary is removed and ``path`` is left as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with naming_space("the feed folder", path, needed=needed):
            yield tmp
            fsync_path(tmp)
        os.replace(tmp, path)
        fsync_path(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def sha256_file(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()
