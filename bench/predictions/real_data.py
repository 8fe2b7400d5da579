"""Acceptance of the predictions on a real public purchase history: CDNOW.

    python bench/predictions/real_data.py [--wheel PATH]
    python bench/predictions/real_data.py --orders ORDERS.csv --cutoff DAY [--cutoff DAY ...]

CDNOW (Fader and Hardie's data set: 23,570 customers of an online CD shop who first bought
in the first quarter of 1997, every purchase until June 1998) is shipped inside the
``lifetimes`` wheel (``lifetimes/datasets/CDNOW_master.txt``). The wheel is fetched with
``pip download lifetimes==0.11.3 --no-deps`` into bench/out (never installed: lifetimes is
no dependency of Tessera) unless ``--wheel`` names one. Only (customer id, date, amount)
are kept, written as an orders CSV, and ``tessera predict`` runs on it at three cut-offs a
quarter apart, each with a 13-week window whose future is in the file. Printed per
cut-off, from the command's future.csv (the predictions scored against the 13 weeks that
followed):

* purchase-count MAE of the served model beside a plain BG/NBD fit;
* the error of the predicted total (served and plain BG/NBD);
* the "buys in the next 13 weeks" AUC of the served model beside a logistic regression on
  RFM quintiles;

and whether each meets the issue's target (MAE below plain BG/NBD's, total within 5 %,
AUC above the RFM logistic's).

``--orders`` runs the same check on any other purchase history (a CSV with customer_id,
order_date as YYYY-MM-DD and amount) at the ``--cutoff`` days given, e.g. the UCI "Online
Retail" data summed per invoice (bench/README.md says where that file came from).
"""

from __future__ import annotations

import argparse
import csv
import io
import subprocess
import sys
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "bench" / "out" / "cdnow"
CUTOFFS = ("1997-09-30", "1997-12-30", "1998-03-31")   # a quarter apart; 13 weeks after each
WINDOW = 91


def _wheel(given: str | None) -> Path:
    if given:
        return Path(given)
    OUT.mkdir(parents=True, exist_ok=True)
    found = sorted(OUT.glob("[Ll]ifetimes-0.11.3-*.whl"))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "lifetimes==0.11.3", "--no-deps",
                        "-d", str(OUT)], check=True)
        found = sorted(OUT.glob("[Ll]ifetimes-0.11.3-*.whl"))
    return found[0]


def extract(wheel: Path, target: Path) -> int:
    """CDNOW_master.txt (customer, yyyymmdd, CDs, dollars; whitespace separated) as an
    orders CSV; returns the number of order lines."""
    with zipfile.ZipFile(wheel) as z:
        text = z.read("lifetimes/datasets/CDNOW_master.txt").decode()
    rows = 0
    with open(target, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["customer_id", "order_date", "amount"])
        for line in io.StringIO(text):
            parts = line.split()
            if len(parts) != 4 or not parts[0].isdigit():
                continue
            cid, day, _, amount = parts
            w.writerow([int(cid), f"{day[:4]}-{day[4:6]}-{day[6:]}", amount])
            rows += 1
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wheel", help="a downloaded lifetimes-0.11.3 wheel")
    ap.add_argument("--orders", help="another orders CSV (customer_id, order_date, amount) "
                                     "instead of CDNOW")
    ap.add_argument("--cutoff", action="append", help="with --orders: a cut-off (repeatable)")
    args = ap.parse_args()
    if args.orders:
        if not args.cutoff:
            ap.error("--orders needs at least one --cutoff")
        orders, cutoffs = Path(args.orders).resolve(), tuple(sorted(args.cutoff))
        out = ROOT / "bench" / "out" / orders.stem
        print(f"{orders}: {sum(1 for _ in open(orders, encoding='utf-8')) - 1:,} order lines")
    else:
        OUT.mkdir(parents=True, exist_ok=True)
        orders, cutoffs, out = OUT / "cdnow_orders.csv", CUTOFFS, OUT
        lines = extract(_wheel(args.wheel), orders)
        print(f"CDNOW: {lines:,} order lines written to {orders}")
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "tessera.cli", "predict", "--orders", str(orders),
           "--out", str(out / "predict"), "--window-days", str(WINDOW), "--churn-days", str(WINDOW)]
    for c in cutoffs:
        cmd += ["--cutoff", c]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    print(f"tessera predict at {', '.join(cutoffs)}: {time.perf_counter() - t:.1f} s\n")
    fig: dict[tuple, float] = {}
    with open(out / "predict" / "future.csv", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            fig[(r["cutoff"], r["target"], r["model"], r["metric"])] = float(r["value"])
    ok_all = True
    print(f"{'cut-off':12}{'MAE served':>11}{'MAE BG/NBD':>11}{'total % served':>15}"
          f"{'total % BG/NBD':>15}{'AUC served':>11}{'AUC RFM-logit':>14}  targets met")
    for c in cutoffs:
        mae_s = fig.get((c, "purchases", "served", "mae"), float("nan"))
        mae_b = fig.get((c, "purchases", "bgnbd", "mae"), float("nan"))
        tot_s = fig.get((c, "purchases", "served", "total_error_pct"), float("nan"))
        tot_b = fig.get((c, "purchases", "bgnbd", "total_error_pct"), float("nan"))
        auc_s = fig.get((c, "purchase", "served", "auc"), float("nan"))
        auc_r = fig.get((c, "purchase", "rfm_logistic", "auc"), float("nan"))
        met = [round(mae_s, 6) < round(mae_b, 6), abs(tot_s) <= 5.0, round(auc_s, 6) > round(auc_r, 6)]
        ok_all &= all(met)
        print(f"{c:12}{mae_s:11.4f}{mae_b:11.4f}{tot_s:15.1f}{tot_b:15.1f}{auc_s:11.4f}{auc_r:14.4f}"
              f"  MAE {'yes' if met[0] else 'NO'}, total {'yes' if met[1] else 'NO'}, "
              f"AUC {'yes' if met[2] else 'NO'}")
    print(f"\nall targets met: {'yes' if ok_all else 'no'} (details: {out / 'predict'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
