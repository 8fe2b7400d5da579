"""Probabilistic record matching (Fellegi-Sunter), as SQL over the identity temp tables.

Why Fellegi-Sunter with term frequencies: the evidence of "same surname" depends on the
surname. Two "Rossi" agreeing says little, two "Zanchettin" say a lot. Each comparison
adds ``log2(m / u)`` bits, where ``m`` is how often true duplicates agree at that level
and ``u`` how often two strangers do.

- ``u`` comes from the data itself: for exact agreement it is the value's own
  frequency (so placeholders such as 1900-01-01 weigh almost nothing); for the fuzzy
  levels it is measured on a seeded random sample of record pairs at every run
  (``estimate_u``), as Splink does, so the weights follow the deployment's data.
- ``m`` (how records of one person drift: typos, nicknames, moves) is estimated at
  every run by expectation-maximisation on the blocked candidate pairs
  (``estimate_m``), as Splink does, because fixed priors fitted to one data set do not
  carry to another. The documented priors (``LEVELS``, ``EXACT``, ``DISAGREE``) are the
  starting point and a weak Bayesian prior, and stay in force where there is nothing
  to learn from (a field no source fills, a tiny load).
- Each candidate pair gets its level per comparison once (``levels_table_sql``); EM
  then works on the few thousand distinct level patterns, and scoring reads the
  levels. Given-name variants (``data/name_variants.txt``) are a level of their own.
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
from pathlib import Path

import pyarrow as pa
import numpy as np

from tessera.engine import Engine, SqlStep, as_engine
from tessera.settings import Probabilistic

JW = "jaro_winkler_similarity"
VARIANTS_FILE = Path(__file__).parent / "data" / "name_variants.txt"

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

# The comparisons, each a column of levels per pair: 0 not compared (a side is empty),
# 1 exact, 2.. the fuzzy levels below in order, 8 "first name is an initial and agrees"
# (no evidence either way), 9 disagreement. ``loc`` is the locality: 1 same postcode,
# 2 same city only.
COMPARISONS = ["fn", "ln", "dob", "em", "ph", "tax", "addr", "loc"]
NULL, EXACT_LEVEL, INITIAL, ELSE = 0, 1, 8, 9
# Fuzzy levels, in order of strength: (comparison, level, condition, prior m). Conditions
# name similarities as {jw_fn}; the first level that holds (after exact) applies.
LEVELS = [
    ("fn", "variant", "list_has_any(l.fn_grp, r.fn_grp)", 0.05),
    ("fn", "typo", "{jw_fn} >= 0.92", 0.10),
    ("fn", "similar", "{jw_fn} >= 0.80", 0.06),
    ("ln", "typo", "{jw_ln} >= 0.92", 0.10),
    ("ln", "similar", "{jw_ln} >= 0.80", 0.03),
    # one digit off, or day and month transposed
    ("dob", "near", "({lev_dob} <= 1 "
                    "OR (month(l.dob) = day(r.dob) AND day(l.dob) = month(r.dob) AND year(l.dob) = year(r.dob)))",
     0.07),
    # two of year, month and day equal (a year off, a wrong day)
    ("dob", "partial", "((year(l.dob) = year(r.dob))::INT + (month(l.dob) = month(r.dob))::INT "
                       "+ (day(l.dob) = day(r.dob))::INT = 2)", 0.04),
    ("em", "typo", "{lev_em} <= 1", 0.05),
    # one digit wrong, or two digits swapped (two edits, same digits)
    ("ph", "typo", "({lev_ph} <= 1 OR ({lev_ph} = 2 AND list_sort(string_split(l.ph, '')) "
                   "= list_sort(string_split(r.ph, ''))))", 0.04),
    ("tax", "typo", "({lev_tax} <= 1 OR ({lev_tax} = 2 AND list_sort(string_split(l.tax, '')) "
                    "= list_sort(string_split(r.tax, ''))))", 0.05),
    ("addr", "typo", "{lev_addr} <= 2", 0.10),
    ("addr", "similar", "{jw_addr} >= 0.9", 0.05),
    # one line holds the other (a street number alone, a street without its number), or a
    # looser likeness: FEBRL-style lines with two typos, split or joined words
    ("addr", "contained", "(contains(l.addr, r.addr) OR contains(r.addr, l.addr))", 0.04),
    ("addr", "alike", "{jw_addr} >= 0.8", 0.04),
    ("loc", "city", "l.city = r.city", 0.10),
]
_RAW = {k: f"(CASE WHEN {guard} THEN {expr} END)" for k, (guard, expr) in SIMS.items()}
# Prior m of exact agreement, the floor of its u, and a cap in bits (a unique value is
# strong evidence, not infinite evidence). ``loc`` exact is the postcode, its TF column pc.
EXACT = {"tax": (0.9, 1e-6, 16.0), "fn": (0.80, 1e-4, 13.0), "ln": (0.85, 1e-4, 13.0), "dob": (0.88, 2e-5, 15.0),
         "em": (0.60, 1e-6, 14.0), "ph": (0.75, 1e-6, 14.0), "addr": (0.75, 1e-5, 12.0),
         "loc": (0.80, 1e-4, 8.0)}
TF_COLUMN = {"loc": "pc"}
# Prior m of disagreement (u is close to 1): how often one person's records differ
# outright. Two different tax codes (both passed their checksum) are strong evidence of
# two people. ``place``: street and locality both differ (a move).
DISAGREE = {"fn": 0.10, "ln": 0.05, "dob": 0.03, "em": 0.35, "ph": 0.2, "tax": 0.02, "addr": 0.2, "loc": 0.1,
            "place": 0.2}
INITIAL_AGREES = 0.0  # one side is only an initial and it agrees: no evidence either way
SWAP_PENALTY = 1.0  # bits taken off a pair whose first and last names are given the other way round
U_SAMPLE_PAIRS = 300_000
# A fuzzy level seen less than this often among strangers is still capped here: random
# pairs understate how alike the candidates of a block are.
U_FLOOR = 2e-4
# EM: iterations at most, convergence (largest change of an m), and the weight of the
# prior m in pseudo-pairs (a level seen among few matches stays near its prior instead
# of swinging to 0 or 1 on a handful of pairs).
EM_MAX_ITER = 40
EM_TOL = 1e-4
EM_PRIOR_PAIRS = 20.0
EM_MIN_PAIRS = 200
# No field is perfectly reliable: an estimated m never falls below these (disagreement,
# other levels). Without a floor, EM that saw no true pair disagree on the birth date
# would make a different birth date outright proof of two people.
M_FLOOR_ELSE = 0.01
M_FLOOR = 1e-3
# A comparison whose values are present on both sides of fewer random pairs than this
# keeps the fixed u and the prior m: too few to measure.
U_MIN_COMPARED = 100
# Which comparison a blocking key fixes: an EM session on a blocking rule's pairs does
# not estimate the comparisons its keys make agree by construction.
KEY_COMPARISON = {"names": ("fn", "ln"), "first_name": ("fn",), "last_name": ("ln",), "birth_date": ("dob",),
                  "email": ("em",), "mobile": ("ph",), "phone": ("ph",), "tax_code": ("tax",),
                  "address": ("addr",), "street": ("addr",), "postcode": ("loc",), "city": ("loc",)}


def _w(m: float, u: float) -> float:
    return math.log2(m / u)


def codes(comp: str) -> dict[str, int]:
    """Level name -> code of one comparison."""
    out = {"exact": EXACT_LEVEL, "else": ELSE}
    for i, name in enumerate([n for c, n, *_ in LEVELS if c == comp]):
        out[name] = 2 + i
    return out


def prior_m(comp: str) -> dict[int, float]:
    """Prior m of each level of a comparison (exact, fuzzy levels, disagreement), summing to 1."""
    raw = {EXACT_LEVEL: EXACT[comp][0], ELSE: DISAGREE[comp]}
    for c, name, _, m in LEVELS:
        if c == comp:
            raw[codes(comp)[name]] = m
    total = sum(raw.values())
    return {k: v / total for k, v in raw.items()}


def load_variants(engine: Engine, path: Path = VARIANTS_FILE) -> int:
    """``_nick(name, grp)``: the given-name variant groups (see ``data/name_variants.txt``)."""
    engine = as_engine(engine)
    names, groups = [], []
    for grp, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        line = line.strip()
        if line and not line.startswith("#"):
            for n in line.split(","):
                if n.strip():
                    names.append(n.strip())
                    groups.append(grp)
    engine.register_arrow("_nick_file", pa.table({"name": pa.array(names, pa.string()),
                                                  "grp": pa.array(groups, pa.int32())}))
    try:
        engine.run(SqlStep("identity.name_variants",
                           "CREATE OR REPLACE TEMP TABLE _nick AS SELECT name, grp FROM _nick_file"))
    finally:
        engine.unregister("_nick_file")
    return len(names)


TF_COLUMNS = ["fn", "ln", "dob", "em", "ph", "addr", "pc", "tax"]


def prepare_sql(stored_tf: str | None = None) -> list[SqlStep]:
    """``_mrec``: the compared values of each record with their term frequencies.

    Needs ``_nick`` (``load_variants``): ``fn_grp`` lists the variant groups of the
    first name, so that two names of one group meet at the "variant" level. With
    ``stored_tf`` (a table ``(col, h, tf)`` written by :func:`tf_table_sql` when the
    model was fitted) the frequencies are the fitted ones, keyed by the value's hash, and
    a value unseen then counts as seen once (the row with ``h`` NULL): a pair's weight
    then reads its two records only, which is what lets identity run incrementally.
    """
    cols = TF_COLUMNS
    stmts = ["""
        CREATE OR REPLACE TEMP TABLE _mval AS
        SELECT rid, k_first_name AS fn, k_last_name AS ln, k_birth_date AS dob,
               k_email AS em, nullif(regexp_replace(coalesce(k_mobile, k_phone), '[^0-9]', '', 'g'), '') AS ph,
               k_address AS addr, k_postcode AS pc, k_city AS city, k_tax_code AS tax, CAST(k_birth_date AS VARCHAR) AS dob_s
        FROM _rec"""]
    # term frequencies by GROUP BY and hash join: cheaper than one window per column
    if stored_tf:
        tf_joins = " ".join(
            f"LEFT JOIN (SELECT h, tf AS {c}_tf FROM {stored_tf} WHERE col = '{c}' AND h IS NOT NULL) t_{c} "
            f"ON t_{c}.h = hash(v.{c}) "
            f"LEFT JOIN (SELECT tf AS {c}_tf FROM {stored_tf} WHERE col = '{c}' AND h IS NULL) n_{c} ON TRUE"
            for c in cols)
        tf_cols = ", ".join(f"CASE WHEN v.{c} IS NOT NULL THEN coalesce(t_{c}.{c}_tf, n_{c}.{c}_tf) END AS {c}_tf"
                            for c in cols)
    else:
        tf_joins = " ".join(
            f"LEFT JOIN (SELECT {c}, count(*) / sum(count(*)) OVER () AS {c}_tf FROM _mval "
            f"WHERE {c} IS NOT NULL GROUP BY {c}) t_{c} ON t_{c}.{c} = v.{c}" for c in cols)
        tf_cols = ", ".join(f"t_{c}.{c}_tf" for c in cols)
    stmts.append(f"""
        CREATE OR REPLACE TEMP TABLE _mrec AS
        SELECT v.*, {tf_cols}, g.fn_grp FROM _mval v {tf_joins}
        LEFT JOIN (SELECT name, list(grp ORDER BY grp) AS fn_grp FROM _nick GROUP BY name) g ON g.name = v.fn""")
    stmts.append("DROP TABLE IF EXISTS _mval")
    return [SqlStep(f"identity.match_values[{i}]", sql) for i, sql in enumerate(stmts)]


def tf_table_sql() -> str:
    """The term frequencies of ``_mrec`` as ``(col, h, tf)`` rows, to store with a fitted model.

    Keyed by the value's hash, so the stored model holds no personal value; the row with
    ``h`` NULL is the frequency of a value seen once (for values the fit never saw).
    """
    parts = []
    for c in TF_COLUMNS:
        parts.append(f"SELECT '{c}' AS col, hash({c}) AS h, max({c}_tf) AS tf FROM _mrec "
                     f"WHERE {c} IS NOT NULL GROUP BY ALL")
        parts.append(f"SELECT '{c}', NULL, 1.0 / greatest(count({c}), 1) FROM _mrec")
    return " UNION ALL ".join(parts)


def level_sql(comp: str, sims: dict) -> str:
    """CASE expression of one comparison's level code (see ``COMPARISONS``)."""
    if comp == "loc":
        parts = ["WHEN (l.pc IS NULL AND l.city IS NULL) OR (r.pc IS NULL AND r.city IS NULL) THEN 0",
                 f"WHEN l.pc = r.pc THEN {EXACT_LEVEL}"]
    else:
        parts = [f"WHEN l.{comp} IS NULL OR r.{comp} IS NULL THEN 0", f"WHEN l.{comp} = r.{comp} THEN {EXACT_LEVEL}"]
    if comp == "fn":
        parts.append(f"WHEN length(l.fn) = 1 OR length(r.fn) = 1 THEN CASE WHEN left(l.fn, 1) = left(r.fn, 1) "
                     f"THEN {INITIAL} ELSE {ELSE} END")
    code = codes(comp)
    for c, name, cond, _ in LEVELS:
        if c == comp:
            parts.append(f"WHEN {cond.format(**sims)} THEN {code[name]}")
    parts.append(f"ELSE {ELSE}")
    return "CASE " + " ".join(parts) + " END"


def _cross(expr: str) -> str:
    """Compare l.fn with r.ln and l.ln with r.fn (surnames have no variant groups)."""
    expr = expr.replace("r.fn_grp", "NULL::INTEGER[]")
    return re.sub(r"\br\.(fn|ln)\b", lambda m: "r." + ("ln" if m.group(1) == "fn" else "fn"), expr)


SWAP_SQL = "l.fn <> r.fn AND l.ln <> r.ln AND (l.fn = r.ln OR l.ln = r.fn)"


def _flat(expr: str) -> str:  # l.fn -> l_fn: the outer query reads the inner's columns
    return re.sub(r"\b([lr])\.(\w+)", r"\1_\2", expr)


def _level_columns(sims: dict) -> str:
    """``g_<comp>`` level columns and ``swapped``, in terms of ``l.`` / ``r.`` and ``sims``.

    First and last name given the other way round (one of them may also carry a typo)
    are compared crosswise: their levels replace the straight ones, and ``swapped`` takes
    ``SWAP_PENALTY`` off the score.
    """
    cols = []
    for comp in COMPARISONS:
        expr = level_sql(comp, sims)
        if comp in ("fn", "ln"):
            expr = f"CASE WHEN {SWAP_SQL} THEN {_cross(level_sql(comp, _RAW))} ELSE {expr} END"
        cols.append(f"({expr})::UTINYINT AS g_{comp}")
    cols.append(f"coalesce({SWAP_SQL}, false) AS swapped")
    return ", ".join(cols)


def estimate_u(engine: Engine, pairs: int = U_SAMPLE_PAIRS, seed: float = 0.42) -> dict:
    """Share of random record pairs at each level of each comparison: ``{(comp, code): u}``.

    Measured on a seeded sample of ``pairs`` random pairs of ``_mrec``, so the weights
    reflect the deployment's data (how alike its strangers' names are). Shares are over
    the pairs where both sides have a value. Levels never seen in the sample get
    ``1 / sample``; fuzzy levels at least ``U_FLOOR``. Returns ``{}`` on tiny data.
    """
    engine = as_engine(engine)
    n = engine.scalar(SqlStep("identity.u.records", "SELECT count(*) FROM _mrec"))
    if n < 50:
        return {}
    # The sample is drawn here, not by the engine's random(): the same seed then gives
    # the same pairs on DuckDB and on Spark, so both engines weigh evidence alike.
    rng = np.random.default_rng(int(seed * 1_000_000))
    a = rng.integers(1, n + 1, size=int(pairs), dtype=np.int64)
    b = rng.integers(1, n + 1, size=int(pairs), dtype=np.int64)
    engine.register_arrow("_usample", pa.table({"a": np.minimum(a, b), "b": np.maximum(a, b)}))
    try:
        engine.run(SqlStep("identity.u.pairs", """
            CREATE OR REPLACE TEMP TABLE _upairs AS
            SELECT DISTINCT a, b FROM _usample WHERE a <> b"""))
    finally:
        engine.unregister("_usample")
    counts = []
    for c in COMPARISONS:
        counts.append(f"count(*) FILTER (WHERE g_{c} NOT IN (0, {INITIAL})) AS \"{c}_n\"")
        counts += [f"count(*) FILTER (WHERE g_{c} = {k}) AS \"{c}_{k}\"" for k in sorted(set(codes(c).values()))]
    counts = ", ".join(counts)
    vals = {k: v[0] for k, v in engine.columns(SqlStep("identity.u.levels", f"""
        SELECT {counts} FROM (
            SELECT {_level_columns(_RAW)} FROM _upairs p JOIN _mrec l ON l.rid = p.a JOIN _mrec r ON r.rid = p.b)
    """)).items()}
    out = {}
    for c in COMPARISONS:
        total = vals[f"{c}_n"]
        if total < U_MIN_COMPARED:
            continue
        for k in sorted(set(codes(c).values())):
            share = max(vals[f"{c}_{k}"] / total, 1 / total)
            if k not in (EXACT_LEVEL, ELSE):
                share = max(share, U_FLOOR)
            out[(c, k)] = share
    engine.run(SqlStep("identity.u.drop", "DROP TABLE IF EXISTS _upairs"))
    return out


# Fixed u of the fuzzy levels when the data are too few to measure (tests, tiny loads).
DEFAULT_U = {("fn", "variant"): 0.002, ("fn", "typo"): 0.005, ("fn", "similar"): 0.03, ("ln", "typo"): 0.002,
             ("ln", "similar"): 0.03, ("dob", "near"): 0.002, ("dob", "partial"): 0.002, ("em", "typo"): 1e-4,
             ("ph", "typo"): 1e-4, ("tax", "typo"): 1e-4, ("addr", "typo"): 5e-4, ("addr", "similar"): 0.01,
             ("addr", "contained"): 0.002, ("addr", "alike"): 0.01,
             ("loc", "city"): 0.03}


def candidate_pairs_sql(settings: Probabilistic, oversized: str | None = None) -> str:
    """Candidate pairs ``(a, b, mask)``, ``a < b``: equal on every key of some blocking rule.

    ``mask`` has bit ``i`` set when the pair shares the keys of blocking rule ``i`` (EM
    trains on each rule's pairs apart; rules past the 63rd block but do not train). Blocks with more than ``max_block_size`` records
    are skipped: their pairs would be quadratic, and a key shared by that many records is
    not evidence of anything. ``oversized`` names a table ``(rule, h)`` of the blocks that
    are too large over every record, for a run over a subset of them (incremental).
    """
    parts = []
    for i, keys in enumerate(settings.blocking):
        cols = ", ".join(f"k_{k}" for k in keys)
        present = " AND ".join(f"k_{k} IS NOT NULL" for k in keys)
        # Records are grouped by a hash of the key set: a collision can only add a
        # candidate (which is then scored), never lose one.
        blk = f"(SELECT rid, hash({cols}) AS h FROM _rec WHERE {present})"
        skip = f" AND l.h NOT IN (SELECT h FROM {oversized} WHERE rule = {i})" if oversized else ""
        parts.append(f"""
            SELECT l.rid AS a, r.rid AS b, {1 << i if i < 63 else 0}::BIGINT AS bit
            FROM {blk} l JOIN {blk} r ON l.h = r.h AND l.rid < r.rid
            WHERE l.h IN (SELECT h FROM {blk} GROUP BY h
                          HAVING count(*) BETWEEN 2 AND {int(settings.max_block_size)}){skip}""")
    return "SELECT a, b, bit_or(bit) AS mask FROM (" + "\nUNION ALL\n".join(parts) + ") GROUP BY a, b"




def levels_table_sql() -> str:
    """``_gam``: every candidate pair of ``_cand`` with its level per comparison.

    The similarities are computed once per pair here, for training and scoring alike.
    The table is narrow (ids, rule mask, one byte per level): it holds every candidate
    pair, millions at 1 M records.
    """
    cols = ["fn", "ln", "dob", "dob_s", "em", "ph", "addr", "pc", "city", "tax", "fn_grp"]
    inner_cols = ", ".join(f"l.{c} AS l_{c}, r.{c} AS r_{c}" for c in cols)
    inner_sims = ", ".join(f"{v} AS {k}" for k, v in _RAW.items())
    named = {k: k for k in SIMS}
    return f"""
        SELECT a, b, mask, {_flat(_level_columns(named))}
        FROM (
            SELECT c.a, c.b, c.mask, {inner_cols}, {inner_sims}
            FROM _cand c JOIN _mrec l ON l.rid = c.a JOIN _mrec r ON r.rid = c.b
        )"""


def _em_session(g: np.ndarray, n: np.ndarray, comps: list[int], m: list[dict], u: list[dict],
                prior: list[dict], lam: float = 0.05) -> tuple[list[dict], float, int]:
    """Expectation-maximisation of ``m`` (and the match share) on one set of level patterns.

    ``g``: patterns x comparisons level codes; ``n``: pairs per pattern. Only the
    comparisons ``comps`` take part; ``u`` stays fixed (measured on random pairs), as in
    Splink. Each m is a posterior mean with ``EM_PRIOR_PAIRS`` pseudo-pairs at its prior.
    """
    m = [dict(x) for x in m]
    it = 0
    for it in range(1, EM_MAX_ITER + 1):
        llr = np.zeros(len(n))
        for c in comps:
            for k, mk in m[c].items():
                sel = g[:, c] == k
                llr[sel] += math.log(mk / u[c][k])
        logit = np.clip(llr + math.log(lam / (1 - lam)), -60, 60)
        p = 1 / (1 + np.exp(-logit))
        w = p * n
        change = 0.0
        for c in comps:
            active = np.isin(g[:, c], list(m[c]))
            denom = w[active].sum() + EM_PRIOR_PAIRS
            for k in m[c]:
                new = (w[g[:, c] == k].sum() + EM_PRIOR_PAIRS * prior[c][k]) / denom
                change = max(change, abs(new - m[c][k]))
                m[c][k] = new
        lam = float(min(max(w.sum() / n.sum(), 1e-6), 0.999))
        if change < EM_TOL:
            break
    return m, lam, it


def estimate_m(engine: Engine, settings: Probabilistic, u: dict) -> tuple[dict, dict]:
    """``m`` of every level by EM on the candidate pairs of ``_gam``, one session per blocking rule.

    The pairs of a blocking rule agree on its keys by construction, so a session does
    not estimate the comparisons of those keys; each m is the mean over the sessions
    that estimated it, and keeps its prior where none did (or the data are too few).
    Returns ``{(comp, code): m}`` and a summary (sessions, iterations, match shares).
    """
    priors = [prior_m(c) for c in COMPARISONS]
    out = {(c, k): v for i, c in enumerate(COMPARISONS) for k, v in priors[i].items()}
    info: dict = {"sessions": []}
    if not u:
        return out, info
    gcols = ", ".join(f"g_{c}" for c in COMPARISONS)
    rows = as_engine(engine).columns(SqlStep(
        "identity.m.patterns", f"SELECT mask, {gcols}, count(*) AS pairs FROM _gam GROUP BY ALL ORDER BY ALL"))
    masks = np.asarray(rows["mask"], dtype=np.uint64)
    g = np.stack([np.asarray(rows[f"g_{c}"], dtype=np.int64) for c in COMPARISONS], axis=1)
    n = np.asarray(rows["pairs"], dtype=np.float64)
    uu = [{k: u.get((c, k), 1.0) for k in priors[i]} for i, c in enumerate(COMPARISONS)]
    measured = {c for c in COMPARISONS if (c, EXACT_LEVEL) in u}
    sums: dict = {}
    for r, keys in enumerate(settings.blocking[:63]):
        sel = (masks & np.uint64(1 << r)) != 0
        if n[sel].sum() < EM_MIN_PAIRS:
            continue
        fixed = {c for k in keys for c in KEY_COMPARISON.get(k, ())}
        comps = [i for i, c in enumerate(COMPARISONS) if c not in fixed and c in measured]
        m, lam, iters = _em_session(g[sel], n[sel], comps, priors, uu, priors)
        info["sessions"].append({"blocking": "+".join(keys), "pairs": int(n[sel].sum()), "iterations": iters,
                                 "match_share": round(lam, 4)})
        for i in comps:
            for k, v in m[i].items():
                sums.setdefault((COMPARISONS[i], k), []).append(v)
    for key, vals in sums.items():
        out[key] = max(float(np.mean(vals)), M_FLOOR_ELSE if key[1] == ELSE else M_FLOOR)
    info["candidate_pairs"] = int(n.sum())
    info["candidate_match_share"] = _candidate_match_share(g, n, out, u)
    return out, info


def _candidate_match_share(g: np.ndarray, n: np.ndarray, m: dict, u: dict) -> float:
    """The share of candidate pairs that are matches, with ``m`` and ``u`` fixed.

    The fixed point of "the share is the mean posterior of the pairs under it", over every
    candidate pair (all blocking rules together): with the pairs outside blocking taken
    as non-matches, ``share x candidates`` estimates the matches among all pairs, so the
    prior of a match comes from the data (Splink's lambda) instead of a configured guess.
    """
    llr = np.zeros(len(n))
    for i, c in enumerate(COMPARISONS):
        names = {v: k for k, v in codes(c).items()}
        for k, name in names.items():
            if (c, k) not in m:
                continue
            uu = u.get((c, k)) or (EXACT[c][1] if k == EXACT_LEVEL else DEFAULT_U.get((c, name), 1.0))
            llr[g[:, i] == k] += math.log(m[(c, k)] / max(uu, EXACT[c][1]))
    lam = 0.05
    for _ in range(EM_MAX_ITER * 2):
        p = 1 / (1 + np.exp(-np.clip(llr + math.log(lam / (1 - lam)), -60, 60)))
        new = float(min(max((p * n).sum() / n.sum(), 1e-6), 0.999))
        if abs(new - lam) < 1e-6:
            return new
        lam = new
    return lam


def _weights(m: dict, u: dict) -> dict:
    """Bits of each non-exact level; a fuzzy level never weighs less than disagreement."""
    w = {}
    for c in COMPARISONS:
        names = {v: k for k, v in codes(c).items()}
        u_else = u.get((c, ELSE), 1.0)
        w_else = _w(m[(c, ELSE)], u_else)
        w[(c, ELSE)] = w_else
        for k, name in names.items():
            if k in (EXACT_LEVEL, ELSE):
                continue
            uu = u.get((c, k), DEFAULT_U[(c, name)])
            w[(c, k)] = max(_w(m[(c, k)], uu), w_else)
    return w


def _weight_sql(comp: str, m: dict, w: dict, else_null: bool = False) -> str:
    """CASE of one comparison's weight from its level: exact by term frequency, others fixed."""
    mx, floor, cap = EXACT[comp]
    tf = TF_COLUMN.get(comp, comp) + "_tf"
    # exact agreement is never weaker evidence than a near miss, however common the value
    fuzzy = [w[(comp, k)] for k in set(codes(comp).values()) - {EXACT_LEVEL, ELSE}]
    exact = f"least(log2({m[(comp, EXACT_LEVEL)]} / greatest({tf}, {floor})), {cap})"
    if fuzzy:
        exact = f"greatest({exact}, {max(fuzzy):.4f})"
    parts = ["WHEN 0 THEN 0", f"WHEN {EXACT_LEVEL} THEN {exact}"]
    if comp == "fn":
        parts.append(f"WHEN {INITIAL} THEN {INITIAL_AGREES}")
    for k in sorted(set(codes(comp).values()) - {EXACT_LEVEL, ELSE}):
        parts.append(f"WHEN {k} THEN {w[(comp, k)]:.4f}")
    parts.append(f"WHEN {ELSE} THEN {'NULL' if else_null else f'{w[(comp, ELSE)]:.4f}'}")
    return f"CASE g_{comp} " + " ".join(parts) + " END"


def scored_pairs_sql(m: dict | None = None, u: dict | None = None, detail: bool = False) -> str:
    """``(a, b, score, corroborated)`` for the pairs of ``_open`` (see ``open_pairs_sql``).

    With ``detail``, also each comparison's level (``g_<comp>``) and weight (``w_<comp>``,
    NULL for a street or locality disagreement, which count through ``place``), the
    street-and-locality weight ``place`` and ``swapped``: what ``tessera identity
    explain`` shows an analyst.
    """
    u = u or {}
    m = m or {(c, k): v for c in COMPARISONS for k, v in prior_m(c).items()}
    w = _weights(m, u)
    parts = {c: _weight_sql(c, m, w, else_null=c in ("addr", "loc")) for c in COMPARISONS}
    place_dis = _w(DISAGREE["place"], 1)  # a prior: street and locality are not one comparison in EM
    # place: street and locality together; a move changes both and counts once
    place = (f"CASE WHEN w_addr IS NULL AND w_loc IS NULL THEN {place_dis:.4f} "
             "WHEN w_addr IS NULL THEN least(w_loc, 0) ELSE w_addr + greatest(coalesce(w_loc, 0), 0) END")
    extra = levels = ""
    if detail:
        levels = "".join(f", o.g_{c}" for c in COMPARISONS)
        extra = (", swapped, " + ", ".join(f"g_{c}, w_{c}" for c in COMPARISONS) + f", {place} AS place")
    return f"""
        SELECT a, b, w_fn + w_ln - CASE WHEN swapped THEN {SWAP_PENALTY} ELSE 0 END
                     + w_dob + w_em + w_ph + w_tax + {place} AS score,
               (w_dob > 0 OR w_em > 0 OR w_ph > 0 OR w_tax > 0 OR w_addr > 2) AS corroborated{extra}
        FROM (
            SELECT o.a, o.b, o.swapped{levels}, {", ".join(f"{parts[c]} AS w_{c}" for c in COMPARISONS)}
            FROM _open o JOIN _mrec l ON l.rid = o.a  -- term frequencies of the exact levels
        )"""


def model_table(m: dict, u: dict, threshold_bits: float) -> dict[str, list]:
    """The trained model as columns (comparison, level, code, m, u, weight_bits).

    Exact levels have no fixed weight (it comes from the value's term frequency); the
    row ``threshold`` holds the bits a pair needed in this run.
    """
    w = _weights(m, u)
    cols: dict[str, list] = {k: [] for k in ("comparison", "level", "code", "m", "u", "weight_bits")}
    for c in COMPARISONS:
        for name, k in sorted(codes(c).items(), key=lambda x: x[1]):
            cols["comparison"].append(c)
            cols["level"].append(name)
            cols["code"].append(k)
            cols["m"].append(m.get((c, k)))
            cols["u"].append(u.get((c, k), DEFAULT_U.get((c, name))))
            cols["weight_bits"].append(None if k == EXACT_LEVEL else w[(c, k)])
    for key, val in (("comparison", "threshold"), ("level", "match"), ("code", None), ("m", None),
                     ("u", None), ("weight_bits", threshold_bits)):
        cols[key].append(val)
    return cols


def open_pairs_sql() -> list[SqlStep]:
    """``_open``: the pairs of ``_gam`` whose records are still in different clusters.

    Built in explicit steps so the planner cannot turn ``cid <> cid`` into an
    inequality join over all records.
    """
    return [
        SqlStep("identity.open_pairs", "CREATE OR REPLACE TEMP TABLE _open AS "
                "SELECT g.*, l.cid AS ca FROM _gam g JOIN _label l ON l.rid = g.a"),
        SqlStep("identity.open_pairs.apart", "CREATE OR REPLACE TEMP TABLE _open AS "
                "SELECT o.* EXCLUDE (ca) FROM _open o JOIN _label l ON l.rid = o.b WHERE l.cid <> o.ca"),
    ]


def threshold_weight(settings: Probabilistic, records: int, expected_matches: float | None = None) -> float:
    """The match weight (bits) a pair needs to reach ``settings.threshold``.

    Prior: among the ``n(n-1)/2`` pairs, ``expected_matches`` are matches when the model
    estimated it from the candidate pairs (:func:`_candidate_match_share`), else about
    ``duplicate_share * n``. The estimate is kept within a factor of 10 of the configured
    guess either way, so a bad sample cannot open or close the gate wholesale.
    """
    n = max(records, 3)
    guess = settings.duplicate_share * n
    matches = guess if not expected_matches else min(max(expected_matches, guess / 10), guess * 10)
    prior = min(0.5, 2 * matches / (n * (n - 1)))
    p = settings.threshold
    return math.log2(p / (1 - p)) - math.log2(prior / (1 - prior))
