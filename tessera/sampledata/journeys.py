"""Demo events for the Milan journey (Flow 2.4.0): e-commerce purchases, Milan-store
coupon redemptions and show attendances, timed so that a daily run over the last two
weeks takes every branch (coupon used or not, in Milan or elsewhere, top spender or
not, woman or man, attended or not)."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import polars as pl


def journey_event_lines(people: pl.DataFrame, as_of: dt.date, seed: int, n: int = 60) -> list[str]:
    """JSON lines (the web events' shape) for up to ``n`` of ``people`` (email, gender)."""
    rng = np.random.default_rng([seed, 15])
    people = people.filter(pl.col("email").is_not_null() & (pl.col("email") != "")).head(n)
    base = dt.datetime(as_of.year, as_of.month, as_of.day, 10, 0, 0)
    lines, k = [], 0

    def emit(kind: str, days_before: int, email: str, props: dict) -> None:
        nonlocal k
        k += 1
        at = base - dt.timedelta(days=days_before, minutes=int(rng.integers(0, 300)))
        lines.append(json.dumps({"event_id": f"JV{k:06d}", "type": kind,
                                 "occurred_at": at.strftime("%Y-%m-%dT%H:%M:%SZ"), "email": email,
                                 "properties": props}))

    for email in people["email"].to_list():
        amount = int(rng.choice([120, 250, 350, 480, 720]))
        emit("purchase", 13, email, {"channel": "ecommerce", "amount": amount})
        if rng.random() < 0.7:                       # the coupon is used ...
            store = "Milan" if rng.random() < 0.8 else "Roma"   # ... mostly in Milan
            emit("coupon_redeemed", 10, email, {"campaign": "milan_store_discount", "storeCode": store})
            if rng.random() < 0.6:
                emit("show_attended", 4, email, {"show": "milan_fashion_show"})
    return lines


def sms_optin_lines(people: pl.DataFrame, as_of: dt.date, seed: int, n: int = 60,
                    share: float = 0.85) -> list[str]:
    """CSV lines (with header) of explicit SMS opt-ins from the website's preference
    centre for about ``share`` of the journey's people, weeks before their purchase,
    so the Milan journey's SMS step has someone to send to (the contact files carry
    e-mail consent only). Its own random stream: the rest of the sample is unchanged."""
    rng = np.random.default_rng([seed, 16])
    people = people.filter(pl.col("email").is_not_null() & (pl.col("email") != "")).head(n)
    base = dt.datetime(as_of.year, as_of.month, as_of.day, 12, 0, 0)
    lines = ["id,email,channel,state,kind,at"]
    for k, email in enumerate(people["email"].to_list(), start=1):
        if rng.random() < share:
            at = base - dt.timedelta(days=int(rng.integers(20, 60)), minutes=int(rng.integers(0, 600)))
            lines.append(f"SO{k:05d},{email},sms,granted,MANAGE,{at:%Y-%m-%dT%H:%M:%S}")
    return lines
