"""The DuckDB functions Spark lacks, as vectorised Python with DuckDB's exact results.

Why a module of its own, free of pyspark: the Spark engine registers these as pandas
UDFs (one Arrow batch per call, never one Python call per row), and the parity tests
check each against DuckDB itself on a few hundred values (tests/spark/test_functions.py)
without starting Spark. The names are the ``udf:`` targets of
:data:`tessera.engine.dialect.SPARK_EQUIVALENTS`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from typing import Iterable

import numpy as np


def strip_accents(value: str | None) -> str | None:
    """DuckDB ``strip_accents``: canonical decomposition, combining marks dropped.

    DuckDB (utf8proc ``STRIPMARK``) recomposes what is left, so a Hangul syllable or a
    letter without a mark comes back as it was; NFD-then-NFC does the same.
    """
    if value is None:
        return None
    decomposed = unicodedata.normalize("NFD", value)
    return unicodedata.normalize("NFC", "".join(c for c in decomposed if not unicodedata.combining(c)))


def strip_accents_many(values: Iterable[str | None]) -> list[str | None]:
    return [strip_accents(v) for v in values]


def jaro_winkler_many(left, right) -> np.ndarray:
    """DuckDB ``jaro_winkler_similarity`` pairwise over two equal-length columns (NaN where
    either side is NULL). DuckDB vendors rapidfuzz-cpp's Jaro-Winkler (prefix weight 0.1)
    and runs it over the UTF-8 *bytes* (an accented letter counts twice), and rapidfuzz's
    ``cpdist`` runs the same code over whole columns in C++: so the bytes here too."""
    from rapidfuzz.distance import JaroWinkler
    from rapidfuzz.process import cpdist

    left = list(left)
    right = list(right)
    out = np.full(len(left), np.nan)
    present = [i for i, (a, b) in enumerate(zip(left, right)) if a is not None and b is not None]
    # DuckDB: 0 when either side is empty (rapidfuzz says 1 for two empty strings)
    out[[i for i in present if not left[i] or not right[i]]] = 0.0
    present = [i for i in present if left[i] and right[i]]
    if present:
        out[present] = cpdist([left[i].encode("utf-8") for i in present],
                              [right[i].encode("utf-8") for i in present],
                              scorer=JaroWinkler.similarity, dtype=np.float64, workers=1)
    return out


def suppression_hmac(key: str, value: str | None) -> str | None:
    """``tessera_hmac(v)``: HMAC-SHA256 of the UTF-8 value, lower-case hex (the DuckDB macro
    of :func:`tessera.privacy.suppression.install_hmac`, which builds the same HMAC from
    SHA-256 with the key's inner and outer pads)."""
    if value is None:
        return None
    return hmac.new(key.encode("utf-8"), value.encode("utf-8"), hashlib.sha256).hexdigest()


# strftime directives as Spark datetime pattern letters: the fixed-width spelling, and the
# lenient one DuckDB's strptime accepts when no other field is directly adjacent
# ("1/2/2026" parses with %d/%m/%Y).
_DIRECTIVES = {
    "Y": ("yyyy", "yyyy"), "y": ("yy", "yy"), "m": ("MM", "M"), "d": ("dd", "d"),
    "-m": ("M", "M"), "-d": ("d", "d"), "H": ("HH", "H"), "-H": ("H", "H"),
    "I": ("hh", "h"), "M": ("mm", "m"), "S": ("ss", "s"), "f": ("SSSSSS", "SSSSSS"),
    "p": ("a", "a"), "b": ("MMM", "MMM"), "B": ("MMMM", "MMMM"), "a": ("EEE", "EEE"),
    "A": ("EEEE", "EEEE"), "j": ("DDD", "DDD"), "z": ("xx", "xx"), "Z": ("z", "z"),
}
_TOKEN = re.compile(r"%(-?[A-Za-z%])")


def strftime_to_java(fmt: str | None, parsing: bool = True) -> str | None:
    """A strftime format (DuckDB ``strptime`` / ``strftime``) as a Spark datetime pattern.

    Literal text is quoted; ``parsing`` picks the lenient width of a number field that a
    separator follows (DuckDB parses ``%d`` from one or two digits)."""
    if fmt is None:
        return None
    parts: list[tuple[str, str]] = []  # ("field" | "text", value)
    pos = 0
    for m in _TOKEN.finditer(fmt):
        if m.start() > pos:
            parts.append(("text", fmt[pos:m.start()]))
        d = m.group(1)
        if d == "%":
            parts.append(("text", "%"))
        elif d in _DIRECTIVES:
            parts.append(("field", d))
        else:
            raise ValueError(f"strftime directive %{d} has no Spark pattern")
        pos = m.end()
    if pos < len(fmt):
        parts.append(("text", fmt[pos:]))
    out = []
    for i, (kind, value) in enumerate(parts):
        if kind == "text":
            out.append(_quote(value))
            continue
        fixed, lenient = _DIRECTIVES[value]
        adjacent = any(0 <= j < len(parts) and parts[j][0] == "field" for j in (i - 1, i + 1))
        out.append(lenient if parsing and not adjacent else fixed)
    return "".join(out)


def _quote(text: str) -> str:
    """Literal pattern text: letters inside quotes, a quote doubled."""
    if not re.search(r"[A-Za-z']", text):
        return text
    return "'" + text.replace("'", "''") + "'"
