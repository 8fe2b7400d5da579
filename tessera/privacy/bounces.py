"""Bounce management (Sendero): per address, per campaign, and over the last 3 campaigns.

``core.bounce_status`` has one row per bounced address: hard and soft counts, how many
of the last three campaigns bounced (three in a row on an address that opens nothing
is the "fake bounce" pattern the seed warns about), and the state an operator works
from: ``blocked`` (a hard bounce, or every one of the last three campaigns bounced) or
``to_handle``. "All bounced" is both together. A hard bounce suppresses e-mail for that
address only: it goes to the suppression ledger on channel ``email`` (keyed hash),
which exports apply; SMS and the person's other addresses are untouched.
"""

from __future__ import annotations

import datetime as dt

from tessera.engine import Engine, SqlStep, as_engine
from tessera.privacy import suppression as privacy


def build_bounce_status(engine: Engine, now: dt.datetime) -> dict:
    engine = as_engine(engine)
    if not engine.table_exists("staging", "bounces"):
        engine.run(SqlStep("bounces.empty_staging", "CREATE TABLE IF NOT EXISTS staging.bounces "
                           "(email_key VARCHAR, campaign_id VARCHAR, bounce_type VARCHAR, bounced_at TIMESTAMP)"))
    with engine.together():
        engine.replace_table("core.bounce_status", SqlStep("bounces.status", """
            WITH campaigns AS (
                SELECT campaign_id, max(bounced_at) AS last_at FROM staging.bounces GROUP BY ALL
            ),
            last3 AS (SELECT campaign_id FROM campaigns ORDER BY last_at DESC, campaign_id DESC LIMIT 3),
            per_address AS (
                SELECT b.email_key,
                       count(*) FILTER (WHERE bounce_type = 'hard') AS hard_bounces,
                       count(*) FILTER (WHERE bounce_type = 'soft') AS soft_bounces,
                       count(DISTINCT campaign_id) AS campaigns_bounced,
                       count(DISTINCT campaign_id) FILTER (WHERE campaign_id IN (SELECT campaign_id FROM last3))
                           AS bounced_in_last_3,
                       max(bounced_at) AS last_bounced_at
                FROM staging.bounces b WHERE email_key IS NOT NULL GROUP BY ALL
            ),
            owner AS (
                SELECT DISTINCT s.email_key, cs.customer_id FROM staging.contacts s
                JOIN core.customer_sources cs USING (source, source_record_id) WHERE s.email_key IS NOT NULL
            )
            SELECT o.customer_id, p.*,
                   CASE WHEN p.hard_bounces > 0
                          OR p.bounced_in_last_3 = (SELECT count(*) FROM last3) AND (SELECT count(*) FROM last3) = 3
                        THEN 'blocked' ELSE 'to_handle' END AS state
            FROM per_address p LEFT JOIN owner o USING (email_key)
            ORDER BY customer_id, email_key"""))
        hard = [("email", r[0]) for r in engine.rows(SqlStep(
            "bounces.hard", "SELECT DISTINCT email_key FROM core.bounce_status WHERE hard_bounces > 0"))]
        privacy.add_suppressions(engine, hard, "hard_bounce", "email", now)
    rows = dict(engine.rows(SqlStep("bounces.states", "SELECT state, count(*) FROM core.bounce_status GROUP BY ALL")))
    return {"blocked": int(rows.get("blocked", 0)), "to_handle": int(rows.get("to_handle", 0)),
            "hard_bounce_suppressions": len(hard)}
