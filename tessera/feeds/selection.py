"""Feed selection: which contacts a feed delivers on a day, as SQL steps.

A feed's rows are its source's for the day (every contact, a segment's members, the
contacts a score threshold pushed to the feed, those with a prediction or a
recommendation list, or a mart's rows), joined to the contact card and the day's RFM,
filtered by consent on the feed's channel (and, for e-mail, without a hard bounce) and
by the suppression ledger. Writing the rows to files is
:mod:`tessera.feeds.publish`.
"""

from __future__ import annotations

import datetime as dt

from tessera.engine import SqlStep
from tessera.marketing.segments import segment_base_sql
from tessera.privacy.suppression import export_suppression_filter
from tessera.vocabulary import ACTION_FIELDS, PREDICTION_FIELDS, STAGE_FIELDS


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
    return (any(f in PREDICTION_FIELDS for f in feed.source_fields)
            or getattr(feed, "row_source", "contacts") == "predictions")


# Fields a feed may carry beyond the card's (tessera.vocabulary.FEED_FIELDS), and the
# card columns the consent and suppression filters read (always the card's own).
_FILTER_COLUMNS = ("email", "mobile", "email_consent", "sms_consent", "email_hard_bounced")


def feed_cards(feed) -> str:
    """The card table a feed reads: the main view's, or its view node's."""
    view = getattr(feed, "view", None)
    return f"views.{view}_contact_cards" if view else "marts.contact_cards"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def feed_query(feed, as_of: dt.date | None, mart_columns: list[str] | None = None,
               only: str | None = None) -> tuple[str, list]:
    """The feed's rows for a day, and their parameters (in order).

    The base is the contact card with the day's RFM (and predictions when a field or the
    source needs them); then, as the feed's fields and source ask: the day's stage, the
    recommendation list (``recommended_products``, the top ``k`` of a kind, best first),
    the score-threshold action that pushed the contact to this feed (one per contact: the
    highest score's), or a mart's row (``mart_columns``: its columns, looked up by the
    caller; a field the mart has is read from it, except the columns consent reads).
    ``only`` names a relation of customer ids: the cards are read for those alone (a diff
    day's changed contacts, :mod:`tessera.feeds.changes`)."""
    source = getattr(feed, "row_source", "score_actions" if getattr(feed, "score_actions", False)
                     else "contacts")
    fields = list(feed.source_fields)
    preds = uses_predictions(feed)
    params: list = [as_of] + ([as_of] if preds else [])
    cols, joins = ["b.*"], []
    if set(fields) & set(STAGE_FIELDS):
        cols.append("st.stage, st.stage_rank")
        joins.append("LEFT JOIN marketing.stages st ON st.customer_id = b.customer_id "
                     "AND st.as_of_date = ?")
        params.append(as_of)
    if "recommended_products" in fields or source == "recommendations":
        rec = getattr(feed, "recommendations", None)
        cols.append("rec.recommended_products")
        joins.append(f"{'' if source == 'recommendations' else 'LEFT '}JOIN ("
                     "SELECT customer_id, list(product_id ORDER BY rank) AS recommended_products "
                     "FROM recommendations.contact_products WHERE as_of_date = ? AND kind = ? "
                     "AND rank <= ? GROUP BY customer_id) rec ON rec.customer_id = b.customer_id")
        params += [as_of, rec.kind if rec else "combined", rec.k if rec else 5]
    if source == "score_actions" or set(fields) & set(ACTION_FIELDS):
        cols.append("act.action_score_type, act.action_threshold, act.action_score, "
                    "act.action_previous_score")
        joins.append(f"{'' if source == 'score_actions' else 'LEFT '}JOIN ("
                     "SELECT customer_id, score_type AS action_score_type, "
                     "threshold AS action_threshold, score AS action_score, "
                     "previous_score AS action_previous_score FROM ("
                     "SELECT *, row_number() OVER (PARTITION BY customer_id "
                     "ORDER BY score DESC, score_type) AS _n "
                     "FROM marketing.score_actions WHERE action = 'feed' AND target = ? "
                     "AND as_of_date = ?) WHERE _n = 1) act ON act.customer_id = b.customer_id")
        params += [feed.name, as_of]
    if source == "predictions":
        joins.append("JOIN (SELECT customer_id FROM predictions.customer_predictions "
                     "WHERE as_of_date = ?) pp ON pp.customer_id = b.customer_id")
        params.append(as_of)
    cards = feed_cards(feed)
    if only is not None:
        cards = f"(SELECT * FROM {cards} WHERE customer_id IN (SELECT customer_id FROM {only}))"
    inner = f"SELECT {', '.join(cols)} FROM ({segment_base_sql(preds, cards)}) b {' '.join(joins)}"
    if source == "mart":
        have = set(mart_columns or [])
        pick = [f for f in fields if f != "customer_id" and f not in _FILTER_COLUMNS]
        picked = ", ".join(f"m.{_q(f)} AS {_q(f)}" if f in have else f"x.{_q(f)}" for f in pick)
        keep = ", ".join(f"x.{_q(c)}" for c in _FILTER_COLUMNS if c not in pick)
        extra = "".join(f", {p}" for p in (picked, keep) if p)
        inner = (f"SELECT x.customer_id{extra} "
                 f"FROM ({inner}) x JOIN marts.{_q(feed.mart)} m ON m.customer_id = x.customer_id")
    seg = ""
    if feed.segment:
        seg = ("AND customer_id IN (SELECT customer_id FROM marketing.segment_members "
               "WHERE segment = ? AND as_of_date = ?)")
        params += [feed.segment, as_of]
    sel = ", ".join(_q(f) for f in fields)
    return (f"SELECT {sel} FROM ({inner}) WHERE {delivery_filter(feed.channel)} {seg} "
            "ORDER BY customer_id", params)


def feed_rows_sql(feed) -> str:
    return feed_query(feed, None, [])[0]


def feed_bind(feed, as_of: dt.date) -> list:
    return feed_query(feed, as_of, [])[1]


def feed_rows_step(feed, as_of: dt.date, mart_columns: list[str] | None = None,
                   only: str | None = None) -> SqlStep:
    sql, params = feed_query(feed, as_of, mart_columns, only)
    return SqlStep("feeds.rows", sql, params)


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
