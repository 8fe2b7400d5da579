"""What a feed delivers, as SQL: its output columns (renamed, hashed) and, for a diff
feed, the rows added, changed and removed since the last delivered day.

The state a diff is taken against is the warehouse itself: ``exports.<feed>`` keeps each
delivered row as a *version* (before renaming and hashing) with the day it was first
delivered (``as_of_date``), the day it stopped being the delivered one (``valid_to``,
NULL while current) and a 64-bit digest of its values (``_row_hash``). The rows
delivered on day B are the versions with ``as_of_date <= B`` and ``valid_to`` NULL or
after B (:func:`state_at`). A day writes only what changed: it closes the versions of
changed and removed rows and adds the added and changed ones, in the same transaction
as ``exports.feed_deliveries`` and after the files. So a 1 %-changed day writes 1 % of
the rows, and the comparison reads the stored digests instead of re-hashing the base.

The base of day D is the last delivered day before D, whatever the gap: a removal is
sent even when days were skipped, and re-exporting D gives the same diff (the base does
not move; the re-run first undoes D's own versions). A backfill of a day older than the
last delivered one re-publishes its files against its own base and leaves the state,
which belongs to the last delivered day, alone.

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


def state_at(feed, day_param: str = "?") -> str:
    """The rows delivered on a day (the versions valid then); binds the day twice."""
    return (f"(SELECT * FROM exports.{_q(feed.name)} WHERE as_of_date <= {day_param} "
            f"AND (valid_to IS NULL OR valid_to > {day_param}))")


def diff_step(feed, day_rows: str, as_of: dt.date, base: dt.date | None,
              only: str | None = None, by_values: bool = False) -> SqlStep:
    """Every added, changed and removed row in one pass over the day's rows (the relation
    ``day_rows``) and the stored digests of the base day, with its ``_kind`` and (added,
    changed) its ``_row_hash``; then the erased people this feed has not announced on
    another day (``removed``, the customer id only).

    With ``only`` (a relation of customer ids: those whose inputs changed since the base,
    :mod:`tessera.feeds.changes`) the day's rows are those contacts' alone and the base
    is read for them alone; every other contact is the same on both days.

    ``by_values`` compares the values (``IS DISTINCT FROM``, field by field) instead of
    the stored digests: for an engine that did not write them (Spark computing the diff
    of a state whose digests are DuckDB's ``hash``, :func:`tessera.feeds.publish.build_feed`
    with ``compute``). Both say "changed" for the same rows, short of a digest collision."""
    fields = feed.source_fields
    differs = ("b._row_hash <> c._row_hash" if not by_values else
               "(" + " OR ".join(f"b.{_q(f)} IS DISTINCT FROM c.{_q(f)}" for f in fields) + ")")
    # one full outer join on the customer id: a removed row takes the base's values, the
    # others the day's (the base is read by its stored digests, never re-hashed)
    either = ", ".join(f"CASE WHEN c.customer_id IS NULL THEN b.{_q(f)} ELSE c.{_q(f)} END "
                       f"AS {_q(f)}" for f in fields)
    erased = ", ".join("e.customer_id" if f == "customer_id" else f"NULL AS {_q(f)}" for f in fields)
    restrict = "" if only is None else f" WHERE s.customer_id IN (SELECT customer_id FROM {only})"
    return SqlStep("feeds.diff", f"""
        WITH cur AS ({_hashed(feed, day_rows)}),
             base AS (SELECT * FROM {state_at(feed)} s{restrict})
        SELECT CASE WHEN b.customer_id IS NULL THEN 'added'
                    WHEN c.customer_id IS NULL THEN 'removed' ELSE 'changed' END AS _kind,
               c._row_hash, {either}
        FROM cur c FULL OUTER JOIN base b ON b.customer_id = c.customer_id
        WHERE b.customer_id IS NULL OR c.customer_id IS NULL OR {differs}
        UNION ALL
        SELECT DISTINCT 'removed' AS _kind, NULL, {erased} FROM ops.erasures e
        WHERE e.customer_id IS NOT NULL
          AND e.customer_id NOT IN (SELECT customer_id FROM base)
          AND e.customer_id NOT IN (SELECT customer_id FROM cur)
          AND NOT EXISTS (SELECT 1 FROM exports.feed_erasure_notices n
                          WHERE n.feed = ? AND n.erased_customer = e.customer_id
                            AND n.as_of_date <> ?)""", [base, base, feed.name, as_of])


def day_total_step(feed, diff_table: str, base: dt.date | None) -> SqlStep:
    """The day's row count when only the changed contacts were selected: the base day's
    rows, plus the added ones, less the base's rows that were removed (an erasure notice
    was never in the base)."""
    return SqlStep("feeds.day_total", f"""
        SELECT (SELECT count(*) FROM {state_at(feed)})
             + (SELECT count(*) FROM {diff_table} WHERE _kind = 'added')
             - (SELECT count(*) FROM {diff_table} WHERE _kind = 'removed'
                AND customer_id IN (SELECT customer_id FROM {state_at(feed)}))""",
                   [base, base, base, base])


def state_update_steps(feed, diff_table: str, as_of: dt.date, rerun: bool) -> list[SqlStep]:
    """What the day changes in ``exports.<feed>`` (run in the delivery's transaction):
    a re-run of the last delivered day first undoes that day's versions; then the
    versions of changed and removed rows are closed and the added and changed rows
    stored. Writes as many rows as changed."""
    table = f"exports.{_q(feed.name)}"
    cols = ", ".join(_q(f) for f in feed.source_fields)
    steps = []
    if rerun:
        steps += [SqlStep("feeds.state_undo", f"DELETE FROM {table} WHERE as_of_date = ?", [as_of]),
                  SqlStep("feeds.state_reopen",
                          f"UPDATE {table} SET valid_to = NULL WHERE valid_to = ?", [as_of])]
    steps += [
        SqlStep("feeds.state_close", f"""
            UPDATE {table} SET valid_to = ? WHERE valid_to IS NULL AND customer_id IN
                (SELECT customer_id FROM {diff_table} WHERE _kind IN ('changed', 'removed'))""",
                [as_of]),
        SqlStep("feeds.state_add", f"""
            INSERT INTO {table} (as_of_date, valid_to, _row_hash, {cols})
            SELECT CAST(? AS DATE), CAST(NULL AS DATE), _row_hash, {cols} FROM {diff_table}
            WHERE _kind IN ('added', 'changed')""", [as_of]),
    ]
    return steps


def diff_file_step(feed, diff_table: str, kind: str) -> SqlStep:
    """One file of a diff, from the rows :func:`diff_step` produced (registered as
    ``diff_table``): added and changed rows whole; removed rows as the customer id and
    the hashed identifiers only (no reason, no name)."""
    cols = removal_columns(feed) if kind == "removed" else None
    return SqlStep(f"feeds.{kind}", f"SELECT {', '.join(output_exprs(feed, cols))} FROM {diff_table} "
                                    "WHERE _kind = ? ORDER BY customer_id", [kind])


def stored_rows_step(feed, as_of: dt.date, mart_columns: list[str] | None = None) -> SqlStep:
    """The day's selection as ``exports.<feed>`` stores it: the version's days and digest,
    then the card fields."""
    sel = feed_rows_step(feed, as_of, mart_columns)
    return SqlStep("feeds.rows_of_day", f"SELECT CAST(? AS DATE) AS as_of_date, "
                   f"CAST(NULL AS DATE) AS valid_to, {row_hash_sql(feed)} AS _row_hash, * "
                   f"FROM ({sel.sql})", [as_of, *sel.params])
