"""The Python side of the Spark mappings against DuckDB itself, value by value (no Spark
needed): accents, Jaro-Winkler, the suppression HMAC, strftime formats."""

from __future__ import annotations

import random

import duckdb
import pytest
from faker import Faker

from tessera.engine.spark_functions import (jaro_winkler_many, strftime_to_java, strip_accents_many,
                                            suppression_hmac)
from tessera.privacy.suppression import install_hmac

pytestmark = pytest.mark.spark


def _names(n: int) -> list[str]:
    out = []
    for locale in ("fr_FR", "de_DE", "es_ES", "pl_PL", "cs_CZ", "vi_VN", "tr_TR", "ko_KR", "el_GR"):
        fake = Faker(locale)
        fake.seed_instance(17)
        out += [fake.name() for _ in range(n // 9)] + [fake.street_address() for _ in range(n // 18)]
    return out + ["", " ", "Ø ß æ œ Ł đ", "e\u0301", "ﬁancé", "Ångström", "naïve café"]


def test_strip_accents_is_duckdbs():
    values = _names(300)
    con = duckdb.connect()
    duck = [r[0] for r in con.execute("SELECT strip_accents(v) FROM unnest($v) t(v)", {"v": values}).fetchall()]
    assert strip_accents_many(values) == duck
    assert strip_accents_many([None]) == [None]


def test_jaro_winkler_is_duckdbs_on_name_and_address_pairs():
    values = _names(300)
    rng = random.Random(5)
    pairs = [(a, rng.choice(values)) for a in values]
    # near pairs too: one edit, a swap, a prefix, both empty
    pairs += [(a, a[:-1] + "x") for a in values[:60] if a] + [(a, a[1:] + a[:1]) for a in values[:60]]
    pairs += [("", ""), ("a", ""), ("martha", "marhta"), ("dwayne", "duane")]
    con = duckdb.connect()
    duck = [r[0] for r in con.execute(
        "SELECT jaro_winkler_similarity(a, b) FROM (SELECT unnest($a) a, unnest($b) b)",
        {"a": [a for a, _ in pairs], "b": [b for _, b in pairs]}).fetchall()]
    ours = jaro_winkler_many([a for a, _ in pairs], [b for _, b in pairs])
    assert len(pairs) > 300
    assert [round(float(x), 12) for x in ours] == [round(x, 12) for x in duck]


def test_hmac_is_the_duckdb_macros():
    con = duckdb.connect()
    key = "tests-only-suppression-key"
    install_hmac(con, key)
    values = ["a@example.com", "", "Lucía", "+33612345678", "x" * 200]
    duck = [r[0] for r in con.execute("SELECT tessera_hmac(v) FROM unnest($v) t(v)", {"v": values}).fetchall()]
    assert [suppression_hmac(key, v) for v in values] == duck
    # a key longer than the SHA-256 block is hashed first, on both sides
    long_key = "k" * 100
    install_hmac(con, long_key)
    assert suppression_hmac(long_key, "a") == con.execute("SELECT tessera_hmac('a')").fetchone()[0]


@pytest.mark.parametrize("fmt, parse, write", [
    ("%Y-%m-%d", "yyyy-M-d", "yyyy-MM-dd"),
    ("%d/%m/%Y %H:%M:%S", "d/M/yyyy H:m:s", "dd/MM/yyyy HH:mm:ss"),
    ("%Y%m%d", "yyyyMMdd", "yyyyMMdd"),
    ("%Y-%m-%dT%H:%M:%S.%f", "yyyy-M-d'T'H:m:s.SSSSSS", "yyyy-MM-dd'T'HH:mm:ss.SSSSSS"),
    ("%d %b %Y", "d MMM yyyy", "dd MMM yyyy"),
])
def test_strftime_formats_as_spark_patterns(fmt, parse, write):
    assert strftime_to_java(fmt, parsing=True) == parse
    assert strftime_to_java(fmt, parsing=False) == write
