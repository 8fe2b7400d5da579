"""Probabilistic record matching (Fellegi-Sunter), as SQL over the identity temp tables.

Why Fellegi-Sunter with term frequencies: the evidence of "same surname" depends on the
surname. Two "Rossi" agreeing says little, two "Zanchettin" say a lot. Each comparison
adds ``log2(m / u)`` bits, where ``m`` is how often true duplicates agree at that level
and ``u`` how often two strangers do.

- ``u`` comes from the data itself: for exact agreement it is the value's own
  frequency (so placeholders such as 1900-01-01 weigh almost nothing); for the fuzzy
  levels it is measured on a seeded random sample of record pairs at every run
  (``estimate_u``), as Splink does, so the weights follow the deployment's data.
- ``m`` is a fixed, documented prior per level (``LEVELS``): how records of one
  person drift (typos, nicknames, moves). There is no training step to go wrong.
- The prior odds of a random pair being a match come from ``duplicate_share`` and the
  number of records, so the configured ``threshold`` is a match probability at any
  volume.

Modelled on purpose to avoid double counting correlated evidence: the e-mail is
compared as a whole address, never by its user name, because user names are built
from names (``mario.rossi@``) and would make two same-name strangers look alike twice;
street address and locality are one "place" comparison, because a move changes both.
Names alone never link: a pair also needs agreement on something that is not a name
(birth date, phone, e-mail or street address).

Only DuckDB functions are used (``jaro_winkler_similarity``, ``levenshtein``), in this
module only, so that another engine needs just this file translated.
"""

from __future__ import annotations

import math
import re

import duckdb

from tessera.config import Probabilistic

JW = "jaro_winkler_similarity"

# Similarities computed once per pair and named, so that each level's condition reads a
# column instead of calling the function again. Each has a guard: a cheap test that
# every pair within reach of its levels passes (one edit leaves the first or the last
# three characters intact). Levenshtein is quadratic in the length, so it only runs
# where it can still decide something.
SIMS = {
    "jw_fn": ("l.fn <> r.fn", f"{JW}(l.fn, r.fn)"),
    "jw_ln": ("l.ln <> r.ln", f"{JW}(l.ln, r.ln)"),
    "lev_dob": ("l.dob_s <> r.dob_s AND (left(l.dob_s, 5) = left(r.dob_s, 5) OR right(l.dob_s, 5) = right(r.dob_s, 5))",
                "levenshtein(l.dob_s, r.dob_s)"),
    "lev_em": ("l.em <> r.em AND abs(length(l.em) - length(r.em)) <= 1 "
               "AND (left(l.em, 3) = left(r.em, 3) OR right(l.em, 3) = right(r.em, 3))",
               "levenshtein(l.em, r.em)"),
    "lev_ph": ("l.ph <> r.ph AND length(l.ph) = length(r.ph) "
               "AND (left(l.ph, 3) = left(r.ph, 3) OR right(l.ph, 3) = right(r.ph, 3))",
               "levenshtein(l.ph, r.ph)"),
    "lev_tax": ("l.tax <> r.tax AND length(l.tax) = length(r.tax) "
                "AND (left(l.tax, 3) = left(r.tax, 3) OR right(l.tax, 3) = right(r.tax, 3))",
                "levenshtein(l.tax, r.tax)"),
    "jw_addr": ("l.addr <> r.addr", f"{JW}(l.addr, r.addr)"),
    "lev_addr": (f"l.addr <> r.addr AND abs(length(l.addr) - length(r.addr)) <= 2 AND {JW}(l.addr, r.addr) >= 0.9",
                 "levenshtein(l.addr, r.addr)"),
}

# Fuzzy levels, in order of strength: (comparison, level, condition, m). Conditions
# name similarities as {jw_fn}; the first level that holds (after exact) applies.
LEVELS = [
    ("fn", "typo", "{jw_fn} >= 0.92", 0.10),
    ("fn", "similar", "{jw_fn} >= 0.80", 0.06),
    ("ln", "typo", "{jw_ln} >= 0.92", 0.10),
    ("ln", "similar", "{jw_ln} >= 0.80", 0.03),
    ("dob", "near", "({lev_dob} <= 1 "
                    "OR (month(l.dob) = day(r.dob) AND day(l.dob) = month(r.dob) AND year(l.dob) = year(r.dob)) "
                    "OR (abs(year(l.dob) - year(r.dob)) = 1 AND month(l.dob) = month(r.dob) "
                    "AND day(l.dob) = day(r.dob)))", 0.07),
    ("em", "typo", "{lev_em} <= 1", 0.05),
    ("ph", "typo", "{lev_ph} <= 1", 0.04),
    ("tax", "typo", "{lev_tax} <= 1", 0.05),
    ("addr", "typo", "{lev_addr} <= 2", 0.10),
    ("addr", "similar", "{jw_addr} >= 0.9", 0.05),
]
_RAW = {k: f"(CASE WHEN {guard} THEN {expr} END)" for k, (guard, expr) in SIMS.items()}
# m of exact agreement, the floor of its u, and a cap in bits (a unique value is strong
# evidence, not infinite evidence).
EXACT = {"tax": (0.9, 1e-6, 16.0), "fn": (0.80, 1e-4, 13.0), "ln": (0.85, 1e-4, 13.0), "dob": (0.88, 2e-5, 15.0),
         "em": (0.60, 1e-6, 14.0), "ph": (0.75, 1e-6, 14.0), "addr": (0.75, 1e-5, 12.0),
         "pc": (0.80, 1e-4, 8.0)}
# m of disagreement (u is close to 1): how often one person's records differ outright.
# Two different tax codes (both passed their checksum) are strong evidence of two people.
DISAGREE = {"fn": 0.10, "ln": 0.05, "dob": 0.03, "em": 0.35, "ph": 0.2, "place": 0.2, "tax": 0.02}
INITIAL_AGREES = 0.0  # one side is only an initial and it agrees: no evidence either way
CITY_ONLY = (0.1, 0.03)  # same city, different postcode
U_SAMPLE_PAIRS = 300_000
# A fuzzy level seen less than this often among strangers is still capped here: random
# pairs understate how alike the candidates of a block are.
U_FLOOR = 2e-4


def _w(m: float, u: float) -> float:
    return math.log2(m / u)


def prepare_sql() -> list[str]:
    """``_mrec``: the compared values of each record with their term frequencies."""
    cols = ["fn", "ln", "dob", "em", "ph", "addr", "pc", "tax"]
    stmts = ["""
        CREATE OR REPLACE TEMP TABLE _mval AS
        SELECT rid, k_first_name AS fn, k_last_name AS ln, k_birth_date AS dob,
               k_email AS em, nullif(regexp_replace(coalesce(k_mobile, k_phone), '[^0-9]', '', 'g'), '') AS ph,
               k_address AS addr, k_postcode AS pc, k_city AS city, k_tax_code AS tax, CAST(k_birth_date AS VARCHAR) AS dob_s
        FROM _rec"""]
    # term frequencies by GROUP BY and hash join: cheaper than one window per column
    tf_joins = " ".join(
        f"LEFT JOIN (SELECT {c}, count(*) / sum(count(*)) OVER () AS {c}_tf FROM _mval "
        f"WHERE {c} IS NOT NULL GROUP BY {c}) t_{c} ON t_{c}.{c} = v.{c}" for c in cols)
    stmts.append(f"""
        CREATE OR REPLACE TEMP TABLE _mrec AS
        SELECT v.*, {", ".join(f"t_{c}.{c}_tf" for c in cols)} FROM _mval v {tf_joins}""")
    stmts.append("DROP TABLE IF EXISTS _mval")
    return stmts


def estimate_u(con: duckdb.DuckDBPyConnection, pairs: int = U_SAMPLE_PAIRS, seed: float = 0.42) -> dict:
    """Share of random record pairs at each fuzzy level (and not exactly equal).

    Measured on a seeded sample of ``pairs`` random pairs of ``_mrec``, so the fuzzy
    weights reflect the deployment's data (how alike its strangers' names are).
    Levels never seen in the sample get ``1 / sample`` (at least ``U_FLOOR``).
    """
    n = con.execute("SELECT count(*) FROM _mrec").fetchone()[0]
    if n < 50:
        return {}
    con.execute("SELECT setseed(?)", [seed])
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _upairs AS
        SELECT DISTINCT least(a, b) AS a, greatest(a, b) AS b FROM (
            SELECT 1 + floor(random() * {n})::BIGINT AS a, 1 + floor(random() * {n})::BIGINT AS b
            FROM range({int(pairs)})) WHERE a <> b""")
    out = {}
    for comp in sorted({c for c, *_ in LEVELS}):
        levels = [(name, cond.format(**_RAW)) for c, name, cond, _ in LEVELS if c == comp]
        cases = " ".join(f"WHEN {cond} THEN '{name}'" for name, cond in levels)
        rows = con.execute(f"""
            SELECT lvl, count(*), sum(count(*)) OVER () FROM (
                SELECT CASE WHEN l.{comp} = r.{comp} THEN 'exact' {cases} ELSE 'other' END AS lvl
                FROM _upairs p JOIN _mrec l ON l.rid = p.a JOIN _mrec r ON r.rid = p.b
                WHERE l.{comp} IS NOT NULL AND r.{comp} IS NOT NULL) GROUP BY lvl""").fetchall()
        total = max(sum(r[1] for r in rows), 1)
        seen = {lvl: cnt for lvl, cnt, _ in rows}
        for name, _ in levels:
            out[(comp, name)] = max(seen.get(name, 0) / total, 1 / total, U_FLOOR)
    con.execute("DROP TABLE IF EXISTS _upairs")
    return out


# Fixed u of the fuzzy levels when the data are too few to measure (tests, tiny loads).
DEFAULT_U = {("fn", "typo"): 0.005, ("fn", "similar"): 0.03, ("ln", "typo"): 0.002,
             ("ln", "similar"): 0.03, ("dob", "near"): 0.002, ("em", "typo"): 1e-4,
             ("ph", "typo"): 1e-4, ("tax", "typo"): 1e-4, ("addr", "typo"): 5e-4, ("addr", "similar"): 0.01}


def candidate_pairs_sql(settings: Probabilistic) -> str:
    """Candidate pairs ``(a, b)``, ``a < b``: equal on every key of some blocking rule.

    Blocks with more than ``max_block_size`` records are skipped: their pairs would be
    quadratic, and a key shared by that many records is not evidence of anything.
    """
    parts = []
    for keys in settings.blocking:
        cols = ", ".join(f"k_{k}" for k in keys)
        present = " AND ".join(f"k_{k} IS NOT NULL" for k in keys)
        # Records are grouped by a hash of the key set: a collision can only add a
        # candidate (which is then scored), never lose one.
        blk = f"(SELECT rid, hash({cols}) AS h FROM _rec WHERE {present})"
        parts.append(f"""
            SELECT l.rid AS a, r.rid AS b
            FROM {blk} l JOIN {blk} r ON l.h = r.h AND l.rid < r.rid
            WHERE l.h IN (SELECT h FROM {blk} GROUP BY h
                          HAVING count(*) BETWEEN 2 AND {int(settings.max_block_size)})""")
    return "SELECT DISTINCT a, b FROM (" + "\nUNION ALL\n".join(parts) + ")"


def _exact(key: str) -> str:
    m, floor, cap = EXACT[key]
    return f"least(log2({m} / greatest(l.{key}_tf, {floor})), {cap})"


def _comparison(comp: str, u: dict, disagree: float | None, sims: dict) -> str:
    """CASE expression of one comparison's weight: null 0, exact (TF), fuzzy levels, else.

    ``sims`` maps similarity names to the SQL that reads them (a column or the call).
    """
    parts = [f"WHEN l.{comp} IS NULL OR r.{comp} IS NULL THEN 0", f"WHEN l.{comp} = r.{comp} THEN {_exact(comp)}"]
    if comp == "fn":
        parts.append(f"WHEN length(l.fn) = 1 OR length(r.fn) = 1 THEN CASE WHEN l.fn[1] = r.fn[1] "
                     f"THEN {INITIAL_AGREES} ELSE {_w(DISAGREE['fn'], 1):.4f} END")
    for c, name, cond, m in LEVELS:
        if c == comp:
            cond = cond.format(**sims)
            uu = u.get((c, name), DEFAULT_U[(c, name)])
            parts.append(f"WHEN {cond} THEN {_w(m, uu):.4f}")
    if disagree is not None:
        parts.append(f"ELSE {_w(disagree, 1):.4f}")
    else:
        parts.append("ELSE NULL")
    return "CASE " + " ".join(parts) + " END"


def scored_pairs_sql(u: dict | None = None) -> str:
    """``(a, b, score, corroborated)`` for the pairs of ``_open`` (see ``open_pairs_sql``)."""
    u = u or {}
    named = {k: k for k in SIMS}
    fn = _comparison("fn", u, DISAGREE["fn"], named)
    ln = _comparison("ln", u, DISAGREE["ln"], named)
    dob = _comparison("dob", u, DISAGREE["dob"], named)
    em = _comparison("em", u, DISAGREE["em"], named)
    ph = _comparison("ph", u, DISAGREE["ph"], named)
    tax = _comparison("tax", u, DISAGREE["tax"], named)
    addr = _comparison("addr", u, None, named)  # NULL: the street differs

    # first and last name given the other way round (one of them may also carry a typo):
    # only looked at when the straight comparison found little, and one bit weaker
    def cross(expr: str) -> str:  # compare l.fn with r.ln and l.ln with r.fn
        return re.sub(r"\br\.(fn|ln)\b", lambda m: "r." + ("ln" if m.group(1) == "fn" else "fn"), expr)

    swapped = (f"CASE WHEN l.fn <> r.fn AND l.ln <> r.ln AND (l.fn = r.ln OR l.ln = r.fn) THEN "
               f"({cross(_comparison('fn', u, DISAGREE['fn'], _RAW))}) "
               f"+ ({cross(_comparison('ln', u, DISAGREE['ln'], _RAW))}) - 1 END")
    loc = (f"CASE WHEN l.pc = r.pc THEN {_exact('pc')} "
           f"WHEN l.city = r.city THEN {_w(*CITY_ONLY):.4f} "
           f"WHEN l.pc IS NULL AND l.city IS NULL OR r.pc IS NULL AND r.city IS NULL THEN 0 ELSE NULL END")
    # place: street and locality together; a move changes both and counts once
    place = (f"CASE WHEN w_addr IS NULL AND w_loc IS NULL THEN {_w(DISAGREE['place'], 1):.4f} "
             "WHEN w_addr IS NULL THEN least(w_loc, 0) ELSE w_addr + greatest(coalesce(w_loc, 0), 0) END")

    def flat(expr: str) -> str:  # l.fn -> l_fn: the outer query reads the inner's columns
        return re.sub(r"\b([lr])\.(\w+)", r"\1_\2", expr)

    cols = ["fn", "ln", "dob", "dob_s", "em", "ph", "addr", "pc", "city", "tax",
            "fn_tf", "ln_tf", "dob_tf", "em_tf", "ph_tf", "addr_tf", "pc_tf", "tax_tf"]
    inner_cols = ", ".join(f"l.{c} AS l_{c}, r.{c} AS r_{c}" for c in cols)
    inner_sims = ", ".join(f"{v} AS {k}" for k, v in _RAW.items())
    return f"""
        SELECT a, b, greatest(w_fn + w_ln, coalesce(w_swap, -1e9)) + w_dob + w_em + w_ph + w_tax + {place} AS score,
               (w_dob > 0 OR w_em > 0 OR w_ph > 0 OR w_tax > 0 OR w_addr > 2) AS corroborated
        FROM (
            SELECT a, b, {flat(fn)} AS w_fn, {flat(ln)} AS w_ln, {flat(swapped)} AS w_swap, {flat(dob)} AS w_dob,
                   {flat(em)} AS w_em, {flat(ph)} AS w_ph, {flat(tax)} AS w_tax, {flat(addr)} AS w_addr, {flat(loc)} AS w_loc
            FROM (
                SELECT c.a, c.b, {inner_cols}, {inner_sims}
                FROM _open c JOIN _mrec l ON l.rid = c.a JOIN _mrec r ON r.rid = c.b
            )
        )"""


def open_pairs_sql() -> list[str]:
    """``_open``: candidate pairs whose records are still in different clusters.

    Built in explicit steps so the planner cannot turn ``cid <> cid`` into an
    inequality join over all records.
    """
    return [
        "CREATE OR REPLACE TEMP TABLE _open AS SELECT c.a, c.b, l.cid AS ca FROM _cand c JOIN _label l ON l.rid = c.a",
        "CREATE OR REPLACE TEMP TABLE _open AS SELECT o.a, o.b FROM _open o JOIN _label l ON l.rid = o.b "
        "WHERE l.cid <> o.ca",
    ]


def threshold_weight(settings: Probabilistic, records: int) -> float:
    """The match weight (bits) a pair needs to reach ``settings.threshold``.

    Prior: among the ``n(n-1)/2`` pairs about ``duplicate_share * n`` are matches.
    """
    n = max(records, 3)
    prior = min(0.5, 2 * settings.duplicate_share / (n - 1))
    p = settings.threshold
    return math.log2(p / (1 - p)) - math.log2(prior / (1 - prior))
