"""Deterministic B2B sample files: companies, company users, a purchased list.

Called by ``tessera.sampledata.generator.generate`` after the B2C files, so that some company
users can be people who are also B2C customers (their e-mail is taken from
``_truth/persons.csv``). What makes it a test of the B2B stages:

* ``b2b/aziende_YYYYMMDD.csv`` (ERP, ``;``, UTF-8): every real company once, with its
  partita IVA (valid check digit); plus a few extra records whose VAT has a wrong check
  digit (bad rows, ``vat_number``/``invalid_vat``).
* ``b2b/aziende-crm_YYYYMMDD.xml`` (CRM, Sendero XML, table ``aziende-b2b``): about 40 %
  of the companies again, their legal name written another way (upper case, ``SRL``
  without dots, a hyphen, ``s.r.l``), half of them without VAT: duplicates to merge by
  VAT or by normalised legal name. Generic names ("Bar Centrale") appear in two cities:
  two companies.
* ``b2b/utenti-aziende_YYYYMMDD.csv`` (CRM): one to four users per company, the company
  named by one of its variants; about 15 % are B2C people (same e-mail), and a few name a
  company that does not exist (unlinkable, reported).
* ``b2b/aziende-potenziali_YYYYMMDD.csv`` (purchased list): companies with the list's
  own sector labels ("Costruzioni", "Negozi"), mapped by the demo's ``value_map``; about a
  quarter are also client companies (same VAT: they register); a few carry a label the
  mapping does not know (bad rows, ``sector_macro``/``unknown_label``).

Truth in ``_truth/``: ``b2b_companies.csv`` (company_key, source, source_record_id),
``b2b_users.csv`` (source_record_id, company_key or empty when unlinkable, person_id when
also a B2C person) and ``b2b_potential.csv`` (source_record_id, company_key when it is a
client company). Byte-identical for the same seed, contacts and day.
"""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path
from xml.sax.saxutils import escape

from tessera.ingest.vat import check_digit

_SURNAMES = ["Rossi", "Bianchi", "Ferrari", "Esposito", "Romano", "Colombo", "Ricci", "Marino",
             "Greco", "Bruno", "Gallo", "Conti", "De Luca", "Mancini", "Costa", "Giordano",
             "Rizzo", "Lombardi", "Moretti", "Barbieri", "Fontana", "Santoro", "Mariani",
             "Rinaldi", "Caruso", "Ferrara", "Galli", "Martini", "Leone", "Longo", "Gentile",
             "Martinelli", "Vitale", "Lombardo", "Serra", "Coppola", "De Santis", "D'Angelo"]
# (activity, sector label of the deployment)
_ACTIVITIES = [("Costruzioni", "Edilizia"), ("Impianti", "Edilizia"), ("Edilizia", "Edilizia"),
               ("Commerciale", "Commercio"), ("Distribuzione", "Commercio"),
               ("Consulting", "Servizi"), ("Servizi", "Servizi"), ("Informatica", "Servizi"),
               ("Meccanica", "Manifattura"), ("Plastica", "Manifattura"), ("Tessile", "Manifattura"),
               ("Hotel", "Turismo"), ("Viaggi", "Turismo")]
# the purchased list's own labels for the deployment's sectors (mapped in sources.yaml)
_LIST_LABELS = {"Edilizia": "Costruzioni", "Commercio": "Negozi", "Servizi": "Servizi alle imprese",
                "Manifattura": "Industria", "Turismo": "Alberghi e ristoranti"}
_FORMS = ["S.r.l.", "S.r.l.", "S.p.A.", "S.a.s.", "S.n.c.", "Srls"]
_CITIES = [("Milano", "MI"), ("Roma", "RM"), ("Torino", "TO"), ("Napoli", "NA"),
           ("Bologna", "BO"), ("Firenze", "FI"), ("Bari", "BA"), ("Verona", "VR"),
           ("Padova", "PD"), ("Brescia", "BS")]
_ROLES = ["acquisti", "marketing", "amministrazione", "direzione", "commerciale", "IT"]
_FIRST = ["Luca", "Giulia", "Marco", "Francesca", "Alessandro", "Chiara", "Davide", "Sara",
          "Matteo", "Elena", "Paolo", "Valentina", "Stefano", "Laura", "Andrea", "Marta"]

COMPANY_HEADER = ["codice", "ragionesociale", "partitaiva", "citta", "provincia", "paese",
                  "settore", "tipologia", "fatturato", "dipendenti", "datamodifica"]
USER_HEADER = ["codice", "nome", "cognome", "azienda", "partitaivaazienda", "email", "ruolo",
               "consensoemail"]
POTENTIAL_HEADER = ["codice", "ragionesociale", "partitaiva", "citta", "paese", "settore", "email"]


def _vat(rng: random.Random, used: set[str]) -> str:
    while True:
        first = f"{rng.randrange(10 ** 9, 10 ** 10):010d}"
        vat = first + str(check_digit(first))
        if vat not in used:
            used.add(vat)
            return vat


def _bad_vat(rng: random.Random, used: set[str]) -> str:
    good = _vat(rng, used)
    return good[:10] + str((int(good[10]) + 1 + rng.randrange(8)) % 10)


def _variant(name: str, form: str, k: int) -> str:
    """Another way people write the same legal name."""
    bare = form.replace(".", "")
    return [f"{name.upper()} {bare.upper()}", f"{name} {bare}", f"{name.replace(' ', '-')} {form.lower()}",
            f"{name} {form.lower().rstrip('.')}"][k % 4]


def _slug(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


def _csv(rows: list[list[str]], header: list[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=";", lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def generate_b2b(root: Path, persons: list[dict], seed: int, ymd: str,
                 bad_rows: list[tuple], companies: int | None = None) -> tuple[list[str], dict[str, int]]:
    """Write the B2B files and their truth; append bad rows; return (files, counts).

    ``companies`` overrides the default scale (one company per 25 persons; benchmarks)."""
    rng = random.Random(seed * 7919 + 17)
    n = companies or max(10, len(persons) // 25)
    used: set[str] = set()
    companies, names = [], set()
    while len(companies) < n:
        name = f"{rng.choice(_SURNAMES)} {rng.choice(_ACTIVITIES)[0]}"
        if name in names:
            # beyond the few hundred surname x activity pairs, a numbered branch name
            name = f"{name} {len(companies) + 1}"
        if name in names:
            continue
        names.add(name)
        activity = next(a for a, _ in _ACTIVITIES if f" {a}" in f" {name}")
        sector = dict(_ACTIVITIES)[activity]
        city, prov = rng.choice(_CITIES)
        companies.append({"key": f"K{len(companies) + 1:05d}", "name": name, "form": rng.choice(_FORMS),
                          "vat": _vat(rng, used), "city": city, "prov": prov, "sector": sector})
    # a generic name in two cities: two different companies, neither with a VAT in the CRM
    for city, prov in (("Milano", "MI"), ("Torino", "TO")):
        companies.append({"key": f"K{len(companies) + 1:05d}", "name": "Bar Centrale", "form": "S.n.c.",
                          "vat": _vat(rng, used), "city": city, "prov": prov, "sector": "Turismo"})
    truth_c = []
    files: list[str] = []
    counts: dict[str, int] = {}

    # ---- ERP companies (CSV); bad VATs are extra records at fixed positions
    rows, line = [], 1
    rel = f"b2b/aziende_{ymd}.csv"
    n_bad = max(1, n // 40)
    bad_at = set(rng.sample(range(len(companies)), n_bad))
    for i, c in enumerate(companies):
        line += 1
        rid = f"A{i + 1:06d}"
        rows.append([rid, f"{c['name']} {c['form']}", c["vat"], c["city"], c["prov"], "Italia",
                     c["sector"], c["form"].replace(".", "").lower(),
                     str(rng.randrange(100, 50000) * 1000), str(rng.randrange(2, 400)),
                     f"{rng.randrange(1, 28):02d}/{rng.randrange(1, 10):02d}/2026 10:00"])
        truth_c.append((c["key"], "erp_companies", rid))
        if i in bad_at:
            line += 1
            rows.append([f"A{i + 1:06d}X", f"Errata {c['name']} {c['form']}", _bad_vat(rng, used),
                         c["city"], c["prov"], "Italia", c["sector"], "", "", "", ""])
            bad_rows.append((rel, line, "vat_number", "invalid_vat"))
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text(_csv(rows, COMPANY_HEADER), encoding="utf-8")
    files.append(rel)
    counts["aziende"] = len(rows)

    # ---- CRM companies (Sendero XML): variants of ~40 %, half without VAT; both bars
    rel = f"b2b/aziende-crm_{ymd}.xml"
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', "<sincronizza>",
             "<commons><table>aziende-b2b</table></commons>", "<aziende>"]
    k = 0
    for i, c in enumerate(companies):
        generic = c["name"] == "Bar Centrale"
        if not generic and rng.random() >= 0.4:
            continue
        k += 1
        rid = f"CRM-AZ-{k:05d}"
        vat = "" if generic or rng.random() < 0.5 else (f"IT {c['vat']}" if k % 3 == 0 else c["vat"])
        email = f"info@{_slug(c['name'])}.it"
        lines.append("<azienda>" + "".join(
            f"<{t}>{escape(v)}</{t}>" for t, v in (
                ("codice", rid), ("ragionesociale", c["name"] if generic else _variant(c["name"], c["form"], k)),
                ("partitaiva", vat), ("citta", c["city"]), ("paese", "IT"), ("email", email))) + "</azienda>")
        truth_c.append((c["key"], "crm_companies", rid))
    lines += ["</aziende>", "</sincronizza>", ""]
    (root / rel).write_text("\n".join(lines), encoding="utf-8")
    files.append(rel)
    counts["aziende-crm"] = k

    # ---- company users: 1-4 per company; ~15 % are B2C people; a few unlinkable
    rel = f"b2b/utenti-aziende_{ymd}.csv"
    rows, truth_u = [], []
    b2c = [p for p in persons if p.get("email")]
    taken: set[str] = set()
    u = 0
    for c in companies:
        for j in range(rng.choice([1, 1, 2, 2, 3, 4])):
            u += 1
            rid = f"U{u:06d}"
            person_id = ""
            if b2c and rng.random() < 0.15:
                p = b2c[rng.randrange(len(b2c))]
                if p["email"] not in taken:
                    taken.add(p["email"])
                    first, last, email, person_id = p["first_name"], p["last_name"], p["email"], p["person_id"]
            if not person_id:
                first, last = rng.choice(_FIRST), rng.choice(_SURNAMES)
                email = f"{_slug(first)}.{_slug(last)}.{u}@{_slug(c['name'])}.it"
            named = c["name"] + " " + c["form"] if j == 0 else _variant(c["name"], c["form"], u)
            if c["name"] == "Bar Centrale":  # generic: only the VAT tells which bar
                vat = c["vat"]
            else:
                vat = c["vat"] if rng.random() < 0.2 else ""
            rows.append([rid, first, last, named, vat, email, rng.choice(_ROLES),
                         "si" if rng.random() < 0.6 else "no"])
            truth_u.append((rid, c["key"], person_id))
    for g in range(max(2, n // 15)):
        u += 1
        rid = f"U{u:06d}"
        rows.append([rid, rng.choice(_FIRST), rng.choice(_SURNAMES), f"Sconosciuta {g + 1} S.r.l.", "",
                     f"utente{u}@sconosciuta{g + 1}.it", rng.choice(_ROLES), "no"])
        truth_u.append((rid, "", ""))
    (root / rel).write_text(_csv(rows, USER_HEADER), encoding="utf-8")
    files.append(rel)
    counts["utenti-aziende"] = len(rows)

    # ---- purchased potential companies, with the list's own sector labels
    rel = f"b2b/aziende-potenziali_{ymd}.csv"
    rows, truth_p, line = [], [], 1
    m = max(8, n)
    clients = rng.sample(companies[:n], max(2, n // 4))
    for i in range(m):
        line += 1
        rid = f"L{i + 1:06d}"
        if i < len(clients):
            c = clients[i]
            rows.append([rid, c["name"].upper(), c["vat"], c["city"], "IT", _LIST_LABELS[c["sector"]],
                         f"info@{_slug(c['name'])}.it"])
            truth_p.append((rid, c["key"]))
        else:
            name = f"{rng.choice(_SURNAMES)} {rng.choice(['Prospect', 'Nuova', 'Futura', 'Domani'])} {i}"
            sector = rng.choice(list(_LIST_LABELS))
            city, _ = rng.choice(_CITIES)
            rows.append([rid, f"{name} S.r.l.", _vat(rng, used), city, "IT", _LIST_LABELS[sector],
                         f"info@{_slug(name)}.it"])
            truth_p.append((rid, ""))
    for b in range(max(1, m // 20)):
        line += 1
        rows.append([f"L9{b:05d}", f"Oroscopi {b} S.r.l.", "", "Roma", "IT", "Astrologia", ""])
        bad_rows.append((rel, line, "sector_macro", "unknown_label"))
    (root / rel).write_text(_csv(rows, POTENTIAL_HEADER), encoding="utf-8")
    files.append(rel)
    counts["aziende-potenziali"] = len(rows)

    for name, header, data in (
            ("b2b_companies.csv", ["company_key", "source", "source_record_id"], truth_c),
            ("b2b_users.csv", ["source_record_id", "company_key", "person_id"], truth_u),
            ("b2b_potential.csv", ["source_record_id", "company_key"], truth_p)):
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(header)
        w.writerows(data)
        (root / "_truth" / name).write_text(buf.getvalue(), encoding="utf-8")
    return files, counts
