"""Would a level calibration of BG/NBD's total have helped? A study, not a stage feature.

    python bench/predictions/total_calibration.py ORDERS.csv CUTOFF [CUTOFF ...]

The predicted total of the next window misses at some real cut-offs (CDNOW 1997-09-30:
-13 %). One principled correction, learnt from data before the cut-off only, is an
*anchor*: the repeat purchases that happened in the last window before the cut-off over
those the fitted BG/NBD expects there in-sample (E[X(T)] - E[X(T - w)] per buyer, the
unconditional expectation of the fitted model), multiplied into the next window's total;
``anchor ** 0.5`` is the same shrunk half way toward 1. The other is the inner back-test's
*ratio*: actual over predicted total in the window that ends at the cut-off (BG/NBD fitted
a window earlier), multiplied into the day's total, plain or square-rooted (shrunk half
way toward 1). Printed per cut-off, for the
cut-off itself and for its inner back-test (the cut-off a window earlier, whose next
window ends at the cut-off: what a stage could choose the correction on), the error of
the total plain, anchored and half-anchored. Reads only (customer_id, order_date) of the
CSV; windows are 91 days, as in bench/predictions/real_data.py.
"""

from __future__ import annotations

import datetime as dt
import sys

import duckdb
import numpy as np
from scipy import special

from tessera.predictions import models

W = 91


def unconditional(m: models.BgNbd, days: np.ndarray) -> np.ndarray:
    """E[X(t)]: repeat purchases of a new customer in their first ``days`` (FHL 2005, eq. 9)."""
    t = np.asarray(days, float) / models.WEEK
    a = m.a if abs(m.a - 1) > 1e-6 else 1 + 1e-6
    hyp = special.hyp2f1(m.r, m.b, a + m.b - 1, t / (m.alpha + t))
    return (a + m.b - 1) / (a - 1) * (1 - (m.alpha / (m.alpha + t)) ** m.r * hyp)


def study(con: duckdb.DuckDBPyConnection, cut: dt.date) -> dict[str, float]:
    s = con.execute("""SELECT count(*) - 1 AS x, date_diff('day', min(d), max(d)) AS tx,
            date_diff('day', min(d), $cut) AS t,
            count(*) FILTER (WHERE d > $cut - $w AND d > f) AS last_repeats
        FROM o JOIN (SELECT c, min(d) AS f FROM o GROUP BY c) USING (c)
        WHERE d <= $cut GROUP BY c""", {"cut": cut, "w": W}).fetchnumpy()
    x, tx, t = (s[k].astype(float) for k in ("x", "tx", "t"))
    m = models.fit_bgnbd(x, tx, t)
    pred = float(models.expected_purchases(m, W, x, tx, t).sum())
    in_sample = float((unconditional(m, t) - unconditional(m, np.maximum(t - W, 0))).sum())
    actual = con.execute("""SELECT count(*) FROM o WHERE d > $cut AND d <= $cut + $w
        AND c IN (SELECT c FROM o WHERE d <= $cut)""", {"cut": cut, "w": W}).fetchone()[0]
    anchor = float(s["last_repeats"].sum()) / in_sample
    err = lambda p: 100 * (p / actual - 1)  # noqa: E731
    return {"plain": err(pred), "anchored": err(pred * anchor),
            "half": err(pred * anchor ** 0.5), "anchor": anchor}


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__)
        return 2
    con = duckdb.connect()
    con.execute("CREATE TABLE o AS SELECT customer_id AS c, CAST(order_date AS DATE) AS d "
                "FROM read_csv(?, header = true) GROUP BY ALL", [argv[0]])
    print(f"{'cut-off':12}{'':7}{'anchor':>8}{'plain %':>9}{'anchored %':>12}{'half %':>8}"
          f"{'ratio %':>9}{'half ratio %':>14}")
    for c in argv[1:]:
        cut = dt.date.fromisoformat(c)
        inner = study(con, cut - dt.timedelta(days=W))
        day = study(con, cut)
        ratio = 1 / (1 + inner["plain"] / 100)
        scaled = lambda k: 100 * ((1 + day["plain"] / 100) * k - 1)  # noqa: E731
        for label, r in (("inner", inner), ("day", day)):
            tail = f"{scaled(ratio):+9.1f}{scaled(ratio ** 0.5):+14.1f}" if r is day else ""
            print(f"{c:12}{label:7}{r['anchor']:8.3f}{r['plain']:+9.1f}{r['anchored']:+12.1f}"
                  f"{r['half']:+8.1f}{tail}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
