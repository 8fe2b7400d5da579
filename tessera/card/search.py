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


def contact_search_select() -> str:
    """The select of the search keys over ``marts.contact_cards`` (no ORDER BY)."""
    return sql_file(__package__, "contact_search.sql")


def build_contact_search(engine: Engine) -> dict:
    engine = as_engine(engine)
    rows = engine.replace_table(SEARCH_TABLE, SqlStep(
        "card.contact_search", f"SELECT * FROM ({contact_search_select()}) ORDER BY {REGISTRY_ORDER}"))
    return {"contacts": rows}
