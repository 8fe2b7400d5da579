"""The seeds' segment examples, planted in the sample so that each one selects somebody.

Random data rarely hits a rule as narrow as Nurtigo's "companies in Turin with revenue
over 5 M and a purchase in the last six months": at the demo's scale it selected nobody.
This module runs after the B2C, e-commerce and B2B files are written and adds, to the
B2B registries, a few companies whose users are B2C customers chosen by their orders:

* ``in``: Turin, revenue 6-12 M, the user's last order at most 150 days old (members);
* ``small``: Turin, revenue 4 M (below the threshold);
* ``boundary``: Turin, revenue exactly 5 M ("over 5 M" is strict);
* ``elsewhere``: Milan, revenue 9 M;
* ``stale``: Turin, revenue 8 M, the user's last order 200 days old or more.

Only the ``in`` group meets the rule. The truth is ``_truth/seed_examples.csv``
(example, group, erp_id, company_record_id) and the B2B truth files get the new rows,
so the B2B checks stay exact. Kept apart from ``generator`` and ``b2b`` so that the
planted examples can change without touching the random sample's draws.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from pathlib import Path

from lxml import etree

from tessera.ingest.vat import check_digit

# group -> (how many, city, province, revenue in EUR, purchase: "recent" or "stale")
TURIN_PLAN = {
    "in": (4, "Torino", "TO", ["6000000", "7500000", "9000000", "12000000"], "recent"),
    "small": (2, "Torino", "TO", ["4000000"], "recent"),
    "boundary": (1, "Torino", "TO", ["5000000"], "recent"),
    "elsewhere": (2, "Milano", "MI", ["9000000"], "recent"),
    "stale": (2, "Torino", "TO", ["8000000"], "stale"),
}
RECENT_DAYS = 150   # well inside the rule's 183 days
STALE_DAYS = 200    # well outside it
# The planted companies' VATs start here: far from the random ones (10-digit draws).
_VAT_BASE = 9_900_000_000


def _records(path: Path, tag: str) -> list[dict]:
    out = []
    for _, el in etree.iterparse(str(path), tag=tag, resolve_entities=False, no_network=True):
        out.append({c.tag: (c.text or "") for c in el})
        el.clear()
    return out


def _last_orders(path: Path) -> dict[str, dt.date]:
    last: dict[str, dt.date] = {}
    for o in _records(path, "ordine"):
        try:
            day = dt.datetime.strptime(o.get("data", ""), "%d/%m/%Y").date()
            float(o.get("importo", ""))
        except ValueError:
            continue
        cid = o.get("idCliente", "")
        if o.get("idOrdine") and cid:
            last[cid] = max(last.get(cid, dt.date.min), day)
    return last


def _append_csv(path: Path, rows: list[list[str]]) -> None:
    buf = io.StringIO()
    csv.writer(buf, delimiter=";", lineterminator="\n").writerows(rows)
    with open(path, "a", encoding="utf-8", newline="") as fh:
        fh.write(buf.getvalue())


def _append_truth(path: Path, rows: list[tuple]) -> None:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    with open(path, "a", encoding="utf-8", newline="") as fh:
        fh.write(buf.getvalue())


def plant_seed_examples(root: Path, ymd: str, as_of: dt.date) -> tuple[list[str], dict[str, int]]:
    """Add the Turin companies of Nurtigo's example to the B2B files; return (files, records
    added per file, keyed like ``generate``'s counts)."""
    root = Path(root)
    erp = [r for r in _records(root / "erp" / f"erp_contacts_{ymd}.xml", "utente")
           if r.get("idgestionale") and "@" in r.get("email", "")]
    last = _last_orders(root / "ecommerce" / f"ordini_{ymd}.xml")
    person_of = {r["email"]: r["person_id"] for r in csv.DictReader(
        io.StringIO((root / "_truth" / "persons.csv").read_text("utf-8")))}
    users_file = root / "b2b" / f"utenti-aziende_{ymd}.csv"
    taken = {r["email"] for r in csv.DictReader(io.StringIO(users_file.read_text("utf-8")),
                                                 delimiter=";")}
    seen_ids: dict[str, int] = {}
    for r in erp:
        seen_ids[r["idgestionale"]] = seen_ids.get(r["idgestionale"], 0) + 1
    # one ERP record per person, not already a company user, with a known person
    pool = [r for r in erp if seen_ids[r["idgestionale"]] == 1 and r["email"] not in taken
            and r["email"] in person_of and r["idgestionale"] in last]
    age = {r["idgestionale"]: (as_of - last[r["idgestionale"]]).days for r in pool}
    recent = sorted((r for r in pool if age[r["idgestionale"]] <= RECENT_DAYS),
                    key=lambda r: r["idgestionale"])
    stale = sorted((r for r in pool if age[r["idgestionale"]] >= STALE_DAYS),
                   key=lambda r: r["idgestionale"])

    companies, users, truth_c, truth_u, truth_s = [], [], [], [], []
    n = 0
    used = {"recent": 0, "stale": 0}
    for group, (k, city, prov, revenues, kind) in TURIN_PLAN.items():
        people = (recent if kind == "recent" else stale)[used[kind]:used[kind] + k]
        used[kind] += len(people)
        for i, person in enumerate(people):
            n += 1
            first = f"{_VAT_BASE + n:010d}"
            vat = first + str(check_digit(first))
            rid, uid, key = f"S{n:06d}", f"US{n:05d}", f"KS{n:04d}"
            name = f"Officine Subalpine {n}"
            companies.append([rid, f"{name} S.p.A.", vat, city, prov, "Italia", "Manifattura", "spa",
                              revenues[i % len(revenues)], "120", "01/10/2026 10:00"])
            users.append([uid, person["nome"], person["cognome"], f"{name} S.p.A.", vat,
                          person["email"], "acquisti", "si"])
            truth_c.append((key, "erp_companies", rid))
            truth_u.append((uid, key, person_of[person["email"]]))
            truth_s.append(("turin_companies_5m", group, person["idgestionale"], rid))
    _append_csv(root / "b2b" / f"aziende_{ymd}.csv", companies)
    _append_csv(users_file, users)
    _append_truth(root / "_truth" / "b2b_companies.csv", truth_c)
    _append_truth(root / "_truth" / "b2b_users.csv", truth_u)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["example", "group", "erp_id", "company_record_id"])
    w.writerows(truth_s)
    (root / "_truth" / "seed_examples.csv").write_text(buf.getvalue(), encoding="utf-8")
    return ["_truth/seed_examples.csv"], {"aziende": len(companies), "utenti-aziende": len(users)}
