"""The contact cards' search keys (``marts.contact_search``) and token index
(``marts.contact_search_tokens``), for the web page's search.

Why tables: folding names and e-mails (lower case, no accents) is most of a search's
cost, and it is the same for every search of the day. Even folded, a substring scan of a
million cards costs a second on the shared machine; the token index turns each search
word into a range scan of a sorted column (the snapshot publishes it in token order, so
Parquet's row-group statistics skip all but one or two groups), and the keys carry the
registry rank and the columns a result list shows, so a search never reads the cards.
The selects are shared with the web page, which runs them inline when a warehouse has
no such tables yet.
"""

from __future__ import annotations

from tessera.engine import Engine, SqlStep, as_engine
from tessera.engine.steps import sql_file

SEARCH_TABLE = "marts.contact_search"
TOKENS_TABLE = "marts.contact_search_tokens"
# the registry order of the Sendero seed: named people by surname and name, then e-mail
REGISTRY_ORDER = "named DESC, sort_key, sort_name, sort_email, customer_id"


# The card fields the search reads; a deployment may have switched some of them off.
SEARCHED = {"first_name": "VARCHAR", "last_name": "VARCHAR", "email": "VARCHAR",
            "birth_date": "DATE", "city": "VARCHAR", "erp_id": "VARCHAR", "tax_code": "VARCHAR",
            "gender": "VARCHAR", "mobile": "VARCHAR", "phone": "VARCHAR"}


def contact_search_select(missing: tuple[str, ...] | list[str] = ()) -> str:
    """The select of the search keys over ``marts.contact_cards`` (no ORDER BY), with
    ``search_rank``, the registry order; the ``missing`` card fields (switched off) are
    searched as empty."""
    sql = sql_file(__package__, "contact_search.sql")
    if missing:
        pad = ", ".join(f"CAST(NULL AS {SEARCHED[f]}) AS {f}" for f in missing)
        sql = sql.replace("FROM marts.contact_cards",
                          f"FROM (SELECT *, {pad} FROM marts.contact_cards)")
    sql = "\n".join(line for line in sql.splitlines() if not line.startswith("--"))
    return f"SELECT row_number() OVER (ORDER BY {REGISTRY_ORDER}) AS search_rank, * FROM ({sql}) AS k"


def contact_search_tokens_select(keys: str = SEARCH_TABLE) -> str:
    """The select of the token index over the search keys ``keys`` (a table, or a
    parenthesised select with an alias-free body), no ORDER BY."""
    return sql_file(__package__, "contact_search_tokens.sql").replace(f"FROM {SEARCH_TABLE}", f"FROM {keys}")


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
        "card.contact_search", f"SELECT * FROM ({select}) ORDER BY search_rank"))
    tokens = engine.replace_table(TOKENS_TABLE, SqlStep(
        "card.contact_search_tokens", f"SELECT * FROM ({contact_search_tokens_select()}) ORDER BY token"))
    return {"contacts": rows, "tokens": tokens}
