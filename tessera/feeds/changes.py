"""Which contacts a diff day has to look at: the ones whose inputs changed since the base.

Why: a diff compares the day's rows with the stored digests of the last delivered day
(:mod:`tessera.feeds.diff`). Selecting and hashing every contact of the day costs what a
full export's selection costs (two keyed hashes per contact for the suppression ledger,
the card's columns, the digests), so a day with 1 % of the contacts changed cost most of
a full export. But the warehouse already knows what changed: ``history/days``
(:mod:`tessera.history.versions`) keeps the card's row versions with the day each
appeared (``_from``) and went away (``_to``). A contact with no card version opened or
closed after the base day has the same card as on the base day, so (when nothing else
the feed reads moved) the same row, or the same absence; only the others are selected,
hashed and compared, and the diff is the full comparison's, row for row.

It holds only when everything the feed's rows depend on is in those versions. So the
day is compared in full (:func:`changed_contacts` returns why) unless:

* the feed is a diff feed whose fields all come from the card itself (no RFM, prediction,
  stage, recommendation, score action, mart, segment or view node: those are per-day
  outputs with no versions, and a backfill may rewrite them), none of them a column a
  run rewrites on every card (``golden_built_at``, ``resolved_at``: not versioned);
* the day is the newest recorded one and the base day is recorded too (the versions span
  the whole gap; a backfill reads older versions and is compared in full);
* the suppression ledger did not change since the base day (its entries match contacts
  by a keyed hash of their identifiers: finding whom a new or lifted entry hits means
  hashing every contact, which is the full comparison) and the live ledger still has
  the recorded day's row count (a ``forget`` run after ``history/days``);
* the feed's selection (its SQL: fields, channel, source) is the one the base day was
  delivered with (``exports.feed_selections``).

Erasures reach the diff as before (``ops.erasures``), and a day with a new erasure is a
full one (the erasure adds a suppression).
"""

from __future__ import annotations

import datetime as dt
import hashlib

import pyarrow as pa

from tessera.engine import Engine, SqlStep
from tessera.feeds.selection import feed_query, uses_predictions
from tessera.history.versions import VOLATILE, history_table
from tessera.vocabulary import RFM_FIELDS

CARDS = "marts.contact_cards"
SUPPRESSIONS = "ops.suppressions"


def selection_key(feed, mart_columns: list[str] | None = None) -> str:
    """A digest of the feed's selection SQL: a diff against a day delivered with another
    selection (fields, channel, consent rules, source) cannot reuse its rows."""
    return hashlib.sha256(feed_query(feed, None, mart_columns)[0].encode("utf-8")).hexdigest()[:32]


def _card_only(engine: Engine, feed) -> bool:
    if feed.mode != "diff" or feed.row_source != "contacts" or feed.segment \
            or getattr(feed, "view", None) or uses_predictions(feed):
        return False
    card = {r[0] for r in engine.rows(SqlStep(
        "feeds.card_columns", "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = 'marts' AND table_name = 'contact_cards'"))}
    fields = set(feed.source_fields)
    return fields <= card - VOLATILE and not fields & set(RFM_FIELDS)


def _versions_exist(engine: Engine) -> bool:
    names = [history_table(CARDS), history_table(SUPPRESSIONS)]
    return engine.table_exists("history", "days") and all(
        engine.table_exists("history", n.split(".")[1] + suffix)
        for n in names for suffix in ("", "__closed"))


def _in_force_sql(table: str) -> str:
    hist = history_table(table)
    return (f"SELECT count(*) FROM {hist} h WHERE h._from <= $day AND NOT EXISTS ("
            f"SELECT 1 FROM {hist}__closed x WHERE x._row_hash = h._row_hash AND x._copy = h._copy "
            "AND x._from = h._from AND x._to <= $day)")


def changed_contacts(engine: Engine, feed, as_of: dt.date, base: dt.date | None,
                     key: str) -> tuple[pa.Table | None, str]:
    """The customer ids whose card changed after ``base`` up to ``as_of`` (a one-column
    table), and ``"incremental"``; or None and why the day is compared in full."""
    if feed.mode != "diff":
        return None, "full feed"
    if base is None:
        return None, "first delivery"
    if not _card_only(engine, feed):
        return None, "fields beyond the card"
    if not _versions_exist(engine):
        return None, "no recorded versions"
    span = engine.rows(SqlStep("feeds.versions_span", """
        SELECT max(as_of_date) = $day, min(as_of_date) <= $base FROM history.days""",
        {"day": as_of, "base": base}))[0]
    if not (span[0] and span[1]):
        return None, "day or base not recorded"
    sup = history_table(SUPPRESSIONS)
    moved = engine.scalar(SqlStep("feeds.suppressions_moved", f"""
        SELECT EXISTS (SELECT 1 FROM {sup} WHERE _from > $base AND _from <= $day)
            OR EXISTS (SELECT 1 FROM {sup}__closed WHERE _to > $base AND _to <= $day)
            OR (SELECT count(*) FROM {SUPPRESSIONS}) <> ({_in_force_sql(SUPPRESSIONS)})""",
        {"day": as_of, "base": base}))
    if moved:
        return None, "suppressions changed"
    same = engine.scalar(SqlStep("feeds.same_selection", """
        SELECT count(*) FROM exports.feed_selections
        WHERE feed = $feed AND as_of_date = $base AND selection_key = $key""",
        {"feed": feed.name, "base": base, "key": key}))
    if not same:
        return None, "selection changed"
    cards = history_table(CARDS)
    ids = engine.arrow(SqlStep("feeds.changed_contacts", f"""
        SELECT customer_id FROM {cards} WHERE _from > $base AND _from <= $day
        UNION
        SELECT h.customer_id FROM {cards}__closed c JOIN {cards} h
          ON h._row_hash = c._row_hash AND h._copy = c._copy AND h._from = c._from
        WHERE c._to > $base AND c._to <= $day""", {"day": as_of, "base": base}))
    return ids, "incremental"
