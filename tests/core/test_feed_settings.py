"""feeds.yaml models: fields (renamed, hashed), names that must not collide, XML element
names, weekdays, the HTTP destination."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError

from tessera.settings.feeds import FeedDef


def _feed(**kw):
    return FeedDef(**{"name": "f", "fields": ["customer_id", "email"], **kw})


def test_fields_are_names_or_renamed_hashed_columns_in_order():
    f = _feed(fields=["customer_id", {"field": "email", "name": "hashed_email", "hash": "email_google"},
                      {"field": "email", "name": "Email"}])
    assert [c.out for c in f.columns] == ["customer_id", "hashed_email", "Email"]
    assert [c.hash for c in f.columns] == [None, "email_google", None]
    assert f.source_fields == ["customer_id", "email"]  # read once


@pytest.mark.parametrize("bad", [
    {"fields": ["customer_id", "email", {"field": "mobile", "name": "email"}]},  # collision
    {"fields": ["customer_id", {"field": "email", "hash": "md5"}]},             # unknown hash
    {"format": "xml", "fields": ["customer_id", {"field": "email", "name": "E mail"}]},
    {"format": "ods"},
    {"weekdays": ["monday"]},
    {"destination": {"url": "ftp://x", "secret_env": "S"}},
    {"destination": {"url": "https://x", "secret_env": "lower"}},
    {"destination": {"url": "https://x", "secret_env": "S", "batch_rows": 0}},
    {"csv": {"delimiter": "::"}},
    {"mode": "incremental"},
])
def test_bad_definitions_are_refused(bad):
    with pytest.raises(ValidationError):
        _feed(**bad)


def test_weekdays():
    every = _feed()
    twice = _feed(weekdays=["mon", "thu"])
    monday = dt.date(2026, 11, 2)
    assert all(every.delivered_on((monday + dt.timedelta(days=i)).weekday()) for i in range(7))
    assert [twice.delivered_on((monday + dt.timedelta(days=i)).weekday()) for i in range(7)] == \
        [True, False, False, True, False, False, False]
