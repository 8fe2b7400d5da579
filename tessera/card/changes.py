"""New, updated and deleted contacts per day (``marts.contact_changes``), for analytics.

Why fingerprints: golden records are rebuilt every run, so no column says when a person
first appeared or last changed. Each run keeps a fingerprint of every card's golden
fields and consents (``marts.contact_fingerprints``, the run's day and the previous
day only) and compares it with the latest earlier day's: a card with no earlier
fingerprint is new, one whose fingerprint differs is updated, an earlier fingerprint
with no card now is deleted (erased, soft-deleted, or merged into another person). Counts
only; rerunning a day gives the same counts. The first day has nothing to compare with:
every card counts as new, and ``first_day`` says so.
"""

from __future__ import annotations

import datetime as dt

from tessera.engine import Engine, SqlStep, as_engine
from tessera.vocabulary import GOLDEN_FIELDS

CHANGES_TABLE = "marts.contact_changes"
FINGERPRINTS = "marts.contact_fingerprints"
COMPARED = tuple(GOLDEN_FIELDS) + ("email_consent", "sms_consent")

DDL = (
    SqlStep("card.changes_ddl", f"""CREATE TABLE IF NOT EXISTS {CHANGES_TABLE} (
        as_of_date DATE, contacts BIGINT, new BIGINT, updated BIGINT, deleted BIGINT,
        compared_with DATE, first_day BOOLEAN)"""),
    SqlStep("card.fingerprints_ddl", f"""CREATE TABLE IF NOT EXISTS {FINGERPRINTS} (
        as_of_date DATE, customer_id BIGINT, fingerprint VARCHAR)"""),
)


def _fingerprint(present: set[str]) -> str:
    # a deployment may switch base properties off: they are then not on the card
    fields = ", ".join(f"coalesce(CAST({f} AS VARCHAR), '')" for f in COMPARED if f in present)
    return f"md5(concat_ws('|', {fields}))"


def build_contact_changes(engine: Engine, day: dt.date) -> dict:
    engine = as_engine(engine)
    engine.run(*DDL)
    present = {r[0] for r in engine.rows(SqlStep(
        "card.card_columns", "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = 'marts' AND table_name = 'contact_cards'"))}
    with engine.together():
        engine.replace_partition(FINGERPRINTS, {"as_of_date": day}, SqlStep("card.fingerprints", f"""
            SELECT CAST($day AS DATE) AS as_of_date, customer_id, {_fingerprint(present)} AS fingerprint
            FROM marts.contact_cards""", {"day": day}))
        engine.replace_partition(CHANGES_TABLE, {"as_of_date": day}, SqlStep("card.changes", f"""
            WITH before AS (SELECT max(as_of_date) AS d FROM {FINGERPRINTS} WHERE as_of_date < $day),
            cur AS (SELECT customer_id, fingerprint FROM {FINGERPRINTS} WHERE as_of_date = $day),
            prev AS (SELECT customer_id, fingerprint FROM {FINGERPRINTS}
                     WHERE as_of_date = (SELECT d FROM before))
            SELECT CAST($day AS DATE) AS as_of_date,
                   (SELECT count(*) FROM cur) AS contacts,
                   (SELECT count(*) FROM cur WHERE customer_id NOT IN (SELECT customer_id FROM prev)) AS new,
                   (SELECT count(*) FROM cur JOIN prev p USING (customer_id)
                    WHERE cur.fingerprint <> p.fingerprint) AS updated,
                   (SELECT count(*) FROM prev WHERE customer_id NOT IN (SELECT customer_id FROM cur)) AS deleted,
                   (SELECT d FROM before) AS compared_with,
                   (SELECT d FROM before) IS NULL AS first_day""", {"day": day}))
        # keep the day and the one it was compared with: enough to rerun either
        engine.run(SqlStep("card.fingerprints_prune", f"""
            DELETE FROM {FINGERPRINTS} WHERE as_of_date < coalesce(
                (SELECT max(as_of_date) FROM {FINGERPRINTS} WHERE as_of_date < $day), $day)""",
            {"day": day}))
    row = engine.rows(SqlStep("card.changes_of_day", f"""
        SELECT contacts, new, updated, deleted, first_day FROM {CHANGES_TABLE}
        WHERE as_of_date = $day""", {"day": day}))[0]
    return dict(zip(("contacts", "new", "updated", "deleted", "first_day"), row))
