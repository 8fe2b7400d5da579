"""The identity model: EM-trained m, given-name variants, swapped names, split of a
protected component. Real DuckDB, real contact files through ingestion and staging
(``run`` from test_identity_rules), values asserted."""

from __future__ import annotations

import random

import duckdb
import numpy as np
import pandas as pd

from tessera.engine import as_engine

from tessera.identity import matching as M
from tessera.settings import Probabilistic

from test_identity_rules import run  # noqa: E402  (same folder, rootdir import mode)


def test_em_recovers_known_m_on_a_small_fixture():
    """Level patterns drawn from known m and u: EM (u fixed) finds m back."""
    rng = np.random.default_rng(7)
    true_m = {"fn": [0.8, 0.05, 0.1, 0.03, 0.02], "ln": [0.85, 0.1, 0.03, 0.02], "dob": [0.9, 0.06, 0.02, 0.02]}
    true_u = {"fn": [0.004, 0.001, 0.002, 0.01, 0.983], "ln": [0.003, 0.001, 0.006, 0.99],
              "dob": [0.0005, 0.002, 0.004, 0.9935]}
    levels = {c: [M.EXACT_LEVEL] + sorted(set(M.codes(c).values()) - {M.EXACT_LEVEL, M.ELSE}) + [M.ELSE]
              for c in true_m}
    frames = []
    for dist, n in ((true_m, 3000), (true_u, 60000)):
        frames.append(pd.DataFrame({f"g_{c}": rng.choice(levels[c], size=n, p=dist[c]) for c in dist}))
    df = pd.concat(frames, ignore_index=True)
    for c in M.COMPARISONS:
        if c not in true_m:
            df[f"g_{c}"] = 0
    df["mask"] = 1
    con = duckdb.connect()
    con.register("df", df)
    con.execute("CREATE TEMP TABLE _gam AS SELECT mask::UBIGINT AS mask, "
                + ", ".join(f"g_{c}::UTINYINT AS g_{c}" for c in M.COMPARISONS) + " FROM df")
    u = {(c, k): p for c in true_u for k, p in zip(levels[c], true_u[c])}
    m, info = M.estimate_m(con, Probabilistic(blocking=[["postcode"]]), u)
    assert len(info["sessions"]) == 1 and info["sessions"][0]["iterations"] < M.EM_MAX_ITER
    assert abs(info["sessions"][0]["match_share"] - 3000 / 63000) < 0.005
    for c in true_m:
        for k, p in zip(levels[c], true_m[c]):
            assert abs(m[(c, k)] - p) < 0.02, (c, k, m[(c, k)], p)
    # the comparisons without data keep their priors
    assert m[("em", M.EXACT_LEVEL)] == M.prior_m("em")[M.EXACT_LEVEL]


def _match_values(values: list[str], key: str):
    """A connection whose ``_mrec`` holds one record per value of match key ``key`` (rid 1..n),
    every other key empty: for checking one comparison's levels."""
    con = duckdb.connect()
    M.load_variants(con)
    rows = ", ".join(f"({i}, '{v}')" for i, v in enumerate(values, 1))
    con.execute(f"CREATE TEMP TABLE _rec AS SELECT * FROM (VALUES {rows}) t(rid, k_{key})")
    for col in ("first_name", "last_name", "email", "mobile", "phone", "address", "postcode", "city",
                "tax_code"):
        if col != key:
            con.execute(f"ALTER TABLE _rec ADD COLUMN k_{col} VARCHAR")
    con.execute("ALTER TABLE _rec ADD COLUMN k_birth_date DATE")
    as_engine(con).run(*M.prepare_sql())
    return con


def test_name_variant_level():
    con = _match_values(["bob", "robert", "brian"], "first_name")
    expr = M.level_sql("fn", M._RAW)
    got = dict(con.execute(f"SELECT r.fn, {expr} FROM _mrec l, _mrec r WHERE l.rid = 1 AND r.rid > 1").fetchall())
    assert got == {"robert": M.codes("fn")["variant"], "brian": M.ELSE}


PEOPLE = """
    N1,,Robert,Whitfield,,,,1980-05-02,77 Harbour Road,4101,Brisbane,
    N2,,Bob,Whitfield,bob.w@mail.au,,,1980-05-02,,4101,Brisbane,
    N3,,Brian,Whitfield,,,,1980-05-02,,4101,Brisbane,
    W1,,Mario,Cattaneo,,,,1969-12-21,8 Via Tasso,20121,Milano,
    W2,,Cattaneo,Mario,m.c@x.it,,,1969-12-21,8 via tasso,20121,Milano,
"""


def test_nickname_and_swapped_names_link(tmp_path):
    r = run(tmp_path, PEOPLE)
    ids, rule = r["ids"], r["rule"]
    assert ids["N1"] == ids["N2"] and rule["N2"] == "probabilistic"
    assert ids["N3"] != ids["N1"]  # another given name, same surname, birth date and town
    assert ids["W1"] == ids["W2"] and rule["W2"] == "probabilistic"


def test_conflicting_component_is_split_at_its_weakest_link(tmp_path):
    """A and C hold two ERP ids; B links to both: the stronger link (to A) is kept."""
    r = run(tmp_path, """
        A,ERP-1,Giuseppe,Mancuso,,,,1975-03-14,12 Via Garibaldi,20121,Milano,
        B,,Giuseppe,Mancuso,,,,1975-03-14,12 Via Garibaldi,20121,Milano,
        C,ERP-2,Giusepe,Mancuso,,,,1975-03-14,12 Via Garibaldi,20121,Milano,
    """)
    ids = r["ids"]
    assert ids["A"] == ids["B"] != ids["C"]
    refused = {(a, b): (rule, reason) for a, b, rule, reason in r["refused"]}
    assert refused[("B", "C")] == ("probabilistic", "split_conflicting_erp_id")
    assert refused[("A", "C")] == ("probabilistic", "conflicting_erp_id")
    assert ("A", "B") not in refused
    assert any(ev == "refused" and "split_conflicting_erp_id" in evidence for ev, _, evidence in r["log"])


def test_too_large_component_is_refused_whole(tmp_path):
    """Cutting an oversized chain to size would merge arbitrary records: it is refused whole."""
    rows = "\n".join(f"S{i},,Pia,Quarto{'abcde'[i]},shared@office.it,,,,,,," for i in range(5))
    r = run(tmp_path, rows, """
        max_cluster_size: 3
    """)
    ids = r["ids"]
    assert len({ids[f"S{i}"] for i in range(5)}) == 5
    email = sorted((a, b, reason) for a, b, rule, reason in r["refused"] if rule == "email")
    assert email == [(f"S{i}", "S0", "transitive_cluster_too_large") for i in range(1, 5)]


def test_em_trains_inside_resolve_and_links_the_duplicates(tmp_path):
    """600 people, each with a second record carrying a typo or a missing field: EM runs
    (enough pairs), every duplicate is found and no two people are merged."""
    firsts = ["Anna", "Marco", "Giulia", "Luca", "Sara", "Paolo", "Elena", "Davide", "Chiara", "Andrea",
              "Marta", "Stefano", "Laura", "Franco", "Irene", "Piero", "Nadia", "Bruno", "Carla", "Dario"]
    lasts = ["Rossi", "Bianchi", "Verdi", "Neri", "Gallo", "Conti", "Costa", "Fontana", "Moretti", "Greco",
             "Marini", "Serra", "Vitale", "Testa", "Ferri", "Caruso", "Rinaldi", "Lombardi", "Barbieri", "Bruno",
             "Ricci", "Romano", "Colombo", "Leone", "Longo", "Gatti", "Mancini", "Sala", "Villa", "Orlando"]
    rnd = random.Random(11)
    rows = []
    for i in range(600):
        fn, ln = rnd.choice(firsts), rnd.choice(lasts)
        dob = f"{rnd.randint(1940, 2000)}-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}"
        addr, pc = f"{rnd.randint(1, 200)} Via {rnd.choice(lasts)}", f"{rnd.randint(20100, 20160)}"
        rows.append(f"P{i}a,,{fn},{ln},,,,{dob},{addr},{pc},Milano,")
        if i % 3 == 0:    # a typo in the first name
            rows.append(f"P{i}b,,{fn[:-1]},{ln},,,,{dob},{addr},{pc},Milano,")
        elif i % 3 == 1:  # no address, day and month transposed where possible
            y, mo, d = dob.split("-")
            rows.append(f"P{i}b,,{fn},{ln},,,,{y}-{d}-{mo}," if int(d) <= 12
                        else f"P{i}b,,{fn},{ln},,,,{dob},,{pc},Milano,")
        else:             # surname with a typo, moved within the town
            rows.append(f"P{i}b,,{fn},{ln[0] + ln[2:]},,,,{dob},{2 + i % 90} Via Roma,{pc},Milano,")
    r = run(tmp_path, "\n".join(row if row.count(",") == 11 else row + ",,," for row in rows))
    ids = r["ids"]
    assert r["stats"]["em_sessions"], "EM must train on this volume"
    assert all(s["iterations"] < M.EM_MAX_ITER for s in r["stats"]["em_sessions"].values())
    found = sum(ids[f"P{i}a"] == ids[f"P{i}b"] for i in range(600))
    people = {ids[f"P{i}a"] for i in range(600)}
    assert len(people) == 600  # no two people merged
    assert found == 600


def test_address_levels_contained_and_alike():
    """A line holding the other (a street number alone) and a looser likeness are levels of
    their own, between 'similar' and disagreement (FEBRL duplicates: issue #21)."""
    con = _match_values(["37 sanford place", "37", "sanford place", "37 sanford street", "4 wallaby way",
                         "37 sanford place"], "address")
    expr = M.level_sql("addr", M._RAW)
    got = dict(con.execute(f"SELECT r.rid, {expr} FROM _mrec l, _mrec r WHERE l.rid = 1 AND r.rid > 1").fetchall())
    code = M.codes("addr")
    assert got == {2: code["contained"], 3: code["contained"], 4: code["alike"], 5: M.ELSE, 6: M.EXACT_LEVEL}
    # the new levels weigh in between: evidence for, less than a typo
    w = M._weights({(c, k): v for c in M.COMPARISONS for k, v in M.prior_m(c).items()}, M.DEFAULT_U)
    assert w[("addr", M.ELSE)] < 0 < w[("addr", code["alike"])] < w[("addr", code["typo"])]
    assert 0 < w[("addr", code["contained"])] < w[("addr", code["typo"])]


def test_match_prior_is_estimated_from_the_candidate_pairs():
    """1 000 pairs agreeing on everything among 10 000 candidates: the share found is about
    0.1, and more expected matches lower the bits a pair needs (issue #21)."""
    comps = M.COMPARISONS
    g = np.array([[M.EXACT_LEVEL] * len(comps), [M.ELSE] * len(comps)], dtype=np.int64)
    n = np.array([1000.0, 9000.0])
    m = {(c, k): v for c in comps for k, v in M.prior_m(c).items()}
    u = {(c, M.EXACT_LEVEL): 0.001 for c in comps} | {(c, M.ELSE): 0.99 for c in comps}
    share = M._candidate_match_share(g, n, m, u)
    assert abs(share - 0.1) < 0.01
    settings = Probabilistic()
    guessed = M.threshold_weight(settings, 100_000)
    assert M.threshold_weight(settings, 100_000, expected_matches=50_000) < guessed
    # kept within a factor of 10 of the configured guess either way
    assert M.threshold_weight(settings, 100_000, expected_matches=1e9) == \
        M.threshold_weight(settings, 100_000, expected_matches=100_000)


def test_rare_surname_outweighs_a_common_one():
    """Exact agreement is weighed by the value's term frequency: "Zanetti" shared by two
    records is more evidence than "Rossi" (issue #21)."""
    m = {(c, k): v for c in M.COMPARISONS for k, v in M.prior_m(c).items()}
    w = M._weights(m, M.DEFAULT_U)
    expr = M._weight_sql("ln", m, w)
    rare, common = duckdb.sql(f"SELECT {expr} FROM (VALUES ({M.EXACT_LEVEL}, 0.0001), ({M.EXACT_LEVEL}, 0.05)) "
                              "t(g_ln, ln_tf)").fetchall()
    assert rare[0] > common[0] + 5  # log2(0.05 / 0.0001) = 9 bits apart, less the cap
    # and never weaker than a near miss (rounded to 4 places in the SQL)
    assert common[0] >= round(max(v for (c, k), v in w.items() if c == "ln" and k not in (M.EXACT_LEVEL, M.ELSE)), 4)


def test_street_key_survives_a_typo_and_makes_a_candidate_pair():
    """``street`` (house number + first four letters of the street's name) blocks together
    two lines of one address that differ after the name's first letters: FEBRL's
    duplicates whose names and dates all changed met on nothing else (issue #21)."""
    from tessera.identity.resolve import KEY_COLUMNS

    lines = ["57 fincham crescent", "57 fincham cerscent", "via roma 12", "12 roma", "jervois street", "12",
             "58 fincham crescent"]
    con = duckdb.connect()
    con.execute("CREATE TABLE a (rid INTEGER, address_key VARCHAR)")
    con.executemany("INSERT INTO a VALUES (?, ?)", list(enumerate(lines, start=1)))
    keys = dict(con.execute(f"SELECT rid, {KEY_COLUMNS['street']} FROM a").fetchall())
    assert keys == {1: "57 finc", 2: "57 finc", 3: "12 roma", 4: "12 roma", 5: None, 6: None, 7: "58 finc"}
    # the default blocking has the rule, and it yields exactly the pairs that share the key
    settings = Probabilistic()
    assert ["street"] in settings.blocking
    only_street = Probabilistic(blocking=[["street"]])
    con.execute(f"CREATE TABLE _rec AS SELECT rid, {KEY_COLUMNS['street']} AS k_street FROM a")
    pairs = con.execute(f"SELECT a, b FROM ({M.candidate_pairs_sql(only_street)}) ORDER BY ALL").fetchall()
    assert pairs == [(1, 2), (3, 4)]
