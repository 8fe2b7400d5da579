"""Feed selection: which contacts a feed delivers on a day, as SQL steps.

A feed's rows are its segment's members for the day (or, with ``score_actions``, the
contacts a score threshold pushed to the feed that day), joined to the contact card and
the day's RFM, filtered by consent on the feed's channel (and, for e-mail, without a
hard bounce) and by the suppression ledger. Writing the rows to files is
:mod:`tessera.feeds.publish`.
"""

from __future__ import annotations

import datetime as dt

from tessera.engine import SqlStep
from tessera.marketing.segments import segment_base_sql
from tessera.privacy.suppression import export_suppression_filter
from tessera.vocabulary import PREDICTION_FIELDS


def consent_filter(channel: str) -> str:
    if channel == "email":
        return ("email IS NOT NULL AND email_consent = 'granted' "
                "AND NOT coalesce(email_hard_bounced, FALSE)")
    if channel == "sms":
        return "mobile IS NOT NULL AND sms_consent = 'granted'"
    return "TRUE"


def delivery_filter(channel: str) -> str:
    """Consent on the channel AND no suppression of the identifier (needs tessera_hmac)."""
    return f"({consent_filter(channel)}) AND {export_suppression_filter(channel)}"


def uses_predictions(feed) -> bool:
    """Whether the feed exports a prediction field (its rows then join the day's predictions)."""
    return any(f in PREDICTION_FIELDS for f in feed.source_fields)


def feed_cards(feed) -> str:
    """The card table a feed reads: the main view's, or its view node's."""
    view = getattr(feed, "view", None)
    return f"views.{view}_contact_cards" if view else "marts.contact_cards"


def feed_rows_sql(feed) -> str:
    """The feed's rows; binds the day, then (with a segment) the segment name and the day."""
    cols = ", ".join(f'"{f}"' for f in feed.source_fields)
    seg = ""
    if feed.segment:
        seg = ("AND customer_id IN (SELECT customer_id FROM marketing.segment_members "
               "WHERE segment = ? AND as_of_date = ?)")
    elif getattr(feed, "score_actions", False):
        # contacts a score threshold pushed to this feed on the day
        seg = ("AND customer_id IN (SELECT customer_id FROM marketing.score_actions "
               "WHERE action = 'feed' AND target = ? AND as_of_date = ?)")
    return (f"SELECT {cols} FROM ({segment_base_sql(uses_predictions(feed), feed_cards(feed))}) "
            f"WHERE {delivery_filter(feed.channel)} {seg} ORDER BY customer_id")


def feed_bind(feed, as_of: dt.date) -> list:
    """Parameters of :func:`feed_rows_sql`: the RFM day, then the segment (or score-action)
    filter's own."""
    bind = [as_of] + ([as_of] if uses_predictions(feed) else [])
    bind += [feed.segment, as_of] if feed.segment else []
    if not feed.segment and getattr(feed, "score_actions", False):
        bind += [feed.name, as_of]
    return bind


def feed_rows_step(feed, as_of: dt.date) -> SqlStep:
    return SqlStep("feeds.rows", feed_rows_sql(feed), feed_bind(feed, as_of))


def unconsented_step(feed, as_of: dt.date, ids: list[int]) -> SqlStep:
    """How many of ``ids`` the feed must not deliver (the belt-and-braces re-check)."""
    return SqlStep("feeds.unconsented",
                   f"SELECT count(*) FROM ({segment_base_sql(cards=feed_cards(feed))}) WHERE customer_id IN "
                   f"(SELECT unnest(CAST(? AS BIGINT[]))) AND NOT ({delivery_filter(feed.channel)})",
                   [as_of, ids])


def erasures_to_announce_step(feed, as_of: dt.date) -> SqlStep:
    """Erased customers this feed has not announced on another day."""
    return SqlStep("feeds.erasures_to_announce", """
        SELECT DISTINCT e.customer_id FROM ops.erasures e
        WHERE e.customer_id IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM exports.feed_erasure_notices n
            WHERE n.feed = $feed AND n.erased_customer = e.customer_id AND n.as_of_date <> $as_of)
        ORDER BY 1""", {"feed": feed.name, "as_of": as_of})
