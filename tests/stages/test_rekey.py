"""Re-keying stored customer tables after merges (#20 item 2), table by table.

A warehouse where customer 2 merged into 1 in one run and 1 into 3 in a later one
(a chain), and 5 split off 4 (nothing to do): every stored row of 1 and 2 ends on 3,
one row per day and key with the survivor's own row winning, membership periods united,
the survivor's own stage history kept, logs moved whole; a second run changes nothing.
"""

from __future__ import annotations

import datetime as dt

import duckdb

from tessera.identity.rekey import rekey_customer_tables

D1, D2, D3 = dt.date(2026, 11, 1), dt.date(2026, 11, 2), dt.date(2026, 11, 3)


def warehouse() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    for s in ("core", "marketing", "exports", "ops"):
        con.execute(f"CREATE SCHEMA {s}")
    con.execute("CREATE TABLE core.customer_sources AS SELECT * FROM (VALUES ('crm', 'a', 3), ('crm', 'b', 3), "
                "('crm', 'c', 3), ('crm', 'd', 4), ('crm', 'e', 5)) t(source, source_record_id, customer_id)")
    con.execute("""CREATE TABLE core.merge_log AS SELECT * FROM (VALUES
        ('merged', 1, 2, 1), ('merged', 3, 1, 2), ('split', 4, 5, 1))
        t(event, customer_id, other_customer_id, records)""")
    con.execute("CREATE TABLE marketing.scores (as_of_date DATE, score_type VARCHAR, customer_id BIGINT, score DECIMAL(12,2))")
    con.execute("INSERT INTO marketing.scores VALUES (?, 'web', 1, 10), (?, 'web', 2, 20), (?, 'web', 3, 30), "
                "(?, 'web', 2, 25), (?, 'web', 4, 40)", [D1, D1, D1, D2, D1])
    con.execute("CREATE TABLE marketing.segment_members (as_of_date DATE, segment VARCHAR, customer_id BIGINT)")
    con.execute("INSERT INTO marketing.segment_members VALUES (?, 's', 1), (?, 's', 2), (?, 's', 2)", [D1, D1, D2])
    con.execute("CREATE TABLE marketing.segment_history (segment VARCHAR, customer_id BIGINT, entered_on DATE, left_on DATE)")
    con.execute("INSERT INTO marketing.segment_history VALUES ('s', 1, ?, ?), ('s', 2, ?, NULL), ('t', 3, ?, ?)",
                [D1, D2, D1, D1, D2])
    con.execute("CREATE TABLE marketing.stage_history (customer_id BIGINT, stage VARCHAR, stage_rank BIGINT, "
                "entered_on DATE, left_on DATE)")
    con.execute("INSERT INTO marketing.stage_history VALUES (3, 'mql', 2, ?, NULL), (2, 'curious', 1, ?, NULL)", [D1, D1])
    con.execute("CREATE TABLE ops.bulk_edits (edit_id VARCHAR, action VARCHAR, customer_id BIGINT)")
    con.execute("INSERT INTO ops.bulk_edits VALUES ('x', 'delete', 2)")
    con.execute("CREATE SCHEMA recommendations")
    con.execute("CREATE TABLE recommendations.contact_products (as_of_date DATE, kind VARCHAR, "
                "customer_id BIGINT, rank INTEGER, product_id VARCHAR, score DOUBLE)")
    con.execute("INSERT INTO recommendations.contact_products VALUES (?, 'popular', 1, 1, 'a', 1.0), "
                "(?, 'popular', 1, 2, 'b', 0.5), (?, 'popular', 3, 1, 'c', 1.0), (?, 'combined', 2, 1, 'd', 1.0)",
                [D1, D1, D1, D2])
    con.execute("CREATE TABLE exports.feed_a (as_of_date DATE, customer_id BIGINT, email VARCHAR)")
    con.execute("INSERT INTO exports.feed_a VALUES (?, 1, 'one'), (?, 3, 'three')", [D3, D3])
    return con


def rows(con, sql):
    return sorted(con.execute(sql).fetchall(), key=repr)


def test_every_stored_row_follows_the_chain_of_merges():
    con = warehouse()
    moved = rekey_customer_tables(con)
    assert moved["marketing.scores"] == 3 and moved["ops.bulk_edits"] == 1
    # day 1: 3's own row wins over the rows of 1 and 2; day 2: 2's row moves to 3
    assert rows(con, "SELECT as_of_date, customer_id, score FROM marketing.scores") == sorted(
        [(D1, 3, 30), (D2, 3, 25), (D1, 4, 40)], key=repr)
    assert rows(con, "SELECT as_of_date, customer_id FROM marketing.segment_members") == [(D1, 3), (D2, 3)]
    # a past day's list: 3's own entry wins rank 1, 1's rank 2 moves; 2's list of day 2 moves whole
    assert rows(con, "SELECT as_of_date, kind, customer_id, rank, product_id FROM "
                     "recommendations.contact_products") == sorted(
        [(D1, "popular", 3, 1, "c"), (D1, "popular", 3, 2, "b"), (D2, "combined", 3, 1, "d")], key=repr)
    # s: [D1, D2) of 1 and [D1, open) of 2 unite into one open period of 3; t untouched
    assert rows(con, "SELECT segment, customer_id, entered_on, left_on FROM marketing.segment_history") == [
        ("s", 3, D1, None), ("t", 3, D1, D2)]
    assert rows(con, "SELECT customer_id, stage FROM marketing.stage_history") == [(3, "mql")]
    assert rows(con, "SELECT customer_id FROM ops.bulk_edits") == [(3,)]
    assert rows(con, "SELECT customer_id, email FROM exports.feed_a") == [(3, "three")]
    # re-runnable: nothing is stale any more
    assert rekey_customer_tables(con) == {}


def test_a_feeds_versions_keep_one_current_row_per_customer():
    con = warehouse()
    con.execute("CREATE TABLE exports.feed_v (as_of_date DATE, valid_to DATE, _row_hash UBIGINT, "
                "customer_id BIGINT, email VARCHAR)")
    con.execute("INSERT INTO exports.feed_v VALUES (?, NULL, 1, 1, 'one'), (?, NULL, 3, 3, 'three'), "
                "(?, ?, 2, 2, 'two-old'), (?, NULL, 22, 2, 'two')", [D1, D2, D1, D2, D2])
    rekey_customer_tables(con)
    # 3's own open version wins over 1's and 2's; 2's closed version moves
    assert rows(con, "SELECT customer_id, as_of_date, valid_to, email FROM exports.feed_v") == sorted(
        [(3, D2, None, "three"), (3, D1, D2, "two-old")], key=repr)
