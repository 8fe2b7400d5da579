"""What a feed delivers, as SQL: its output columns (renamed, hashed) and, for a diff
feed, the rows added, changed and removed since the last delivered day.

The state a diff is taken against is the warehouse itself: ``exports.<feed>`` keeps the
rows of every delivered day (before renaming and hashing), and
``exports.feed_deliveries`` says which days were delivered. The base of day D is the
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
    """A digest of the values a row delivers: a change in any of them changes it."""
    parts = ", ".join(f"coalesce(CAST({_q(f)} AS VARCHAR), chr(30))" for f in feed.source_fields)
    return f"md5(concat_ws(chr(31), {parts}))"


def full_step(feed, as_of: dt.date) -> SqlStep:
    sel = feed_rows_step(feed, as_of)
    return SqlStep("feeds.full", f"SELECT {', '.join(output_exprs(feed))} FROM ({sel.sql}) "
                                 "ORDER BY customer_id", sel.params)


def base_day_step(feed, as_of: dt.date) -> SqlStep:
    """The last day this feed was delivered before ``as_of`` (NULL for a first delivery)."""
    return SqlStep("feeds.base_day", "SELECT max(as_of_date) FROM exports.feed_deliveries "
                                     "WHERE feed = ? AND as_of_date < ?", [feed.name, as_of])


def _with(feed, as_of: dt.date, base: dt.date | None) -> tuple[str, list]:
    sel = feed_rows_step(feed, as_of)
    h = row_hash_sql(feed)
    cols = ", ".join(_q(f) for f in feed.source_fields)
    sql = (f"WITH cur AS (SELECT {h} AS _row_hash, {cols} FROM ({sel.sql})), "
           f"base AS (SELECT {h} AS _row_hash, {cols} FROM exports.{feed.name} "
           f"WHERE as_of_date = ?) ")
    return sql, [*sel.params, base]


def added_step(feed, as_of: dt.date, base: dt.date | None) -> SqlStep:
    w, params = _with(feed, as_of, base)
    return SqlStep("feeds.added", w + f"SELECT {', '.join(output_exprs(feed))} FROM cur "
                   "WHERE customer_id NOT IN (SELECT customer_id FROM base) ORDER BY customer_id",
                   params)


def changed_step(feed, as_of: dt.date, base: dt.date | None) -> SqlStep:
    w, params = _with(feed, as_of, base)
    return SqlStep("feeds.changed", w + f"SELECT {', '.join(output_exprs(feed))} FROM cur "
                   "WHERE EXISTS (SELECT 1 FROM base b WHERE b.customer_id = cur.customer_id "
                   "AND b._row_hash <> cur._row_hash) ORDER BY customer_id", params)


def removed_step(feed, as_of: dt.date, base: dt.date | None) -> SqlStep:
    """Rows of the base no longer selected, then erased people this feed has not announced
    on another day: customer id and hashed identifiers only."""
    w, params = _with(feed, as_of, base)
    keep = removal_columns(feed)
    fields = []
    for c in keep:
        if c.field not in fields:
            fields.append(c.field)
    src = ", ".join(_q(f) for f in fields)
    erased_src = ", ".join("e.customer_id AS customer_id" if f == "customer_id"
                           else f"NULL AS {_q(f)}" for f in fields)
    return SqlStep("feeds.removed", w + f"""
        , gone AS (
            SELECT {src} FROM base WHERE customer_id NOT IN (SELECT customer_id FROM cur)
            UNION ALL
            SELECT DISTINCT {erased_src} FROM ops.erasures e
            WHERE e.customer_id IS NOT NULL
              AND e.customer_id NOT IN (SELECT customer_id FROM base)
              AND e.customer_id NOT IN (SELECT customer_id FROM cur)
              AND NOT EXISTS (SELECT 1 FROM exports.feed_erasure_notices n
                              WHERE n.feed = ? AND n.erased_customer = e.customer_id
                                AND n.as_of_date <> ?))
        SELECT {', '.join(output_exprs(feed, keep))} FROM gone ORDER BY customer_id""",
                   [*params, feed.name, as_of])


def stored_rows_step(feed, as_of: dt.date) -> SqlStep:
    """The day's selection as ``exports.<feed>`` stores it: the day, then the card fields."""
    sel = feed_rows_step(feed, as_of)
    return SqlStep("feeds.rows_of_day", f"SELECT CAST(? AS DATE) AS as_of_date, * FROM ({sel.sql})",
                   [as_of, *sel.params])
