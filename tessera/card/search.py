"""The contact cards' search keys (``marts.contact_search``), for the web page's search.

Why a table: folding names and e-mails (lower case, no accents) is most of a search's
cost, and it is the same for every search of the day; computed once per run, a search
over a million cards is one scan of a short column. The select is shared with the web
page, which runs it inline when a warehouse has no such table yet.
"""

from __future__ import annotations

from tessera.engine import Engine, SqlStep, as_engine
from tessera.engine.steps import sql_file

SEARCH_TABLE = "marts.contact_search"
# the registry order of the Sendero seed: named people by surname and name, then e-mail
REGISTRY_ORDER = "named DESC, sort_key, sort_name, sort_email, customer_id"


# The card fields the search reads; a deployment may have switched some of them off.
SEARCHED = {"first_name": "VARCHAR", "last_name": "VARCHAR", "email": "VARCHAR",
            "birth_date": "DATE", "city": "VARCHAR", "erp_id": "VARCHAR", "tax_code": "VARCHAR",
            "gender": "VARCHAR", "mobile": "VARCHAR", "phone": "VARCHAR"}


def contact_search_select(missing: tuple[str, ...] | list[str] = ()) -> str:
    """The select of the search keys over ``marts.contact_cards`` (no ORDER BY); the
    ``missing`` card fields (switched off) are searched as empty."""
    sql = sql_file(__package__, "contact_search.sql")
    if missing:
        pad = ", ".join(f"CAST(NULL AS {SEARCHED[f]}) AS {f}" for f in missing)
        sql = sql.replace("FROM marts.contact_cards",
                          f"FROM (SELECT *, {pad} FROM marts.contact_cards)")
    return sql


def missing_search_fields(engine: Engine) -> list[str]:
    """The searched fields the card does not have (base properties switched off)."""
    have = {r[0] for r in as_engine(engine).rows(SqlStep(
        "card.card_columns", "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = 'marts' AND table_name = 'contact_cards'"))}
    return [f for f in SEARCHED if f not in have]


def build_contact_search(engine: Engine) -> dict:
    engine = as_engine(engine)
    select = contact_search_select(missing_search_fields(engine))
    rows = engine.replace_table(SEARCH_TABLE, SqlStep(
        "card.contact_search", f"SELECT * FROM ({select}) ORDER BY {REGISTRY_ORDER}"))
    return {"contacts": rows}
