"""Geographic lookups: countries and subdivisions from ISO 3166 (pycountry).

Sendero's import users had to replace every country, region and province with a
numeric id looked up in a sheet. Tessera's ids *are* the ISO codes, and ingestion also
accepts the labels people actually type: ``Italia``, ``Italy``, ``ITA``, ``380`` and
``it`` all become ``IT``; ``Milano``, ``mi`` and ``IT-MI`` all become the province
sigla ``MI``. A value that matches nothing is left as it is, for the contract to judge.

The key tables are built from pycountry once per process and handed to DuckDB, so the
replacement is one set-based UPDATE per field and file.
"""

from __future__ import annotations

import gettext
from functools import lru_cache

import duckdb
import pyarrow as pa
import pycountry

# Italian provinces and their equivalents: second-level subdivisions with a sigla.
_IT_PROVINCE_TYPES = {
    "Province", "Metropolitan city", "Free municipal consortium", "Autonomous province",
    "Decentralized regional entity",
}


def _translator(domain: str, language: str):
    try:
        return gettext.translation(domain, pycountry.LOCALES_DIR, languages=[language]).gettext
    except OSError:  # pragma: no cover - pycountry ships the locales
        return lambda s: s


def _key(text: str) -> str:
    return " ".join(text.strip().lower().split())


@lru_cache(maxsize=1)
def countries() -> list[dict]:
    """One row per ISO 3166-1 country: alpha2, alpha3, numeric, English and Italian name."""
    it = _translator("iso3166-1", "it")
    out = []
    for c in pycountry.countries:
        out.append({"alpha2": c.alpha_2, "alpha3": c.alpha_3, "numeric": c.numeric,
                    "name": c.name, "name_it": it(c.name),
                    "official_name": getattr(c, "official_name", "") or "",
                    "common_name": getattr(c, "common_name", "") or ""})
    return out


@lru_cache(maxsize=1)
def subdivisions() -> list[dict]:
    """Every ISO 3166-2 subdivision: code, country, name, type, parent code, sigla (IT)."""
    out = []
    for s in pycountry.subdivisions:
        local = s.code.split("-", 1)[1]
        out.append({"code": s.code, "country": s.country_code, "name": s.name, "type": s.type,
                    "parent": (f"{s.country_code}-{s.parent_code.split('-')[-1]}"
                               if s.parent_code else ""),
                    "sigla": local if (s.country_code == "IT" and s.type in _IT_PROVINCE_TYPES)
                    else ""})
    out.sort(key=lambda r: r["code"])
    return out


def _unique(pairs: list[tuple[str, str]]) -> pa.Table:
    """Keys that map to exactly one code (an ambiguous label is not translated)."""
    seen: dict[str, set[str]] = {}
    for k, v in pairs:
        if k:
            seen.setdefault(k, set()).add(v)
    keys = sorted(k for k, v in seen.items() if len(v) == 1)
    return pa.table({"key": pa.array(keys, pa.string()),
                     "code": pa.array([next(iter(seen[k])) for k in keys], pa.string())})


@lru_cache(maxsize=1)
def country_keys() -> pa.Table:
    pairs = []
    for c in countries():
        for text in (c["alpha2"], c["alpha3"], c["numeric"], c["name"], c["name_it"],
                     c["official_name"], c["common_name"]):
            pairs.append((_key(text), c["alpha2"]))
    return _unique(pairs)


@lru_cache(maxsize=1)
def province_keys() -> pa.Table:
    """Italian provinces: sigla, ISO code and name -> sigla (``MI``)."""
    pairs = []
    for s in subdivisions():
        if s["sigla"]:
            for text in (s["sigla"], s["code"], s["name"]):
                pairs.append((_key(text), s["sigla"]))
    return _unique(pairs)


KEY_TABLES = {"country": country_keys, "province": province_keys}


# --------------------------------------------------------------------------- #
# Settings tables (lookups.yaml): macro/micro values accepted as id or label
# --------------------------------------------------------------------------- #
def settings_keys(deployment, table: str, level: str) -> pa.Table:
    """``(id, key, macro)`` rows of one level of a settings table; keys are id and label."""
    lt = deployment.lookup_table(table)
    macro_id = {m.label.strip().lower(): m.id for m in lt.macro}
    ids, keys, macros = [], [], []
    for v in (lt.macro if level == "macro" else lt.micro):
        parent = None
        if level == "micro":
            parent = v.macro if isinstance(v.macro, int) else macro_id.get(str(v.macro).strip().lower())
        for key in {str(v.id), _key(v.label)}:
            ids.append(v.id)
            keys.append(key)
            macros.append(parent)
    return pa.table({"id": pa.array(ids, pa.int64()), "key": pa.array(keys, pa.string()),
                     "macro": pa.array(macros, pa.int64())})


def register_settings(con: duckdb.DuckDBPyConnection, deployment,
                      fields: dict[str, str]) -> dict[str, str]:
    """Register the key tables of the settings lookups used by ``fields``.

    Returns ``{field: view name}`` for the fields whose table level has values; a level
    the deployment left empty is not enforced (any value is accepted).
    """
    views = {}
    for field, ref in fields.items():
        table, level = ref.split(".", 1)
        keys = settings_keys(deployment, table, level)
        if keys.num_rows == 0:
            continue
        name = f"_lk_{table}_{level}"
        con.register(name, keys)
        views[field] = name
    return views
