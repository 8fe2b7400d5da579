"""B2B registries at scale: ingestion, user links, golden companies, potential companies.

    python bench/companies.py [--companies 100000] [--seed 1]

Generates the B2B sample files (``tessera.sampledata.b2b``) with the given number of real
companies (about 40 % written again by the CRM as legal-name variants, 1-4 users each,
a purchased list of the same size), loads them with the demo's sources into a fresh
DuckDB file, runs staging, user linking, company resolution, company contacts and the
potential registry, and prints the time of each step, rows/s and quality against the
generator's truth (companies split or over-merged, users linked to the right company,
potential companies registered to the right one).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--companies", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    from tessera.companies.registry import (
        build_potential_companies,
        link_company_users,
        resolve_companies,
    )
    from tessera.deployment import load_deployment
    from tessera.ingest.load import ingest_source
    from tessera.sampledata.b2b import generate_b2b
    from tessera.ingest.staging import build_entity
    from tessera.engine.warehouse import connect, ensure_warehouse

    dep = load_deployment(ROOT / "examples" / "demo")
    now = dt.datetime(2026, 11, 1, 3, 0)
    times: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "landing"
        (root / "_truth").mkdir(parents=True)
        t = time.perf_counter()
        generate_b2b(root, [], args.seed, "20261101", [], companies=args.companies)
        times["generate"] = time.perf_counter() - t
        con = connect(Path(tmp) / "wh.duckdb")
        ensure_warehouse(con)
        records = 0
        t = time.perf_counter()
        for name in ("erp_companies", "crm_companies", "crm_company_users", "purchased_companies"):
            out = ingest_source(con, dep, dep.source(name), root, "bench", now)
            records += out.total("records")
        times["ingest"] = time.perf_counter() - t
        t = time.perf_counter()
        for entity in ("company", "company_user", "potential_company"):
            build_entity(con, dep, entity)
        times["staging"] = time.perf_counter() - t
        t = time.perf_counter()
        link = link_company_users(con, now)
        times["link_users"] = time.perf_counter() - t
        t = time.perf_counter()
        gold = resolve_companies(con, dep, now)
        times["resolve_companies"] = time.perf_counter() - t
        t = time.perf_counter()
        pot = build_potential_companies(con, now)
        times["potential"] = time.perf_counter() - t

        def truth(name):
            with open(root / "_truth" / name, encoding="utf-8") as fh:
                return list(csv.DictReader(fh))

        company = {(s, r): c for s, r, c in con.execute(
            "SELECT source, source_record_id, company_id FROM core.company_sources").fetchall()}
        ids_of: dict[str, set] = {}
        for row in truth("b2b_companies.csv"):
            ids_of.setdefault(row["company_key"], set()).add(company[(row["source"], row["source_record_id"])])
        split = sum(len(v) > 1 for v in ids_of.values())
        keys_of: dict[int, set] = {}
        for k, v in ids_of.items():
            for c in v:
                keys_of.setdefault(c, set()).add(k)
        over = sum(len(v) > 1 for v in keys_of.values())
        key_of = {c: next(iter(v)) for c, v in keys_of.items()}
        link_of = dict(((r, (s, i))) for r, s, i in con.execute(
            "SELECT source_record_id, company_source, company_record_id FROM staging.company_users").fetchall())
        users = truth("b2b_users.csv")
        right = sum(1 for u in users if u["company_key"] and link_of.get(u["source_record_id"], (None, None))[1]
                    and key_of[company[link_of[u["source_record_id"]]]] == u["company_key"])
        linkable = sum(1 for u in users if u["company_key"])
        pots = dict((r, c) for r, c in con.execute(
            "SELECT source_record_id, registered_company_id FROM core.potential_companies").fetchall())
        pt = truth("b2b_potential.csv")
        reg_right = sum(1 for p in pt if p["company_key"] and pots.get(p["source_record_id"])
                        and key_of[pots[p["source_record_id"]]] == p["company_key"])
        reg_wrong = sum(1 for p in pt if not p["company_key"] and pots.get(p["source_record_id"]))
        con.close()
    total = sum(v for k, v in times.items() if k != "generate")
    print(f"companies {args.companies}: {records} B2B records loaded and resolved in {total:.1f} s "
          f"({records / total:,.0f} records/s); peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    for k, v in times.items():
        print(f"  {k:18s} {v:7.2f} s")
    print(f"  golden companies {gold['companies']} (truth {len(ids_of)}): split {split}, over-merged {over}")
    print(f"  users linked right {right}/{linkable}; unlinked reported {link['unlinked']} "
          f"(truth {sum(1 for u in users if not u['company_key'])})")
    print(f"  potential registered right {reg_right}/{sum(1 for p in pt if p['company_key'])}, "
          f"wrongly {reg_wrong}; still potential {pot['still_potential']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
