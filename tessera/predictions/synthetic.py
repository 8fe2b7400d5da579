"""Order histories drawn from known BG/NBD and Gamma-Gamma parameters: the ground truth the
tests and the benchmark measure the models against. Vectorised over customers (each round
draws the next purchase, or the drop-out, of every customer still active)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa

from tessera.predictions.models import BgNbd, GammaGamma, WEEK

TRUTH = BgNbd(r=0.5, alpha=20.0, a=0.8, b=3.0)       # per week
SPEND = GammaGamma(p=4.0, q=3.0, gamma=30.0)           # mean spend p * gamma / (q - 1) = 60


def orders(n: int, seed: int, as_of: dt.date, years: float = 3.0, truth: BgNbd = TRUTH,
           spend: GammaGamma = SPEND, first_id: int = 1) -> pa.Table:
    """``(customer_id, order_date, amount)`` of ``n`` customers whose first purchase falls
    uniformly in the ``years`` before ``as_of``; purchases after ``as_of`` are kept too
    (callers cut the history where they need it). One order per purchase day at most."""
    rng = np.random.default_rng(seed)
    lam = rng.gamma(truth.r, 1.0 / truth.alpha, n) / WEEK    # per day
    pdrop = rng.beta(truth.a, truth.b, n)
    nu = rng.gamma(spend.q, 1.0 / spend.gamma, n)
    span = years * 365.0
    end = span + 730.0                                        # two years of future
    t = rng.uniform(0, span, n)
    ids = np.arange(first_id, first_id + n, dtype=np.int64)
    cs, ts = [ids.copy()], [t.copy()]
    alive = np.ones(n, bool)
    while alive.any():
        i = np.flatnonzero(alive)
        t[i] += rng.exponential(1.0 / lam[i])
        done = t[i] > end
        alive[i[done]] = False
        i = i[~done]
        cs.append(ids[i])
        ts.append(t[i].copy())
        alive[i[rng.random(len(i)) < pdrop[i]]] = False
    c = np.concatenate(cs)
    day = np.floor(np.concatenate(ts)).astype(np.int64)
    key = np.unique(np.column_stack([c, day]), axis=0)       # one purchase per day
    c, day = key[:, 0], key[:, 1]
    amount = np.round(rng.gamma(spend.p, 1.0 / nu[c - first_id]), 2) + 0.01
    base = np.datetime64(as_of - dt.timedelta(days=int(span)), "D")
    return pa.table({"customer_id": pa.array(c, pa.int64()),
                     "order_date": pa.array(base + day.astype("timedelta64[D]")),
                     "amount": pa.array(amount, pa.float64())})
