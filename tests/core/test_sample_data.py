"""Tests for tessera.sampledata.generator.generate (the deterministic multi-source sample)."""
from __future__ import annotations

import csv
import io
import json
import re
import time
from collections import Counter, defaultdict
from datetime import date, datetime
from pathlib import Path

import pytest
from lxml import etree

from tessera.sampledata.generator import generate

YMD = "20261101"
CRM = f"crm/crm_contacts_{YMD}.csv"
ERP = f"erp/erp_contacts_{YMD}.xml"
ORD = f"ecommerce/ordini_{YMD}.xml"
DET = f"ecommerce/dettaglio-ordini_{YMD}.xml"
WEB = f"web/web_events_{YMD}.jsonl"
BOUNCES = f"email/bounces_{YMD}.csv"
UNSUBS = f"email/unsubscribes_{YMD}.csv"
B2B_COMPANIES = f"b2b/aziende_{YMD}.csv"
B2B_CRM = f"b2b/aziende-crm_{YMD}.xml"
B2B_USERS = f"b2b/utenti-aziende_{YMD}.csv"
B2B_POTENTIAL = f"b2b/aziende-potenziali_{YMD}.csv"
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$", re.I)
CRM_HEADER = ("crm_id;nome;cognome;email;cellulare;data_nascita;sesso;indirizzo;cap;citta;"
              "provincia;paese;codice_fiscale;consenso_email;data_modifica;livello_fedelta;proprietario")
POLISH = set("łŁąĄęĘśŚćĆńŃżŻźŹ")


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample")
    summary = generate(out, contacts=2000, seed=42)
    return out, summary


def _read_csv(path: Path, encoding: str = "utf-8") -> list[dict]:
    with open(path, newline="", encoding=encoding) as fh:
        return list(csv.DictReader(fh))


def _crm_records(path: Path):
    """(start line, fields) for every CRM record, counting physical lines."""
    out = []
    with open(path, newline="", encoding="cp1252") as fh:
        reader = csv.reader(fh, delimiter=";", quotechar='"')
        header = next(reader)
        prev = reader.line_num
        for row in reader:
            out.append((prev + 1, row))
            prev = reader.line_num
    return header, out


def _valid_ddmmyyyy(value: str) -> bool:
    try:
        datetime.strptime(value, "%d/%m/%Y")
        return True
    except ValueError:
        return False


def _bad(out: Path, rel: str) -> set[tuple[int, str, str]]:
    return {(int(r["line"]), r["field"], r["problem"])
            for r in _read_csv(out / "_truth" / "bad_rows.csv") if r["file"] == rel}


# --------------------------------------------------------------------------- #
def test_summary_and_files(sample):
    out, summary = sample
    assert summary["persons"] == 2000
    for rel in summary["files"]:
        assert (out / rel).is_file(), rel
    for rel in (CRM, ERP, ORD, DET, WEB, BOUNCES, UNSUBS, f"ecommerce/prodotti_{YMD}.xml",
                f"ecommerce/linee-prodotti-macro_{YMD}.xml", f"ecommerce/linee-prodotti-micro_{YMD}.xml",
                "_truth/records.csv", "_truth/bad_rows.csv", "_truth/persons.csv"):
        assert rel in summary["files"]
    assert set(summary["records"]) >= {"crm_contacts", "erp_contacts", "ordini", "dettaglio-ordini",
                                       "prodotti", "linee-prodotti-macro", "linee-prodotti-micro",
                                       "web_events", "bounces", "unsubscribes"}


def test_deterministic(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    sa = generate(a, contacts=300, seed=7)
    sb = generate(b, contacts=300, seed=7)
    generate(c, contacts=300, seed=8)
    assert sa == sb
    for rel in sa["files"]:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert (a / CRM).read_bytes() != (c / CRM).read_bytes()
    assert (a / "_truth/persons.csv").read_bytes() != (c / "_truth/persons.csv").read_bytes()


def test_as_of_names_files(tmp_path):
    s = generate(tmp_path, contacts=50, seed=1, as_of=date(2025, 3, 15))
    assert "crm/crm_contacts_20250315.csv" in s["files"]
    assert all("20261101" not in f for f in s["files"])


def test_crm_encoding_and_format(sample):
    out, summary = sample
    raw = (out / CRM).read_bytes()
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    text = raw.decode("cp1252")
    assert not any(ch in POLISH for ch in text)  # transliterated
    assert any(ch in text for ch in "óàèéìòù")  # cp1252 accents kept
    assert text.startswith(CRM_HEADER + "\r\n")
    header, records = _crm_records(out / CRM)
    assert ";".join(header) == CRM_HEADER
    assert len(records) == summary["records"]["crm_contacts"]
    physical = raw.count(b"\n")
    assert physical > len(records) + 1  # some embedded newlines in addresses
    assert any("\n" in row[7] for _, row in records if len(row) == 17)
    ok = [row for _, row in records if len(row) == 17 and row[0]]
    assert sum(1 for r in ok if r[0].startswith("CRM-")) == len(ok)
    assert {r[6] for r in ok} == {"M", "F"}
    assert {r[11] for r in ok} == {"IT", "PL"}
    assert {r[15] for r in ok} <= {"bronze", "silver", "gold", ""}
    assert {r[16] for r in ok} == {"g.rossi", "m.bianchi", "a.kowalska", "l.ferrari", ""}
    assert {r[13] for r in ok} <= {"1", "0", ""}
    # Italian postcodes keep their leading zero
    assert any(r[8].startswith("0") and len(r[8]) == 5 for r in ok if r[11] == "IT")
    # e-mail variants: upper case and padded spaces
    assert any(r[3] != r[3].strip() for r in ok)
    assert any(r[3].isupper() for r in ok)
    # phone formats differ from the ERP's +39...
    assert any(r[4].startswith("0039 ") for r in ok) and any(r[4].startswith("(+39) ") for r in ok)
    ids = [r[0] for r in ok]
    assert len(ids) == len(set(ids))


def test_xml_files_parse(sample):
    out, summary = sample
    for rel in summary["files"]:
        if rel.endswith(".xml"):
            tree = etree.parse(str(out / rel))
            assert tree.getroot().tag == "sincronizza"
            assert tree.getroot().find("commons/table").text
    erp = etree.parse(str(out / ERP)).getroot()
    assert erp.findtext("commons/table") == "anagrafiche-b2c"
    utenti = erp.findall("utenti/utente")
    assert len(utenti) == summary["records"]["erp_contacts"]
    first = utenti[0]
    assert [c.tag for c in first] == [
        "idgestionale", "nome", "cognome", "email", "telefonocellulare", "telefonofisso",
        "indirizzo", "cap", "citta", "provinciaiso", "paeseiso", "datanascita", "sesso",
        "codicefiscale", "datamodifica"]
    assert any(u.findtext("telefonofisso") == "" for u in utenti)  # empty tags kept
    assert any((u.findtext("telefonocellulare") or "").startswith("+48") for u in utenti)
    assert b"<![CDATA[" in (out / ERP).read_bytes()
    assert (out / ERP).read_bytes().decode("utf-8")


def test_truth_records_cover_everyone(sample):
    out, _ = sample
    persons = _read_csv(out / "_truth" / "persons.csv")
    assert len(persons) == 2000
    assert list(persons[0]) == ["person_id", "first_name", "last_name", "email", "country"]
    assert persons[0]["person_id"] == "P0000001"
    emails = [p["email"] for p in persons]
    assert len(set(emails)) == len(emails)
    assert all(e == e.lower() and EMAIL_RE.match(e) for e in emails)
    countries = Counter(p["country"] for p in persons)
    assert 0.7 < countries["IT"] / 2000 < 0.9
    recs = _read_csv(out / "_truth" / "records.csv")
    by_person = defaultdict(list)
    for r in recs:
        by_person[r["person_id"]].append(r["source"])
    assert set(by_person) == {p["person_id"] for p in persons}
    assert any("crm_contacts" in s and "erp_contacts" in s for s in by_person.values())
    assert any(s.count("crm_contacts") == 2 for s in by_person.values())
    assert {r["source"] for r in recs} == {"crm_contacts", "erp_contacts"}
    ids = [(r["source"], r["source_record_id"]) for r in recs]
    assert len(ids) == len(set(ids))


def test_truth_matches_files(sample):
    out, _ = sample
    recs = _read_csv(out / "_truth" / "records.csv")
    crm_truth = {r["source_record_id"] for r in recs if r["source"] == "crm_contacts"}
    erp_truth = {r["source_record_id"] for r in recs if r["source"] == "erp_contacts"}
    bad_crm_lines = {line for line, _, _ in _bad(out, CRM)}
    _, records = _crm_records(out / CRM)
    good_crm_ids = {row[0] for line, row in records if line not in bad_crm_lines}
    assert good_crm_ids == crm_truth
    bad_erp_lines = {line for line, _, _ in _bad(out, ERP)}
    root = etree.parse(str(out / ERP)).getroot()
    good_erp = {u.findtext("idgestionale") for u in root.iter("utente")
                if u.sourceline not in bad_erp_lines}
    assert good_erp == erp_truth


def test_polish_names_transliterated_in_crm_only(sample):
    out, _ = sample
    persons = {p["person_id"]: p for p in _read_csv(out / "_truth" / "persons.csv")}
    recs = _read_csv(out / "_truth" / "records.csv")
    _, records = _crm_records(out / CRM)
    crm_rows = {row[0]: row for _, row in records if len(row) == 17 and row[0]}
    erp = {u.findtext("idgestionale"): u for u in etree.parse(str(out / ERP)).getroot().iter("utente")}
    ids = defaultdict(dict)
    for r in recs:
        ids[r["person_id"]][r["source"]] = r["source_record_id"]
    translit = str.maketrans("łŁąĄęĘśŚćĆńŃżŻźŹ", "lLaAeEsScCnNzZzZ")
    found = 0
    for pid, src in ids.items():
        p = persons[pid]
        full = p["first_name"] + p["last_name"]
        if p["country"] != "PL" or not (set(full) & POLISH) or len(src) < 2:
            continue
        crm, u = crm_rows[src["crm_contacts"]], erp[src["erp_contacts"]]
        assert u.findtext("nome") == p["first_name"] and u.findtext("cognome") == p["last_name"]
        assert not (set(crm[1] + crm[2]) & POLISH)
        if (crm[1], crm[2]) == (p["first_name"].translate(translit), p["last_name"].translate(translit)):
            found += 1
    assert found > 0


def test_old_emails_and_duplicates(sample):
    out, _ = sample
    persons = {p["person_id"]: p for p in _read_csv(out / "_truth" / "persons.csv")}
    recs = _read_csv(out / "_truth" / "records.csv")
    _, records = _crm_records(out / CRM)
    crm_rows = {row[0]: row for _, row in records if len(row) == 17 and row[0]}
    per_person = defaultdict(list)
    for r in recs:
        if r["source"] == "crm_contacts":
            per_person[r["person_id"]].append(crm_rows[r["source_record_id"]])
    old = [pid for pid, rows in per_person.items()
           if rows[0][3].strip().lower() != persons[pid]["email"]]
    assert old  # some CRM records carry an old e-mail
    dups = [rows for rows in per_person.values() if len(rows) == 2]
    assert dups
    for a, b in dups:
        assert a[3].strip().lower() == b[3].strip().lower()
        assert a[3].strip() != b[3].strip()  # same address, different case


def test_bad_rows_point_at_records(sample):
    out, _ = sample
    bad = _read_csv(out / "_truth" / "bad_rows.csv")
    kinds = {(r["file"], r["field"], r["problem"]) for r in bad}
    expected = {
        (CRM, "email", "invalid_email"), (CRM, "birth_date", "invalid_date"),
        (CRM, "source_record_id", "missing_id"), (CRM, "*", "field_count"),
        (ERP, "source_record_id", "missing_id"), (ERP, "birth_date", "invalid_date"),
        (ERP, "email", "invalid_email"),
        (ORD, "amount", "invalid_number"), (ORD, "order_date", "invalid_date"),
        (DET, "quantity", "invalid_number"),
        (WEB, "*", "invalid_json"), (WEB, "type", "missing_required"),
        (BOUNCES, "bounce_type", "not_allowed"), (UNSUBS, "channel", "not_allowed"),
        (B2B_COMPANIES, "vat_number", "invalid_vat"), (B2B_POTENTIAL, "sector_macro", "unknown_label"),
        ("crm/crm_notes_20261101.csv", "created_at", "missing_required"),
        ("crm/crm_tasks_20261101.csv", "status", "not_allowed"),
        ("marketing/campaign_costs_20261101.csv", "cost", "invalid_number"),
        ("email/messages_20261101.csv", "status", "not_allowed"),
        ("mobile/app_events_20261101.csv", "event_type", "not_allowed"),
        ("crm/crm_details_20261101.csv", "kind", "not_allowed"),
    }
    assert kinds == expected

    # CRM: the set of records that really are bad == the truth (by physical start line)
    _, records = _crm_records(out / CRM)
    found = set()
    for line, row in records:
        if len(row) != 17:
            found.add((line, "*", "field_count"))
            continue
        if not row[0]:
            found.add((line, "source_record_id", "missing_id"))
        if not EMAIL_RE.match(row[3].strip()):
            found.add((line, "email", "invalid_email"))
        if row[5] and not _valid_ddmmyyyy(row[5]):
            found.add((line, "birth_date", "invalid_date"))
    assert found == _bad(out, CRM)
    assert len(found) <= 0.02 * len(records)

    # ERP: lxml sourceline of <utente> is the recorded line
    found = set()
    for u in etree.parse(str(out / ERP)).getroot().iter("utente"):
        email = u.findtext("email") or ""
        if not u.findtext("idgestionale") and not email:
            found.add((u.sourceline, "source_record_id", "missing_id"))
            continue
        if email and not EMAIL_RE.match(email):
            found.add((u.sourceline, "email", "invalid_email"))
        d = u.findtext("datanascita") or ""
        if d and not _valid_ddmmyyyy(d):
            found.add((u.sourceline, "birth_date", "invalid_date"))
    assert found == _bad(out, ERP)

    found = set()
    for o in etree.parse(str(out / ORD)).getroot().iter("ordine"):
        if not re.fullmatch(r"\d+\.\d\d", o.findtext("importo")):
            found.add((o.sourceline, "amount", "invalid_number"))
        if not _valid_ddmmyyyy(o.findtext("data")):
            found.add((o.sourceline, "order_date", "invalid_date"))
    assert found == _bad(out, ORD)
    found = {(d.sourceline, "quantity", "invalid_number")
             for d in etree.parse(str(out / DET)).getroot().iter("dettaglio")
             if not d.findtext("quantita").isdigit()}
    assert found == _bad(out, DET)
    lines = (out / ERP).read_text("utf-8").split("\n")
    assert all(lines[ln - 1] == "<utente>" for ln, _, _ in _bad(out, ERP))

    # JSONL
    found = set()
    for i, line in enumerate((out / WEB).read_text("utf-8").split("\n")[:-1], start=1):
        try:
            ev = json.loads(line)
        except json.JSONDecodeError:
            found.add((i, "*", "invalid_json"))
            continue
        if "type" not in ev:
            found.add((i, "type", "missing_required"))
    assert found == _bad(out, WEB)

    # ESP feedback
    rows = _read_csv(out / BOUNCES)
    assert {(i + 2, "bounce_type", "not_allowed") for i, r in enumerate(rows)
            if r["bounce_type"] not in ("hard", "soft")} == _bad(out, BOUNCES)
    rows = _read_csv(out / UNSUBS)
    assert {(i + 2, "channel", "not_allowed") for i, r in enumerate(rows)
            if r["channel"] not in ("email", "sms")} == _bad(out, UNSUBS)


def test_bad_rows_exist_when_tiny(tmp_path):
    s = generate(tmp_path, contacts=50, seed=3)
    bad = _read_csv(tmp_path / "_truth" / "bad_rows.csv")
    # one more each: the campaign costs file; messages, app events and details (#16)
    assert len({(r["file"], r["field"], r["problem"]) for r in bad}) == 22
    assert len(_read_csv(tmp_path / "_truth" / "persons.csv")) == 50
    assert s["persons"] == 50


def test_orders_consistent(sample):
    out, _ = sample
    erp_ids = {u.findtext("idgestionale") for u in etree.parse(str(out / ERP)).getroot().iter("utente")}
    orders = {}
    for o in etree.parse(str(out / ORD)).getroot().iter("ordine"):
        assert o.findtext("idCliente") in erp_ids
        assert 1 <= int(o.findtext("idCanaleMacro")) <= 4
        assert 1 <= int(o.findtext("idCanaleMicro")) <= 8
        orders[o.findtext("idOrdine")] = o.findtext("importo")
    assert len(orders) == len(set(orders))
    products = {p.findtext("idProdotto")
                for p in etree.parse(str(out / f"ecommerce/prodotti_{YMD}.xml")).getroot().iter("prodotto")}
    assert len(products) >= 30
    sums = defaultdict(int)
    for d in etree.parse(str(out / DET)).getroot().iter("dettaglio"):
        assert d.findtext("idOrdine") in orders
        assert d.findtext("idProdotto") in products
        q = d.findtext("quantita")
        if q.isdigit():
            cents = int(d.findtext("prezzo").replace(".", ""))
            sums[d.findtext("idOrdine")] += int(q) * cents
    checked = 0
    for oid, amount in orders.items():
        if re.fullmatch(r"\d+\.\d\d", amount) and oid in sums:
            assert int(amount.replace(".", "")) == sums[oid]
            checked += 1
    assert checked > 100


def test_web_and_email_files(sample):
    out, _ = sample
    persons = _read_csv(out / "_truth" / "persons.csv")
    canonical = {p["email"] for p in persons}
    n_known = 0
    types = Counter()
    for line in (out / WEB).read_text("utf-8").splitlines():
        try:
            ev = json.loads(line)
        except json.JSONDecodeError:
            continue
        assert re.fullmatch(r"EV\d{8}", ev["event_id"])
        assert ev["occurred_at"].endswith("Z") and ev["occurred_at"] < "2026-11-01"
        assert ev["email"] == ev["email"].lower()
        n_known += ev["email"] in canonical
        types[ev.get("type")] += 1
    assert types.most_common(1)[0][0] == "page_view"
    assert {"download", "email_open", "email_click", "form_fill", "cart"} <= set(types)
    assert n_known > 0.8 * sum(types.values())
    assert (out / BOUNCES).read_text("utf-8").splitlines()[0] == "campaign_id,email,bounce_type,bounced_at"
    assert (out / UNSUBS).read_text("utf-8").splitlines()[0] == "email,channel,requested_at,origin"
    for r in _read_csv(out / BOUNCES):
        assert re.fullmatch(r"CMP-2026-(0[1-9]|10)", r["campaign_id"])
        datetime.fromisoformat(r["bounced_at"])


def test_speed_2000(tmp_path):
    t0 = time.perf_counter()
    generate(tmp_path, contacts=2000, seed=11)
    assert time.perf_counter() - t0 < 10


def test_b2b_files_and_truth(sample):
    """Companies with valid VATs (bad ones are extra rows), CRM duplicates written as
    legal-name variants, users pointing at real companies or at none, a purchased list
    with the list's own sector labels, some of them client companies."""
    from tessera.ingest.vat import vat_key

    out, summary = sample
    for rel in (B2B_COMPANIES, B2B_CRM, B2B_USERS, B2B_POTENTIAL, "_truth/b2b_companies.csv",
                "_truth/b2b_users.csv", "_truth/b2b_potential.csv"):
        assert rel in summary["files"]
    bad = {line for line, _, _ in _bad(out, B2B_COMPANIES)}
    rows = list(csv.DictReader(io.StringIO((out / B2B_COMPANIES).read_text("utf-8")), delimiter=";"))
    assert bad and all((vat_key(r["partitaiva"]) is None) == (i + 2 in bad) for i, r in enumerate(rows))
    truth = _read_csv(out / "_truth" / "b2b_companies.csv")
    crm = [t for t in truth if t["source"] == "crm_companies"]
    assert len({t["company_key"] for t in truth}) == len([t for t in truth if t["source"] == "erp_companies"])
    assert crm and len(crm) < len(truth)
    users = _read_csv(out / "_truth" / "b2b_users.csv")
    assert any(not u["company_key"] for u in users) and any(u["person_id"] for u in users)
    pot = _read_csv(out / "_truth" / "b2b_potential.csv")
    assert any(p["company_key"] for p in pot) and any(not p["company_key"] for p in pot)
    labels = {r["settore"] for r in csv.DictReader(
        io.StringIO((out / B2B_POTENTIAL).read_text("utf-8")), delimiter=";")}
    assert "Astrologia" in labels and labels & {"Costruzioni", "Negozi", "Industria"}


def test_card_entity_files_hold_their_planted_bad_rows(sample):
    """Messages, app events and details: the one bad row of each file is where the truth
    says, every other row is valid for its contract, and the status codes all occur."""
    import csv

    out, summary = sample
    checks = (("email/messages_20261101.csv", ",", "status", "status",
               {"", "FP", "IE", "OO", "PF", "TE", "TR", "SF", "LF", "HF", "UF", "C", "WFS"}),
              ("mobile/app_events_20261101.csv", ",", "type", "event_type",
               {"install", "launch", "session_end", "location"}),
              ("crm/crm_details_20261101.csv", ";", "tipo", "kind", {"standard", "dictionary"}))
    for rel, sep, column, field, allowed in checks:
        rows = list(csv.DictReader((out / rel).open(encoding="utf-8"), delimiter=sep))
        assert len(rows) > 10, rel
        found = {(i + 2, field, "not_allowed") for i, r in enumerate(rows) if r[column] not in allowed}
        assert found == _bad(out, rel), rel
    messages = list(csv.DictReader((out / "email/messages_20261101.csv").open(encoding="utf-8")))
    assert {r["channel"] for r in messages} == {"email", "sms", "web_push"}
    assert {r["status"] for r in messages} >= {"", "HF", "WFS", "FP"}
    assert summary["records"]["messages"] == len(messages)
