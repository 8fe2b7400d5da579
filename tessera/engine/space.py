"""Out of space, named: which path ran out, how much is free there, and what was needed.

A full file system surfaces in many shapes: ``OSError`` ENOSPC (often without a file name,
from a ``write`` or ``flush``), DuckDB's ``IO Error: Could not write file "...": No space
left on device``, or, once that first error has been swallowed or a transaction left
aborted, a later and misleading ``Current transaction is aborted``. The writers of the
warehouse, the landing archive and the feed folders wrap their writes in
``naming_space`` so that the first such error becomes ``OutOfSpace`` naming the place,
with the original kept as its cause.
"""

from __future__ import annotations

import errno
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

_SPACE_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_SPACE_TEXT = re.compile(r"No space left on device|Disk quota exceeded|disk is full|"
                         r"not enough space", re.IGNORECASE)
_DUCKDB_FILE = re.compile(r'file "([^"]+)"')


class OutOfSpace(OSError):
    """A write failed for lack of space; the message names the place and the numbers."""

    def __init__(self, what: str, path: Path | str, needed: int | None = None,
                 detail: str | None = None):
        self.what, self.path, self.needed = what, Path(path), needed
        self.free = free_bytes(self.path)
        numbers = [f"{human(self.free)} free" if self.free is not None else "free space unknown"]
        if needed:
            numbers.append(f"at least {human(needed)} needed")
        message = (f"no space left on device for {what} at {self.path} ({', '.join(numbers)}); "
                   "nothing was half-written: free space there and run again")
        if detail:
            message += f" [first error: {detail}]"
        super().__init__(errno.ENOSPC, message)

    def __str__(self) -> str:
        return self.strerror


def human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def free_bytes(path: Path) -> int | None:
    """Free bytes on the file system holding ``path`` (or its nearest existing parent)."""
    p = Path(path)
    for candidate in (p, *p.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return None


def is_out_of_space(exc: BaseException) -> bool:
    """True if ``exc`` (or an exception it was raised from) says a device is full."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OutOfSpace):
            return True
        if isinstance(exc, OSError) and exc.errno in _SPACE_ERRNOS:
            return True
        if _SPACE_TEXT.search(str(exc)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def file_named_in(message: str) -> str | None:
    """The file a DuckDB I/O error names (``Could not write file "..."``)."""
    m = _DUCKDB_FILE.search(message)
    return m.group(1) if m else None


@contextmanager
def naming_space(what: str, path: Path | str, needed: int | None = None) -> Iterator[None]:
    """Turn the first out-of-space error inside into ``OutOfSpace`` for ``what`` at ``path``,
    chained to the original. Other errors pass unchanged."""
    try:
        yield
    except OutOfSpace:
        raise
    except Exception as exc:
        if is_out_of_space(exc):
            raise OutOfSpace(what, path, needed) from exc
        raise
