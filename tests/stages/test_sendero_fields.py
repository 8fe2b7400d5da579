"""Sendero's full B2C field list (seed 002): profession, marital status, education, user
type, ten interest macro/micro pairs, five source macro/micro pairs (source macros
predefined), permanent-form source type, registration detail; and the lookups enforced:
a micro under its macro, else a reject with file, line, field and reason.

The import is the registry's own layout (the compatible source: the template's headers),
into a temporary warehouse; the demo's lookups.yaml declares the tables."""
from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest

from tessera.deployment import load_deployment
from tessera.engine.warehouse import connect, ensure_warehouse
from tessera.feeds.compatible import compatible_source, compatible_step
from tessera.ingest.load import ingest_source
from tessera.ingest.staging import build_contacts
from tessera.ingest.templates import registry_columns
from tessera.vocabulary import field_catalogue, profile_fields, sendero_contact_fields
from tessera.yamlfile import ConfigError

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo"
NOW = dt.datetime(2026, 11, 1, 6, 0)


@pytest.fixture()
def world(tmp_path):
    dep = load_deployment(DEMO)
    src = compatible_source(dep, "b2c_users", "b2c_import", "crm", "b2c/*.csv")
    dep = dep.model_copy(update={"sources": [*dep.sources, src]})
    con = connect(tmp_path / "wh.duckdb")
    ensure_warehouse(con)
    yield dep, src, con, tmp_path / "landing"
    con.close()


def _write(landing: Path, rows: list[dict]) -> None:
    """A file in the registry's import layout (every header of the template)."""
    headers = [c.header for c in registry_columns(load_deployment(DEMO), "b2c_users")]
    lines = [";".join(headers)] + [";".join(r.get(h, "") for h in headers) for r in rows]
    (landing / "b2c").mkdir(parents=True, exist_ok=True)
    (landing / "b2c" / "utenti_1.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


GOOD = {"codice": "B1", "nome": "Anna", "cognome": "Rossi", "email": "anna.rossi@example.it",
        "paese": "IT", "professione": "studente", "statocivile": "2", "titolodistudio": "Laurea",
        "tipologia": "cliente", "intmacro1": "moda", "intmicro1": "donna", "intmacro10": "3",
        "intmicro10": "mare", "fontemacro1": "permanent form", "fontemicro1": "newsletter",
        "fontemacro5": "5", "fontemicro5": "4", "tipologiafonteformpermanente": "landing page",
        "dettaglioregistrazione": "1"}


def test_every_sendero_b2c_field_is_in_the_contract_template_and_export(world):
    dep, _src, _con, _landing = world
    fields = sendero_contact_fields()
    assert {"profession", "marital_status", "education", "user_type", "permanent_form_source_type",
            "registration_detail"} <= set(fields)
    assert {f"interest_{lv}_{i}" for lv in ("macro", "micro") for i in range(1, 11)} <= set(fields)
    assert {f"source_{lv}_{i}" for lv in ("macro", "micro") for i in range(1, 6)} <= set(fields)
    headers = {c.header: c.field for c in registry_columns(dep, "b2c_users")}
    assert headers["intmicro10"] == "interest_micro_10" and headers["fontemicro5"] == "source_micro_5"
    assert headers["professione"] == "profession" and headers["statocivile"] == "marital_status"
    # the demo maps none of them: its golden tables keep the base columns
    assert profile_fields(load_deployment(DEMO)) == {}
    # a deployment whose source maps them gets them as rule fields (the registry's filters)
    assert {"interest_micro_1", "source_macro_5", "profession"} <= set(field_catalogue(dep))


def test_lookups_accept_ids_and_labels_and_store_ids(world):
    dep, src, con, landing = world
    _write(landing, [GOOD])
    out = ingest_source(con, dep, src, landing, "b1", NOW)
    assert (out.files[0].records, out.files[0].rejected) == (1, 0)
    row = con.execute("""SELECT profession, marital_status, education, user_type, interest_macro_1,
        interest_micro_1, interest_macro_10, interest_micro_10, source_macro_1, source_micro_1,
        source_macro_5, source_micro_5, permanent_form_source_type, registration_detail
        FROM raw.b2c_import""").fetchone()
    assert row == (3, 2, 3, 1, 1, 1, 3, 5, 5, 3, 5, 4, 2, 1)
    # they flow into staging (and so into the golden record, whose fields they are)
    build_contacts(con, dep)
    assert con.execute("SELECT interest_micro_10, source_micro_1 FROM staging.contacts "
                       "WHERE source = 'b2c_import'").fetchone() == (5, 3)


def test_a_wrong_micro_is_rejected_with_file_line_field_and_reason(world):
    dep, src, con, landing = world
    rows = [
        GOOD,                                                            # line 2
        {**GOOD, "codice": "B2", "intmacro1": "sport"},                   # donna is under moda
        {**GOOD, "codice": "B3", "fontemacro1": "ERP sync"},              # newsletter is under form
        {**GOOD, "codice": "B4", "fontemacro5": "9"},                     # no such predefined macro
        {**GOOD, "codice": "B5", "intmicro10": "corsa"},                  # corsa is under sport
        {**GOOD, "codice": "B6", "professione": "astronauta"},            # not in the table
        {**GOOD, "codice": "B7", "intmacro1": "", "intmicro1": ""},        # both optional
    ]
    _write(landing, rows)
    out = ingest_source(con, dep, src, landing, "b1", NOW)
    assert (out.files[0].records, out.files[0].rejected) == (7, 5)  # records, rejected records
    got = con.execute("SELECT file, line, field, reason FROM ops.rejects ORDER BY line, field").fetchall()
    assert got == [
        ("b2c/utenti_1.csv", 3, "interest_micro_1", "interest micro does not belong to the record's interest_macro_1"),
        ("b2c/utenti_1.csv", 4, "source_micro_1", "source micro does not belong to the record's source_macro_1"),
        ("b2c/utenti_1.csv", 5, "source_macro_5", "not a known source macro (id or label)"),
        # the micro is judged against the macro as delivered, so it is reported too
        ("b2c/utenti_1.csv", 5, "source_micro_5", "source micro does not belong to the record's source_macro_5"),
        ("b2c/utenti_1.csv", 6, "interest_micro_10", "interest micro does not belong to the record's interest_macro_10"),
        ("b2c/utenti_1.csv", 7, "profession", "not a known profession macro (id or label)"),
    ]
    assert sorted(r[0] for r in con.execute("SELECT source_record_id FROM raw.b2c_import").fetchall()) \
        == ["B1", "B7"]


def test_sales_channel_micro_under_its_macro_in_the_demo(tmp_path):
    """The demo declares its sales-channel micros: a store micro under e-commerce is a reject."""
    dep = load_deployment(DEMO)
    landing = tmp_path / "landing"
    (landing / "ecommerce").mkdir(parents=True)
    body = "".join(
        f"<ordine><idOrdine>{i}</idOrdine><idCanaleMacro>{ma}</idCanaleMacro>"
        f"<idCanaleMicro>{mi}</idCanaleMicro><data>12/09/2026</data><importo>150</importo>"
        f"<idCliente>68</idCliente></ordine>\n"
        for i, ma, mi in [("O1", "2", "1"), ("O2", "store", "Milano"), ("O3", "1", "1"),
                          ("O4", "e-commerce", "marketplace")])
    (landing / "ecommerce" / "ordini_1.xml").write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n<sincronizza>\n<commons><table>ordini</table>'
        f"</commons>\n<ordini>\n{body}</ordini>\n</sincronizza>\n")
    con = connect(tmp_path / "wh.duckdb")
    ensure_warehouse(con)
    ingest_source(con, dep, dep.source("shop_orders"), landing, "b1", NOW)
    assert con.execute("SELECT source_record_id, channel_macro, channel_micro FROM raw.shop_orders "
                       "ORDER BY 1").fetchall() == [("O1", 2, 1), ("O2", 2, 1), ("O4", 1, 6)]
    assert con.execute("SELECT field, reason FROM ops.rejects").fetchall() == [
        ("channel_micro", "sales channel micro does not belong to the record's channel_macro")]
    con.close()


def test_source_macros_are_predefined_and_named_channels_checked(tmp_path):
    cfg = tmp_path / "cfg"
    shutil.copytree(DEMO, cfg)
    text = (cfg / "lookups.yaml").read_text()
    (cfg / "lookups.yaml").write_text(text.replace(
        "  source:\n    micro:\n", "  source:\n    macro: [{id: 9, label: fax}]\n    micro:\n"))
    with pytest.raises(ConfigError, match="source macros are predefined"):
        load_deployment(cfg)
    (cfg / "lookups.yaml").write_text(text)
    main = (cfg / "tessera.yaml").read_text()
    (cfg / "tessera.yaml").write_text(main.replace("milan_store: {macro: 2, micro: 1",
                                                   "milan_store: {macro: 2, micro: 4"))
    with pytest.raises(ConfigError, match="micro 4 is not a sales-channel micro under macro 2"):
        load_deployment(cfg)


def test_compatible_export_writes_the_sendero_fields(world):
    dep, _src, con, _landing = world
    con.execute("CREATE SCHEMA IF NOT EXISTS core")
    con.execute("CREATE TABLE core.company_contacts (customer_id BIGINT, company_id BIGINT)")
    con.execute("CREATE TABLE core.customers AS SELECT 1::BIGINT AS customer_id, 'Anna' AS first_name, "
                "5::BIGINT AS interest_micro_10, 3::BIGINT AS source_micro_1, "
                "'granted' AS email_consent, 'unknown' AS sms_consent")
    from tessera.engine import as_engine

    step = compatible_step(as_engine(con), dep, "b2c_users")
    cols = [d[0] for d in con.execute(step.sql, step.params).description]
    row = dict(zip(cols, con.execute(step.sql, step.params).fetchone()))
    assert (row["nome"], row["intmicro10"], row["fontemicro1"], row["professione"]) == ("Anna", 5, 3, None)
