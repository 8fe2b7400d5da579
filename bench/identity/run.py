"""Identity benchmark: Tessera's identity resolution on synthetic contacts with known truth.

    python bench/identity/run.py --n 100000 [--splink] [--threads 2]

1. Generates the shared synthetic data set (``/work/shared/bench/identity/
   make_synthetic.py``, seeded) into ``bench/out`` unless it is there already.
2. Loads it as a Tessera contact source (``bench/identity/config``: a column mapping,
   default identity settings) through the real ingestion, then runs staging and
   identity in process on a fresh warehouse, timing each step; peak memory is the
   process's peak resident set (DuckDB runs in process).
3. Writes ``rec_id,cluster_id`` and scores it with the shared ``pair_scorer.py``
   (pairwise precision, recall, F1 over the pairs the clusters imply).
4. With ``--splink``, runs the shared ``splink_reference.py`` on the same files in a
   child process (wall time and peak memory measured here) as the reference row.

The shared scripts are imported or run from their folder, never copied. Results go to
``bench/out/identity_<N>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BLOCKING: str | None = None  # --blocking
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("TESSERA_IDENTITY_BENCH", "/work/shared/bench/identity"))
CONFIG = Path(__file__).resolve().parent / "config"
OUT = ROOT / "bench" / "out"


def peak_rss_mb(who=resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


def generate(n: int) -> tuple[Path, Path]:
    contacts, truth = OUT / f"contacts_{n}.csv", OUT / f"truth_{n}.csv"
    if contacts.exists() and truth.exists():
        return contacts, truth
    sys.path.insert(0, str(SHARED))
    import warnings

    import pandas as pd

    # The generator writes None for missing values; pandas 3's default string dtype
    # would turn them into NaN floats, which the generator does not expect.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pd.set_option("future.infer_string", False)
    import make_synthetic

    t0 = time.perf_counter()
    df, tr = make_synthetic.generate(n, 0.2, 42)
    OUT.mkdir(parents=True, exist_ok=True)
    df.to_csv(contacts, index=False)
    tr.to_csv(truth, index=False)
    print(f"generated {n:,} records in {time.perf_counter() - t0:.1f} s -> {contacts}")
    return contacts, truth


def with_blocking(deployment, spec: str | None):
    """The deployment with its probabilistic blocking replaced by ``spec``.

    ``spec`` lists key sets separated by ``;``, keys within a set by ``,``
    (``names;last_name,birth_date``); a leading ``+`` adds the sets to the defaults.
    For measuring a blocking change at scale before it becomes a default.
    """
    if not spec:
        return deployment
    prob = deployment.identity.probabilistic
    extra = spec.startswith("+")
    sets = [[k.strip() for k in part.split(",") if k.strip()] for part in spec.lstrip("+").split(";") if part.strip()]
    blocking = [list(b) for b in prob.blocking] + sets if extra else sets
    identity = deployment.identity.model_copy(update={"probabilistic": prob.model_validate(
        {**prob.model_dump(), "blocking": blocking})})
    return deployment.model_copy(update={"identity": identity})


def run_tessera(n: int, contacts: Path, threads: int | None, memory_limit: str | None) -> dict:
    from tessera.deployment import load_deployment
    from tessera.identity.resolve import resolve
    from tessera.ingest.load import ingest_source
    from tessera.ingest.staging import build_contacts
    from tessera.engine.warehouse import connect, ensure_warehouse

    deployment = with_blocking(load_deployment(CONFIG), BLOCKING)
    landing = OUT / f"landing_{n}"
    shutil.rmtree(landing, ignore_errors=True)
    landing.mkdir(parents=True)
    os.link(contacts, landing / contacts.name)
    wh = OUT / f"identity_{n}.duckdb"
    for p in (wh, Path(str(wh) + ".wal")):
        p.unlink(missing_ok=True)
    con = connect(wh, memory_limit=memory_limit, threads=threads)
    ensure_warehouse(con)
    t = {}
    t0 = time.perf_counter()
    outcome = ingest_source(con, deployment, deployment.sources[0], landing, "bench")
    t["ingest_s"] = time.perf_counter() - t0
    rss_after_ingest = peak_rss_mb()
    t1 = time.perf_counter()
    build_contacts(con, deployment)
    t["staging_s"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    stats = resolve(con, dt.datetime(2026, 11, 1), "bench", deployment.identity)
    t["identity_s"] = time.perf_counter() - t2
    t["staging_identity_s"] = t["staging_s"] + t["identity_s"]
    pred = OUT / f"tessera_clusters_{n}.csv"
    con.execute(f"COPY (SELECT source_record_id AS rec_id, customer_id AS cluster_id "
                f"FROM core.customer_sources) TO '{pred}' (HEADER)")
    by_rule = dict(con.execute("SELECT matched_by, count(*) FROM core.customer_sources GROUP BY 1").fetchall())
    con.close()
    return {"timings_s": {k: round(v, 2) for k, v in t.items()},
            "records_ingested": outcome.total("records"), "records_rejected": outcome.total("rejected"),
            "peak_rss_mb_ingest": round(rss_after_ingest), "peak_rss_mb": round(peak_rss_mb()),
            "stats": stats, "records_by_rule": by_rule, "pred": str(pred)}


def run_splink(n: int) -> dict:
    out = OUT / "splink"
    cmd = [sys.executable, str(SHARED / "splink_reference.py"), "--n", str(n), "--dir", str(OUT),
           "--out", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"error": proc.stderr[-2000:]}
    metrics = json.loads((out / "email_full" / f"metrics_{n}.json").read_text())
    c = metrics["clusters"]["0.9"]
    return {"wall_s": round(wall, 1), "in_process_s": round(metrics["timings"]["pipeline_total_s"], 1),
            "peak_rss_mb": round(peak_rss_mb(resource.RUSAGE_CHILDREN)),
            "precision": round(c["precision"], 4), "recall": round(c["recall"], 4), "f1": round(c["f1"], 4)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--memory-limit", default=None)
    ap.add_argument("--splink", action="store_true", help="also run the Splink reference")
    ap.add_argument("--blocking", default=None,
                    help="replace the probabilistic blocking ('names;last_name,birth_date'); '+...' adds to it")
    a = ap.parse_args()
    global BLOCKING
    BLOCKING = a.blocking
    OUT.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    contacts, truth_path = generate(a.n)
    res = {"n": a.n, "generate_s": round(time.perf_counter() - t0, 1)}
    res["tessera"] = run_tessera(a.n, contacts, a.threads, a.memory_limit)

    sys.path.insert(0, str(SHARED))
    import pandas as pd
    import pair_scorer

    truth = pair_scorer.load_truth(None, str(truth_path))
    pred = pd.read_csv(res["tessera"]["pred"], dtype=str, keep_default_na=False)
    score = pair_scorer.score_clusters(pred, truth)
    print(pair_scorer.format_result({"mode": "clusters", **score}, f"tessera n={a.n}"))
    tr = res["tessera"]
    tr.update({k: round(score[k], 4) for k in ("precision", "recall", "f1")})
    tr.update({k: int(score[k]) for k in ("tp", "fp", "fn")})
    # Records refused at ingestion (an impossible birth date, a malformed e-mail: the
    # contract sends the row to ops.rejects) cannot be matched; score also over the
    # records Tessera accepted, to tell ingestion policy from matching quality.
    accepted = truth[truth["rec_id"].isin(pred["rec_id"])]
    on_acc = pair_scorer.score_clusters(pred, accepted)
    tr["accepted_records"] = {k: round(on_acc[k], 4) for k in ("precision", "recall", "f1")}
    if a.splink:
        res["splink"] = run_splink(a.n)
        cpath = OUT / "splink" / "email_full" / f"clusters_{a.n}_0.9.csv"
        if cpath.exists():
            sp = pd.read_csv(cpath, dtype=str, keep_default_na=False)
            sp = sp[sp["rec_id"].isin(accepted["rec_id"])]
            on_acc = pair_scorer.score_clusters(sp, accepted)
            res["splink"]["accepted_records"] = {k: round(on_acc[k], 4) for k in ("precision", "recall", "f1")}
    (OUT / f"identity_{a.n}.json").write_text(json.dumps(res, indent=2, default=str))

    tm = tr["timings_s"]
    print(f"\nIdentity benchmark, {a.n:,} synthetic records ({tr['records_rejected']} rejected at ingestion)")
    print(f"  {'':<10} {'precision':>9} {'recall':>7} {'F1':>7} {'seconds':>8} {'peak MB':>8}")
    print(f"  {'tessera':<10} {tr['precision']:>9.4f} {tr['recall']:>7.4f} {tr['f1']:>7.4f} "
          f"{tm['staging_identity_s']:>8.1f} {tr['peak_rss_mb']:>8}   (staging {tm['staging_s']} s + identity "
          f"{tm['identity_s']} s; ingestion {tm['ingest_s']} s not included)")
    if "splink" in res and "f1" in res["splink"]:
        s = res["splink"]
        print(f"  {'splink':<10} {s['precision']:>9.4f} {s['recall']:>7.4f} {s['f1']:>7.4f} "
              f"{s['in_process_s']:>8.1f} {s['peak_rss_mb']:>8}   (in process; {s['wall_s']} s wall)")
    elif "splink" in res:
        print(f"  splink failed: {res['splink']['error']}")
    print(f"  over the {len(accepted):,} records accepted at ingestion:")
    for who, d in (("tessera", tr), ("splink", res.get("splink", {}))):
        if "accepted_records" in d:
            x = d["accepted_records"]
            print(f"  {who:<10} {x['precision']:>9.4f} {x['recall']:>7.4f} {x['f1']:>7.4f}")
    print(f"  candidate pairs {tr['stats']['candidate_pairs']:,}; refused links {tr['stats']['refused_links']}; "
          f"records by rule {tr['records_by_rule']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
