"""A small warehouse that feeds read from: contact cards, the day's RFM, the privacy
ledgers. Shared by the feed tests (formats, diffs, delivery)."""

from __future__ import annotations

import datetime as dt
import decimal
from pathlib import Path

from tessera.engine.warehouse import connect, ensure_warehouse
from tessera.privacy import suppression as privacy_core
from tessera.settings.feeds import FeedDef

D1 = dt.date(2026, 11, 2)  # a Monday

CARD_COLUMNS = ("customer_id BIGINT, email VARCHAR, mobile VARCHAR, first_name VARCHAR, "
                "note VARCHAR, order_summary DECIMAL(12,2), birth_date DATE, "
                "email_consent VARCHAR, sms_consent VARCHAR, email_hard_bounced BOOLEAN")

PEOPLE = [
    (1, "John_Smith@gmail.com", "+1 (650) 555-1212", "John", "=HYPERLINK(\"http://evil\")",
     decimal.Decimal("350.00"), dt.date(1980, 2, 14), "granted", "granted", False),
    (2, "b@x.it", "+39 333 1234567", "Łucja", "@SUM(A1)", decimal.Decimal("-12.50"), None,
     "granted", "denied", False),
    (3, "c@x.it", None, "Città", "\tTab;\"quoted\",comma\nnewline", decimal.Decimal("0"),
     dt.date(2000, 1, 1), "granted", None, False),
    (4, "d@x.it", "+48 601 234 567", "Zoë", "-5", decimal.Decimal("1"), None, "granted",
     "granted", False),
    (5, "nope@x.it", None, "Denied", "plain", decimal.Decimal("9"), None, "denied", None, False),
]


def make_world(path: Path, people=PEOPLE):
    con = connect(path)
    ensure_warehouse(con)
    privacy_core.ensure_tables(con)
    privacy_core.install_hmac(con, "tests-only-suppression-key")
    con.execute(f"CREATE OR REPLACE TABLE marts.contact_cards ({CARD_COLUMNS})")
    con.execute("CREATE OR REPLACE TABLE marketing.rfm_scores "
                "(customer_id BIGINT, as_of_date DATE, rfm_group VARCHAR)")
    con.executemany("INSERT INTO marts.contact_cards VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", people)
    return con


def feed(**kw) -> FeedDef:
    base = dict(name="aud", channel="email",
                fields=["customer_id", "email", "mobile", "first_name", "note", "order_summary",
                        "birth_date"])
    base.update(kw)
    return FeedDef(**base)
