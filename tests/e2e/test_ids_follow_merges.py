"""Customer ids follow merges everywhere, in the run that merges (#20 item 2).

The daily job on the generated demo sample over several days: day 2 merges two
customers (a CRM record takes another person's address), day 3 splits one (a record
moves to a new address), day 4 brings nothing new. Every run succeeds, and no table
keyed by customer (each stored day of RFM, scores, stages, segment membership and
history, score actions, feeds' rows) holds an id that is no customer any more.
"""

from __future__ import annotations

import csv
import datetime as dt
import io

from tests.conftest import AS_OF

KEYED = ("marketing.rfm_scores", "marketing.scores", "marketing.stages", "marketing.segment_members",
         "marketing.segment_history", "marketing.stage_history", "marketing.score_actions",
         "exports.newsletter_high_value", "exports.crm_hot_leads", "core.events", "core.orders",
         "recommendations.contact_products")


def stale_ids(con) -> dict[str, int]:
    out = {}
    for table in KEYED:
        n = con.execute(f"SELECT count(*) FROM {table} WHERE customer_id IS NOT NULL AND customer_id "
                        "NOT IN (SELECT customer_id FROM core.customers)").fetchone()[0]
        if n:
            out[table] = n
    return out


def crm_rows(env) -> tuple[list[str], dict[str, list[str]]]:
    text = (env.landing / "crm" / "crm_contacts_20261101.csv").read_text(encoding="cp1252")
    rows = list(csv.reader(io.StringIO(text), delimiter=";"))
    return rows[0], {r[0]: r for r in rows[1:] if r and r[0]}


def write_crm(env, day: dt.date, header: list[str], rows: list[list[str]]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=";", lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    (env.landing / "crm" / f"crm_contacts_{day:%Y%m%d}.csv").write_bytes(buf.getvalue().encode("cp1252"))


def test_ids_follow_merges_and_splits_over_several_days(demo_env, demo_run):
    env = demo_env
    con = env.connect()
    try:
        assert stale_ids(con) == {}
        # two people each known only by one CRM record, both with stored marketing rows
        singles = con.execute("""
            SELECT cs.source_record_id, cs.customer_id FROM core.customer_sources cs
            JOIN core.customers c USING (customer_id)
            WHERE cs.source = 'crm_contacts' AND c.source_count = 1 AND c.email IS NOT NULL
              AND cs.customer_id IN (SELECT customer_id FROM marketing.segment_members)
              AND cs.customer_id IN (SELECT customer_id FROM marketing.scores)
            ORDER BY cs.customer_id LIMIT 2""").fetchall()
        (rec_a, id_a), (rec_b, id_b) = singles
        email_a = con.execute("SELECT email FROM core.customers WHERE customer_id = ?", [id_a]).fetchone()[0]
        # a person with an ERP and a CRM record, for the split
        rec_c, id_c = con.execute("""
            SELECT cs.source_record_id, cs.customer_id FROM core.customer_sources cs
            JOIN core.customers c USING (customer_id)
            WHERE cs.source = 'crm_contacts' AND c.source_count = 2 AND cs.matched_by = 'email'
              AND cs.customer_id NOT IN (?, ?)
            ORDER BY cs.customer_id LIMIT 1""", [id_a, id_b]).fetchone()
    finally:
        con.close()
    header, rows = crm_rows(env)
    i_email, i_mod = header.index("email"), header.index("data_modifica")

    # day 2: B's CRM record takes A's address: A and B become one customer
    day2 = AS_OF + dt.timedelta(days=1)
    b = list(rows[rec_b])
    b[i_email], b[i_mod] = email_a.upper(), "01/11/2026 09:00"
    write_crm(env, day2, header, [b])
    assert env.run_daily(day2).success
    con = env.connect()
    try:
        ids = dict(con.execute("SELECT source_record_id, customer_id FROM core.customer_sources "
                               "WHERE source = 'crm_contacts'").fetchall())
        survivor = ids[rec_a]
        assert ids[rec_b] == survivor == min(id_a, id_b)
        gone = max(id_a, id_b)
        assert ("merged", survivor, gone) in con.execute(
            "SELECT event, customer_id, other_customer_id FROM core.merge_log").fetchall()
        assert stale_ids(con) == {}
        # the merged-away id's stored days now belong to the survivor, one row per day
        assert con.execute("SELECT count(*) FROM marketing.scores WHERE as_of_date = ? AND customer_id = ? "
                           "GROUP BY score_type HAVING count(*) > 1", [AS_OF, survivor]).fetchall() == []
        assert con.execute("SELECT count(*) FROM marketing.segment_members WHERE customer_id = ?",
                           [survivor]).fetchone()[0] > 0
    finally:
        con.close()

    # day 3: C's CRM record moves to a new address: a split, C keeps its id on one part
    day3 = day2 + dt.timedelta(days=1)
    c = list(rows[rec_c])
    c[i_email], c[i_mod] = "moved.away@example.org", "02/11/2026 09:00"
    write_crm(env, day3, header, [c])
    assert env.run_daily(day3).success
    con = env.connect()
    try:
        assert "split" in {e for (e,) in con.execute(
            "SELECT event FROM core.merge_log WHERE customer_id = ?", [id_c]).fetchall()}
        assert stale_ids(con) == {}
    finally:
        con.close()

    # day 4: nothing new; the run still succeeds and nothing is stale
    day4 = day3 + dt.timedelta(days=1)
    assert env.run_daily(day4).success
    con = env.connect()
    try:
        assert stale_ids(con) == {}
        days = {d for (d,) in con.execute("SELECT DISTINCT as_of_date FROM marketing.segment_members").fetchall()}
        assert days == {AS_OF, day2, day3, day4}
    finally:
        con.close()
