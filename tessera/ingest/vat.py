"""VAT numbers (partita IVA): the check digit, as SQL for ingestion and as Python for tests.

An Italian partita IVA is 11 digits whose last is a check digit (the Luhn scheme: odd
positions as they are, even positions doubled minus 9 above 9). A mistyped VAT would
link a user to the wrong company or merge two companies, so a number that fails its
check is refused at ingestion like any malformed value (``format: vat``). Other EU VAT
ids are kept when they carry a country prefix and look like one; only the Italian
check digit is verified.
"""

from __future__ import annotations

import re

_FOREIGN = r"[A-Z]{2}[0-9A-Z]{2,13}"


def check_digit(first10: str) -> int:
    """The check digit of the first 10 digits of an Italian VAT number."""
    total = 0
    for i, ch in enumerate(first10):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return (10 - total % 10) % 10


def vat_key(value: str | None) -> str | None:
    """Python twin of ``vat_key_sql``: ``IT`` + 11 digits, a foreign id, or None."""
    if value is None:
        return None
    s = re.sub(r"[^A-Z0-9]", "", value.upper())
    m = re.fullmatch(r"(IT)?([0-9]{11})", s)
    if m:
        d = m.group(2)
        if d == "0" * 11 or check_digit(d[:10]) != int(d[10]):
            return None
        return "IT" + d
    if re.fullmatch(_FOREIGN, s) and not s.startswith("IT"):
        return s
    return None


def _clean(col: str) -> str:
    return f"regexp_replace(upper({col}), '[^A-Z0-9]', '', 'g')"


def _it_ok(digits: str) -> str:
    d = lambda i: f"CAST(substr({digits}, {i} + 1, 1) AS INTEGER)"  # noqa: E731
    total = (f"list_sum(list_transform(range(10), lambda i: CASE WHEN i % 2 = 0 THEN {d('i')} "
             f"ELSE 2 * {d('i')} - CASE WHEN 2 * {d('i')} > 9 THEN 9 ELSE 0 END END))")
    return (f"({digits} <> '00000000000' AND (10 - ({total}) % 10) % 10 = {d(10)})")


def vat_key_sql(col: str) -> str:
    """SQL: the normalised VAT (``IT`` + 11 digits, or a foreign id), NULL when invalid."""
    s = _clean(col)
    digits = f"right({s}, 11)"
    return (f"CASE WHEN {col} IS NULL THEN NULL "
            f"WHEN regexp_full_match({s}, '(IT)?[0-9]{{11}}') THEN "
            f"CASE WHEN {_it_ok(digits)} THEN 'IT' || {digits} END "
            f"WHEN regexp_full_match({s}, '{_FOREIGN}') AND NOT starts_with({s}, 'IT') THEN {s} END")


def vat_reason_sql(col: str) -> str:
    """SQL: why a VAT value is refused (NULL when it is fine). Never the value itself."""
    s = _clean(col)
    return (f"CASE WHEN {col} IS NULL THEN NULL "
            f"WHEN regexp_full_match({s}, '(IT)?[0-9]{{11}}') THEN "
            f"CASE WHEN NOT {_it_ok(f'right({s}, 11)')} "
            f"THEN 'not a valid Italian VAT number (check digit)' END "
            f"WHEN regexp_full_match({s}, '{_FOREIGN}') AND NOT starts_with({s}, 'IT') THEN NULL "
            f"ELSE 'not a VAT number (11 digits, or a country prefix and the number)' END")
