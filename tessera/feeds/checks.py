"""What the feed assets' checks ask of the warehouse: counts about the last delivery."""

from __future__ import annotations

from tessera.engine import Engine, SqlStep, as_engine
from tessera.feeds.diff import state_at
from tessera.feeds.selection import delivery_filter

_LAST = ("(SELECT max(as_of_date) FROM exports.feed_deliveries WHERE feed = ?)")


def delivered_yet(engine: Engine, feed) -> bool:
    """Whether the feed has a delivered day (a feed on chosen weekdays may have none)."""
    engine = as_engine(engine)
    return (engine.table_exists("exports", "feed_deliveries")
            and engine.table_exists("exports", feed.name))


def unconsented_in_last_delivery(engine: Engine, feed) -> int:
    """People of the last delivered day who lack consent on the channel today, or are
    suppressed (needs ``tessera_hmac``)."""
    if not delivered_yet(engine, feed):
        return 0
    return int(as_engine(engine).scalar(SqlStep("feeds.check_consent", f"""
        SELECT count(*) FROM marts.contact_cards
        WHERE customer_id IN (SELECT customer_id FROM {state_at(feed, _LAST)})
          AND NOT ({delivery_filter(feed.channel)})""", [feed.name, feed.name])) or 0)


def erased_in_last_delivery(engine: Engine, feed) -> int:
    """Erased people among the rows of the last delivered day (must be none)."""
    if not delivered_yet(engine, feed):
        return 0
    return int(as_engine(engine).scalar(SqlStep("feeds.check_erased", f"""
        SELECT count(*) FROM {state_at(feed, _LAST)}
        WHERE customer_id IN (SELECT customer_id FROM ops.erasures
                              WHERE customer_id IS NOT NULL)""",
        [feed.name, feed.name])) or 0)


def last_two_deliveries(engine: Engine, feed) -> list[tuple]:
    """(day, rows) of the last two delivered days, newest first."""
    if not delivered_yet(engine, feed):
        return []
    return as_engine(engine).rows(SqlStep("feeds.check_rows", """
        SELECT as_of_date, rows FROM exports.feed_deliveries WHERE feed = ?
        ORDER BY as_of_date DESC LIMIT 2""", [feed.name]))
