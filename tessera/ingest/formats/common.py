"""What every format shares: the read result and its problems, file refusal, the
fingerprint and encoding check, the byte scans' helper, and the DuckDB landing shape."""

from __future__ import annotations

import codecs
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from tessera.engine.space import is_out_of_space
from tessera.settings import Source

BATCH_ROWS = 50_000
_CHUNK = 1 << 20


class FileRejected(Exception):
    """The whole file cannot be loaded (wrong encoding, DOCTYPE, broken XML, bad header).

    The message names the file, the line when known, and the reason, never a value.
    """


@dataclass
class Problem:
    line: int | None
    field: str
    reason: str


@dataclass
class ReadResult:
    """Filled while batches are consumed."""

    records: int = 0
    problems: list[Problem] = field(default_factory=list)
    # False only when a scan of the bytes proved that no value starts or ends with a
    # blank: trimming every field of every record was a fifth of a clean file's ingest.
    edge_blanks: bool = True
    # False only when a scan of the bytes proved that no value holds a control character
    # (other than tab, CR, LF): the per-field check is then skipped.
    controls: bool = True
    # True when the batches (or _land) carry ``_numbers``: the fields of each record
    # that the file gave as numbers (JSON numbers, XLSX number cells), not as text.
    numbers: bool = False
    # Per field, the worksheet column its cells come from (XLSX): rejects name the cell.
    cells: dict[str, str] = field(default_factory=dict)


def fingerprint(path: Path) -> tuple[str, int]:
    """sha256 of the file's bytes and its size, reading into one reused 1 MiB buffer."""
    sha = hashlib.sha256()
    size = 0
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            sha.update(view[:n])
            size += n
    return sha.hexdigest(), size


def check_encoding(path: Path, encoding: str | None) -> None:
    """A strict decode of the file in the declared encoding; FileRejected names the line.

    A single-byte code page (cp1252, cp1250, latin-1) decodes almost any bytes, so a
    UTF-8 file declared as cp1252 would load as mojibake without an error. When the
    bytes also decode as UTF-8 and contain multi-byte sequences, the declaration is
    wrong with near certainty: refuse the file instead of corrupting names.
    """
    if not encoding:
        return
    lines_before = 0
    dec = codecs.getincrementaldecoder(_codec(encoding))(errors="strict")
    single_byte = encoding in ("cp1252", "cp1250", "latin-1")
    utf8 = codecs.getincrementaldecoder("utf-8")(errors="strict") if single_byte else None
    utf8_ok, non_ascii = True, False
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            try:
                dec.decode(chunk)
            except UnicodeDecodeError as exc:
                line = lines_before + chunk[: exc.start].count(b"\n") + 1
                raise FileRejected(
                    f"{path.name}: line {line}: bytes are not valid {encoding} "
                    f"({exc.reason}); fix the file or the source's declared encoding"
                ) from None
            if utf8 is not None and utf8_ok:
                if not non_ascii and not chunk.isascii():
                    non_ascii = True
                try:
                    utf8.decode(chunk)
                except UnicodeDecodeError:
                    utf8_ok = False
            lines_before += chunk.count(b"\n")
    try:
        dec.decode(b"", final=True)
    except UnicodeDecodeError:
        raise FileRejected(f"{path.name}: truncated multi-byte sequence at the end of the file") from None
    if single_byte and utf8_ok and non_ascii:
        raise FileRejected(
            f"{path.name}: the source declares {encoding} but the file is UTF-8 text; "
            "declare encoding: utf-8 for this source"
        )
    if single_byte and non_ascii:
        check_code_page(path, encoding)


_SINGLE_BYTE = ("cp1252", "cp1250", "latin-1")
# Non-letters that do sit between two letters in real text: apostrophes, the middle
# dot, ordinal indicators, soft hyphen and no-break space.
_INSIDE_WORDS = set("\u2019\u2018\u00b4`\u00b7\u00ad\u00a0'\u00aa\u00ba")
_TABLES: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def _letter_tables(encoding: str) -> tuple[np.ndarray, np.ndarray]:
    """(is a letter, is implausible inside a word) for every byte in ``encoding``."""
    if encoding not in _TABLES:
        letter, odd = np.zeros(256, dtype=bool), np.zeros(256, dtype=bool)
        for b in range(256):
            try:
                ch = bytes([b]).decode(encoding)
            except UnicodeDecodeError:
                odd[b] = b >= 0x80
                continue
            letter[b] = ch.isalpha()
            odd[b] = b >= 0x80 and not ch.isalpha() and ch not in _INSIDE_WORDS
        _TABLES[encoding] = letter, odd
    return _TABLES[encoding]


def implausible_bytes(arr: np.ndarray, encoding: str) -> int:
    """How many bytes read, in ``encoding``, as what real text does not hold.

    A sign between two letters ("Wroc\u00b3aw": a cp1250 ``\u0142`` read as cp1252) and,
    in latin-1, any C1 control character (bytes 0x80-0x9F: cp1252's quotes, dashes and
    euro sign read as latin-1). Vectorised: only the non-ASCII bytes are looked at.
    """
    letter, odd = _letter_tables(encoding)
    count = 0
    n = arr.size
    for i in range(0, n, _CHUNK):
        part = arr[i:i + _CHUNK]
        pos = np.flatnonzero(odd[part]) + i
        if not pos.size:
            continue
        if encoding == "latin-1":
            c1 = (arr[pos] >= 0x80) & (arr[pos] < 0xA0)
            count += int(np.count_nonzero(c1))
            pos = pos[~c1]
        pos = pos[(pos > 0) & (pos < n - 1)]
        count += int(np.count_nonzero(letter[arr[pos - 1]] & letter[arr[pos + 1]]))
    return count


def _decodes(arr: np.ndarray, encoding: str) -> bool:
    dec = codecs.getincrementaldecoder(encoding)(errors="strict")
    try:
        for i in range(0, arr.size, _CHUNK):
            dec.decode(arr[i:i + _CHUNK].tobytes())
    except UnicodeDecodeError:
        return False
    return True


def check_code_page(path: Path, encoding: str) -> None:
    """Refuse a file whose bytes are implausible in its declared 8-bit code page.

    Single-byte code pages decode any bytes, so a Polish cp1250 file or a Windows-1252
    file declared latin-1 loads as silent mojibake. When the declared code page gives
    implausible characters and another one gives none, the file is refused, naming the
    one it looks like; charset-normalizer, when installed, gives a second opinion in
    the message. Nothing from the file is stored.
    """
    import mmap

    if path.stat().st_size == 0:
        return
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        arr = np.frombuffer(mm, dtype=np.uint8)
        try:
            score = implausible_bytes(arr, encoding)
            if not score:
                return
            clean = [other for other in _SINGLE_BYTE if other != encoding
                     and _decodes(arr, other) and implausible_bytes(arr, other) == 0]
            if not clean:
                return  # nothing reads better: odd, but not a wrong declaration
            # Ties (cp1250 and cp1252 share most signs): the detector's choice when it
            # is one of them, else the commoner code page first.
            opinion = _second_opinion(mm[: 1 << 20])
            normal = {"windows-1252": "cp1252", "windows-1250": "cp1250", "latin_1": "latin-1",
                      "iso-8859-1": "latin-1"}
            looks_like = normal.get(opinion or "", opinion) if normal.get(
                opinion or "", opinion) in clean else clean[0]
        finally:
            del arr
    second = f"; charset-normalizer reads it as {opinion}" if opinion else ""
    raise FileRejected(
        f"{path.name}: the source declares {encoding} but the bytes look like {looks_like} "
        f"({score} character(s) would read as signs or control characters inside words"
        f"{second}); declare encoding: {looks_like} for this source; nothing loaded")


def _second_opinion(sample: bytes) -> str | None:
    try:
        from charset_normalizer import from_bytes
    except ImportError:  # optional: the byte tables decide alone
        return None
    best = from_bytes(sample).best()
    return best.encoding if best is not None else None


def encoding_checked_by_duckdb(source: Source) -> bool:
    """Whether the CSV landing may skip ``check_encoding`` until DuckDB has read the file.

    DuckDB's CSV reader refuses invalid UTF-8 itself ("Invalid unicode"), so for a
    UTF-8 source the separate decode pass (a fifth of a clean file's ingest) is only
    needed to name the bad line once the landing has failed. Single-byte code pages
    accept any bytes, and their check is the guard against mojibake: always run.
    """
    return source.format == "csv" and _codec(encoding_of(source)) in ("utf-8", "utf-8-sig")


def _codec(encoding: str | None) -> str:
    # A BOM is accepted (and stripped) for UTF-8 whether or not the source says so.
    return "utf-8-sig" if encoding in ("utf-8", "utf-8-sig") else (encoding or "utf-8")


def _batch(columns: dict[str, list], lines: list[int],
           numbers: list[str | None] | None = None) -> pa.Table:
    arrays = {name: pa.array(values, type=pa.string()) for name, values in columns.items()}
    arrays["_line"] = pa.array(lines, type=pa.int64())
    if numbers is not None:
        arrays["_numbers"] = pa.array(numbers, type=pa.string())
    return pa.table(arrays)


def _positions(arr: np.ndarray, value: int) -> np.ndarray:
    """Where ``arr == value``, in 1 MiB slices.

    One comparison over the whole file allocates a file-sized mask; on this machine the
    page faults of that allocation cost five times the comparison itself.
    """
    mask = np.empty(min(arr.size, _CHUNK), dtype=bool)
    found = []
    for i in range(0, arr.size, _CHUNK):
        part = arr[i:i + _CHUNK]
        m = mask[:part.size]
        np.equal(part, value, out=m)
        if m.any():  # flatnonzero costs four times any: most slices hold no rare byte
            found.append(np.flatnonzero(m) + i)
    return np.concatenate(found) if found else np.empty(0, np.int64)


def has_controls(arr: np.ndarray, encoding: str, line_ends: int | None = None) -> bool:
    """Whether the bytes may hold a control character other than tab, CR and LF.

    Exact in one direction: False proves that no decoded value holds one (C0, DEL, C1),
    so the per-field check can be skipped. In UTF-8 a C1 character is 0xC2 followed by
    0x80-0x9F; in latin-1 it is a byte 0x80-0x9F; in cp1250/cp1252 those bytes are
    letters and signs. The C0 test is a count: bytes below 0x20 against the LFs and CRs
    (``line_ends``, when the caller has counted them already) and the tabs; a table
    lookup per byte cost 3 s a GB. In 1 MiB slices (no file-sized temporaries).
    """
    latin1 = encoding == "latin-1"
    utf8 = encoding in ("utf-8", "utf-8-sig")
    low = 0
    for i in range(0, arr.size, _CHUNK):
        part = arr[i:i + _CHUNK]
        low += int(np.count_nonzero(part < 0x20))
        if np.count_nonzero(part == 0x7F):
            return True
        if latin1 and np.any((part >= 0x80) & (part < 0xA0)):
            return True
        if utf8:
            lead = _positions(part, 0xC2) + i + 1
            lead = lead[lead < arr.size]
            if lead.size and np.any((arr[lead] >= 0x80) & (arr[lead] < 0xA0)):
                return True
    if low == 0:
        return False
    if line_ends is None:
        line_ends = int(_positions(arr, 10).size + _positions(arr, 13).size)
    return low > line_ends and low > line_ends + int(_positions(arr, 9).size)


def check_header(name: str, header: list[str], source: Source, where: str = "line 1",
                 delimiter: str | None = None) -> None:
    """Refuse a header that does not say what the source's mapping expects.

    A name given twice (which column is the value?), a mapped column missing, and a
    column the mapping does not name (a renamed or shifted export) unless the source
    says ``extra_columns: ignore``. The message names the real problem: a header read as
    one column that holds another delimiter says so, a column found in another case or
    with other blanks says so. Column names are the file's structure, never its values.
    """
    named = [h for h in header if h]
    twice = [h for h in dict.fromkeys(named) if named.count(h) > 1]
    if twice:
        raise FileRejected(f"{name}: {where}: column name(s) {twice} appear more than once "
                           "in the header; nothing loaded")
    wanted = list(dict.fromkeys(source.columns.values()))
    missing = [col for col in wanted if col not in header]
    if missing:
        hints = []
        if delimiter is not None and len(header) == 1:
            others = [d for d in (",", ";", "\t", "|") if d != delimiter and d in header[0]]
            if others:
                shown = "tab" if others[0] == "\t" else repr(others[0])
                hints.append(f"the header reads as one column: is the delimiter {shown} "
                             f"rather than {delimiter!r}?")
        folded = {" ".join(h.split()).lower(): h for h in header}
        near = [f"'{folded[' '.join(m.split()).lower()]}' for '{m}'" for m in missing
                if " ".join(m.split()).lower() in folded]
        if near:
            hints.append(f"found {', '.join(near)} (names are matched exactly)")
        raise FileRejected(
            f"{name}: {where}: header lacks column(s) {missing} mapped in the source "
            f"configuration" + (f"; {'; '.join(hints)}" if hints else ""))
    if source.extra_columns != "ignore":
        extra = [h or f"(unnamed column {i + 1})" for i, h in enumerate(header)
                 if h not in wanted]
        if extra:
            raise FileRejected(
                f"{name}: {where}: header has column(s) {extra} that the source's mapping "
                "does not name; map them, or set extra_columns: ignore for this source; "
                "nothing loaded")


def _keeps_insertion_order(con) -> bool:
    """_land's row ids are the file's order only while DuckDB keeps insertion order."""
    return str(con.execute("SELECT current_setting('preserve_insertion_order')")
               .fetchall()[0][0]).lower() == "true"


@dataclass
class Landing:
    """A file landed by DuckDB in ``_land`` (``open_csv_landing``, ``open_jsonl_landing``)."""

    con: object
    records: int
    edge_blanks: bool
    problems: list[Problem] = field(default_factory=list)
    # _land's fields, its position in the file (``_rowid``) and its physical line.
    relation: str = ("(SELECT l.*, k._line FROM (SELECT *, rowid AS _rowid FROM _land) l "
                     "JOIN _land_lines k USING (_rowid))")

    controls: bool = True
    numbers: bool = False

    def result(self) -> ReadResult:
        return ReadResult(records=self.records, problems=list(self.problems),
                          edge_blanks=self.edge_blanks, controls=self.controls,
                          numbers=self.numbers)

    def close(self) -> None:
        self.con.unregister("_land_lines")  # a no-op when already gone


def _register_lines(con, lines: np.ndarray) -> None:
    """The physical line of each landed record, by its position (``_rowid``)."""
    con.register("_land_lines", pa.table({
        "_rowid": pa.array(np.arange(lines.size, dtype=np.int64), pa.int64()),
        "_line": pa.array(lines, pa.int64())}))


def _rows_batch(rows: list[list[str]], idx: list[int], names: list[str],
                lines: list[int]) -> pa.Table:
    cols = list(zip(*rows))
    arrays = {name: pa.array(cols[i], type=pa.string()) for name, i in zip(names, idx)}
    arrays["_line"] = pa.array(lines, type=pa.int64())
    return pa.table(arrays)


def encoding_of(source: Source) -> str | None:
    if source.format == "csv":
        return source.csv.encoding if source.csv else "utf-8"
    if source.format in ("jsonl", "api", "push"):
        return "utf-8"
    return None  # XML declares its own encoding; lxml checks it


def not_a_refusal(exc: BaseException) -> bool:
    """A DuckDB error that says nothing about the file: out of space, a fatal or
    transaction error. Such an error must surface as it is, never send the file to
    a slower reader (which would then fail with a misleading "transaction is aborted")."""
    return is_out_of_space(exc) or isinstance(exc, (duckdb.FatalException,
                                                    duckdb.TransactionException))
