"""Probabilistic record matching (Fellegi-Sunter), as SQL over the identity temp tables.

Why Fellegi-Sunter with term frequencies: the evidence of "same surname" depends on the
surname. Two "Rossi" agreeing says little, two "Zanchettin" say a lot. Each comparison
adds ``log2(m / u)`` bits, where ``m`` is how often true duplicates agree at that level
and ``u`` how often two strangers do. For exact agreement ``u`` is the value's own
frequency in the data (so placeholders such as 1900-01-01 weigh almost nothing); the
fuzzy levels use fixed, conservative ``m``/``u`` below. The prior odds of a random
pair being a match come from ``duplicate_share`` and the number of records, so the
configured ``threshold`` is a match probability whatever the volume.

Comparisons are modelled on purpose to avoid double counting: the e-mail is compared
as a whole address, never by its user name, because user names are built from names
(``mario.rossi@``) and would make two same-name strangers look alike twice. Names alone
never link two records: a pair also needs agreement on something that is not a name
(birth date, phone, e-mail or street address).

Only DuckDB functions are used (``jaro_winkler_similarity``, ``levenshtein``); they sit
in this one module so that another engine needs only this file translated.
"""

from __future__ import annotations

import math

from tessera.config import Probabilistic


def _w(m: float, u: float) -> float:
    return round(math.log2(m / u), 3)


# Fixed weights (bits) of the fuzzy and disagreement levels: log2(m / u).
FIRST_FUZZY_HI = _w(0.10, 0.006)   # Jaro-Winkler >= 0.92: a typo
FIRST_FUZZY_LO = _w(0.05, 0.03)    # >= 0.80: a nickname or a bad typo
FIRST_INITIAL = _w(0.02, 0.02)     # one side is an initial that agrees
FIRST_DISAGREE = _w(0.08, 0.95)
LAST_FUZZY_HI = _w(0.10, 0.004)
LAST_FUZZY_LO = _w(0.04, 0.03)
LAST_DISAGREE = _w(0.05, 0.97)
DOB_NEAR = _w(0.08, 0.002)         # one digit, day/month swapped, or year +-1
DOB_DISAGREE = _w(0.03, 0.999)
EMAIL_EXACT = 14.0
EMAIL_NEAR = _w(0.05, 0.0005)      # one edit on the whole address
EMAIL_DISAGREE = _w(0.35, 1.0)
PHONE_NEAR = _w(0.04, 0.0005)
PHONE_DISAGREE = _w(0.2, 1.0)
ADDRESS_NEAR = _w(0.10, 0.0015)    # at most two edits
ADDRESS_SIMILAR = _w(0.05, 0.02)   # Jaro-Winkler >= 0.9
ADDRESS_DISAGREE = _w(0.3, 1.0)
CITY_ONLY = _w(0.1, 0.03)
LOCALITY_DISAGREE = _w(0.3, 1.0)
# m of exact agreement and the floor of u (so a unique value is not infinite evidence)
EXACT = {"fn": (0.85, 1e-4), "ln": (0.88, 1e-4), "dob": (0.9, 2e-5), "ph": (0.8, 1e-6),
         "addr": (0.75, 1e-5), "pc": (0.8, 1e-4)}
CAPS = {"dob": 15.0, "ph": 14.0, "addr": 12.0, "pc": 8.0}


def prepare_sql() -> str:
    """``_mrec``: the compared values of each record with their term frequencies."""
    def tf(col: str) -> str:
        return (f"CASE WHEN {col} IS NULL THEN NULL ELSE count(*) OVER (PARTITION BY {col}) "
                f"/ count({col}) OVER () END AS {col}_tf")

    return f"""
        CREATE OR REPLACE TEMP TABLE _mrec AS
        WITH v AS (
            SELECT rid, k_first_name AS fn, k_last_name AS ln, k_birth_date AS dob,
                   k_email AS em, regexp_replace(coalesce(k_mobile, k_phone), '[^0-9]', '', 'g') AS ph,
                   k_address AS addr, k_postcode AS pc, k_city AS city
            FROM _rec
        )
        SELECT *, {tf('fn')}, {tf('ln')}, {tf('dob')}, {tf('ph')}, {tf('addr')}, {tf('pc')},
               CAST(dob AS VARCHAR) AS dob_s
        FROM v"""


def candidate_pairs_sql(settings: Probabilistic) -> str:
    """Candidate pairs ``(a, b)``, ``a < b``: equal on every key of some blocking rule.

    Blocks with more than ``max_block_size`` records are skipped: their pairs would be
    quadratic and a key shared by that many records is not evidence of anything.
    """
    from tessera.identity import KEY_COLUMNS  # noqa: F401 - keys are validated names

    parts = []
    for keys in settings.blocking:
        cols = ", ".join(f"k_{k}" for k in keys)
        present = " AND ".join(f"k_{k} IS NOT NULL" for k in keys)
        on = " AND ".join(f"l.k_{k} = r.k_{k}" for k in keys)
        blk = (f"(SELECT rid, {cols} FROM _rec WHERE {present} "
               f"QUALIFY count(*) OVER (PARTITION BY {cols}) BETWEEN 2 AND {int(settings.max_block_size)})")
        parts.append(f"SELECT l.rid AS a, r.rid AS b FROM {blk} l JOIN {blk} r ON {on} AND l.rid < r.rid")
    return "SELECT DISTINCT a, b FROM (" + "\nUNION ALL\n".join(parts) + ")"


def _exact(key: str, col_l: str = "l", col_r: str = "r") -> str:
    m, floor = EXACT[key]
    w = f"log2({m} / greatest({col_l}.{key}_tf, {floor}))"
    if key in CAPS:
        w = f"least({w}, {CAPS[key]})"
    return w


def scored_pairs_sql() -> str:
    """``(a, b, score, corroborated)`` for the candidate pairs still in different clusters."""
    jw = "jaro_winkler_similarity"
    fn = f"""CASE WHEN l.fn IS NULL OR r.fn IS NULL THEN 0
        WHEN l.fn = r.fn THEN {_exact('fn')}
        WHEN length(l.fn) = 1 OR length(r.fn) = 1 THEN
             CASE WHEN l.fn[1] = r.fn[1] THEN {FIRST_INITIAL} ELSE {FIRST_DISAGREE} END
        WHEN {jw}(l.fn, r.fn) >= 0.92 THEN {FIRST_FUZZY_HI}
        WHEN {jw}(l.fn, r.fn) >= 0.80 THEN {FIRST_FUZZY_LO}
        ELSE {FIRST_DISAGREE} END"""
    ln = f"""CASE WHEN l.ln IS NULL OR r.ln IS NULL THEN 0
        WHEN l.ln = r.ln THEN {_exact('ln')}
        WHEN {jw}(l.ln, r.ln) >= 0.92 THEN {LAST_FUZZY_HI}
        WHEN {jw}(l.ln, r.ln) >= 0.80 THEN {LAST_FUZZY_LO}
        ELSE {LAST_DISAGREE} END"""
    # first and last name given the other way round: exact agreement only, a bit weaker
    swapped = (f"CASE WHEN l.fn = r.ln AND l.ln = r.fn AND l.fn <> l.ln "
               f"THEN log2(0.85 / greatest(l.fn_tf, 1e-4)) + log2(0.85 / greatest(l.ln_tf, 1e-4)) - 2 END")
    dob_near = ("(levenshtein(l.dob_s, r.dob_s) <= 1 "
                "OR (month(l.dob) = day(r.dob) AND day(l.dob) = month(r.dob) AND year(l.dob) = year(r.dob)) "
                "OR (abs(year(l.dob) - year(r.dob)) = 1 AND month(l.dob) = month(r.dob) AND day(l.dob) = day(r.dob)))")
    dob = f"""CASE WHEN l.dob IS NULL OR r.dob IS NULL THEN 0
        WHEN l.dob = r.dob THEN {_exact('dob')}
        WHEN {dob_near} THEN {DOB_NEAR} ELSE {DOB_DISAGREE} END"""
    em = f"""CASE WHEN l.em IS NULL OR r.em IS NULL THEN 0 WHEN l.em = r.em THEN {EMAIL_EXACT}
        WHEN levenshtein(l.em, r.em) <= 1 THEN {EMAIL_NEAR} ELSE {EMAIL_DISAGREE} END"""
    ph = f"""CASE WHEN l.ph IS NULL OR r.ph IS NULL THEN 0 WHEN l.ph = r.ph THEN {_exact('ph')}
        WHEN length(l.ph) = length(r.ph) AND levenshtein(l.ph, r.ph) <= 1 THEN {PHONE_NEAR}
        ELSE {PHONE_DISAGREE} END"""
    addr = f"""CASE WHEN l.addr IS NULL OR r.addr IS NULL THEN 0 WHEN l.addr = r.addr THEN {_exact('addr')}
        WHEN levenshtein(l.addr, r.addr) <= 2 THEN {ADDRESS_NEAR}
        WHEN {jw}(l.addr, r.addr) >= 0.9 THEN {ADDRESS_SIMILAR} ELSE {ADDRESS_DISAGREE} END"""
    loc = f"""CASE WHEN l.pc = r.pc THEN {_exact('pc')}
        WHEN l.city = r.city THEN {CITY_ONLY}
        WHEN (l.pc IS NULL OR r.pc IS NULL) AND (l.city IS NULL OR r.city IS NULL) THEN 0
        ELSE {LOCALITY_DISAGREE} END"""
    return f"""
        SELECT a, b, greatest(w_fn + w_ln, coalesce(w_swap, -1e9)) + w_dob + w_em + w_ph + w_addr + w_loc AS score,
               (w_dob > 0 OR w_em > 0 OR w_ph > 0 OR w_addr > 2) AS corroborated
        FROM (
            SELECT c.a, c.b, {fn} AS w_fn, {ln} AS w_ln, {swapped} AS w_swap, {dob} AS w_dob,
                   {em} AS w_em, {ph} AS w_ph, {addr} AS w_addr, {loc} AS w_loc
            FROM _cand c
            JOIN _label la ON la.rid = c.a JOIN _label lb ON lb.rid = c.b
            JOIN _mrec l ON l.rid = c.a JOIN _mrec r ON r.rid = c.b
            WHERE la.cid <> lb.cid
        )"""


def threshold_weight(settings: Probabilistic, records: int) -> float:
    """The match weight (bits) a pair needs to reach ``settings.threshold``.

    Prior: among the ``n(n-1)/2`` pairs about ``duplicate_share * n`` are matches.
    """
    n = max(records, 3)
    prior = min(0.5, 2 * settings.duplicate_share / (n - 1))
    p = settings.threshold
    return math.log2(p / (1 - p)) - math.log2(prior / (1 - prior))
