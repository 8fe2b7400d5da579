"""What a feed delivers, as SQL: its output columns (renamed, hashed) and, for a diff
feed, the rows added, changed and removed since the last delivered day.

The state a diff is taken against is the warehouse itself: ``exports.<feed>`` keeps the
rows of every delivered day (before renaming and hashing), and
``exports.feed_deliveries`` says which days were delivered; both are written in the
same transaction, after the files. The base of day D is the
last delivered day before D, whatever the gap: a removal is sent even when days were
skipped, and re-exporting D gives the same diff (the base does not move).

Erased people are deleted from ``exports.<feed>`` by ``tessera forget``, so they cannot
be found in the base; they are added to the removed rows from ``ops.erasures`` (once per
feed, by customer id only). Opted-out and soft-deleted people drop out of the day's
selection and so come out as removed. No file says why a row was removed.
"""

from __future__ import annotations

import datetime as dt

from tessera.engine import SqlStep
from tessera.engine.dialect import hash64
from tessera.feeds.hashing import hashed_sql
from tessera.feeds.selection import feed_rows_step


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def output_exprs(feed, columns=None) -> list[str]:
    """``expr AS "out"`` for each output column (all, or those given)."""
    out = []
    for c in (feed.columns if columns is None else columns):
        expr = hashed_sql(c.hash, _q(c.field)) if c.hash else _q(c.field)
        out.append(f"{expr} AS {_q(c.out)}")
    return out


def removal_columns(feed) -> list:
    """The columns a removed row carries: the customer id and the hashed identifiers (an
    ad platform removes by hash); nothing that says why."""
    return [c for c in feed.columns if c.field == "customer_id" or c.hash]


def row_hash_sql(feed) -> str:
    """A 64-bit digest of the values a row delivers: a change in any of them changes it.
    Both days are hashed by the same engine in the same query, so the engine's own fast
    hash is enough (DuckDB ``hash``, Spark ``xxhash64``)."""
    return hash64(*(_q(f) for f in feed.source_fields))


def _hashed(feed, relation: str) -> str:
    cols = ", ".join(_q(f) for f in feed.source_fields)
    return f"SELECT {row_hash_sql(feed)} AS _row_hash, {cols} FROM {relation}"


def full_step(feed, day_rows: str) -> SqlStep:
    """The day's rows (the relation ``day_rows``) as the file carries them."""
    return SqlStep("feeds.full", f"SELECT {', '.join(output_exprs(feed))} FROM {day_rows} "
                                 "ORDER BY customer_id")


def base_day_step(feed, as_of: dt.date) -> SqlStep:
    """The last day this feed was delivered before ``as_of`` (NULL for a first delivery)."""
    return SqlStep("feeds.base_day", "SELECT max(as_of_date) FROM exports.feed_deliveries "
                                     "WHERE feed = ? AND as_of_date < ?", [feed.name, as_of])


def diff_step(feed, day_rows: str, as_of: dt.date, base: dt.date | None) -> SqlStep:
    """Every added, changed and removed row in one pass over the day's rows (the relation
    ``day_rows``) and the stored base day, with its ``_kind``; then the erased people this
    feed has not announced on another day (``removed``, the customer id only)."""
    fields = feed.source_fields
    cols = ", ".join(_q(f) for f in fields)
    c_cols = ", ".join(f"c.{_q(f)}" for f in fields)
    erased = ", ".join("e.customer_id" if f == "customer_id" else f"NULL AS {_q(f)}" for f in fields)
    return SqlStep("feeds.diff", f"""
        WITH cur AS ({_hashed(feed, day_rows)}),
             base AS ({_hashed(feed, f"exports.{feed.name} WHERE as_of_date = ?")})
        SELECT 'added' AS _kind, {cols} FROM cur
        WHERE customer_id NOT IN (SELECT customer_id FROM base)
        UNION ALL
        SELECT 'changed' AS _kind, {c_cols} FROM cur c JOIN base b ON b.customer_id = c.customer_id
        WHERE b._row_hash <> c._row_hash
        UNION ALL
        SELECT 'removed' AS _kind, {cols} FROM base
        WHERE customer_id NOT IN (SELECT customer_id FROM cur)
        UNION ALL
        SELECT DISTINCT 'removed' AS _kind, {erased} FROM ops.erasures e
        WHERE e.customer_id IS NOT NULL
          AND e.customer_id NOT IN (SELECT customer_id FROM base)
          AND e.customer_id NOT IN (SELECT customer_id FROM cur)
          AND NOT EXISTS (SELECT 1 FROM exports.feed_erasure_notices n
                          WHERE n.feed = ? AND n.erased_customer = e.customer_id
                            AND n.as_of_date <> ?)""", [base, feed.name, as_of])


def diff_file_step(feed, diff_table: str, kind: str) -> SqlStep:
    """One file of a diff, from the rows :func:`diff_step` produced (registered as
    ``diff_table``): added and changed rows whole; removed rows as the customer id and
    the hashed identifiers only (no reason, no name)."""
    cols = removal_columns(feed) if kind == "removed" else None
    return SqlStep(f"feeds.{kind}", f"SELECT {', '.join(output_exprs(feed, cols))} FROM {diff_table} "
                                    "WHERE _kind = ? ORDER BY customer_id", [kind])


def stored_rows_step(feed, as_of: dt.date, mart_columns: list[str] | None = None) -> SqlStep:
    """The day's selection as ``exports.<feed>`` stores it: the day, then the card fields."""
    sel = feed_rows_step(feed, as_of, mart_columns)
    return SqlStep("feeds.rows_of_day", f"SELECT CAST(? AS DATE) AS as_of_date, * FROM ({sel.sql})",
                   [as_of, *sel.params])
