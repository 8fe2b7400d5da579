"""Settings tables (lookups.yaml): predefined sales-channel macros, user micros under
them, values accepted as id or label, the hierarchy enforced at ingestion."""
from __future__ import annotations

import datetime as dt
import shutil
import textwrap
from pathlib import Path

import pytest

from tessera.deployment import load_deployment
from tessera.ingest.load import ingest_source
from tessera.engine.warehouse import connect, ensure_warehouse
from tessera.yamlfile import ConfigError

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo"
LOOKUPS = """
lookups:
  sales_channel:
    micro:
      - {id: 1, label: Sito web, macro: e-commerce}
      - {id: 2, label: Landing page, macro: 1}
      - {id: 7, label: Negozio Milano, macro: store}
  product_line:
    macro: [{id: 3, label: Smartphone}]
    micro: [{id: 13, label: SMARTPHONE IPHONE, macro: Smartphone}]
"""


def config(tmp_path, text=LOOKUPS) -> Path:
    d = tmp_path / "config"
    shutil.copytree(DEMO, d)
    (d / "lookups.yaml").write_text(textwrap.dedent(text))
    # the named channel milan_store must name a declared store micro of these tables
    main = (d / "tessera.yaml").read_text()
    (d / "tessera.yaml").write_text(main.replace("milan_store: {macro: 2, micro: 1",
                                                 "milan_store: {macro: 2, micro: 7"))
    return d


def orders_xml(rows: list[tuple[str, str, str]]) -> str:
    body = "".join(
        f"<ordine><idOrdine>{i}</idOrdine><idCanaleMacro>{ma}</idCanaleMacro>"
        f"<idCanaleMicro>{mi}</idCanaleMicro><data>12/09/2015</data><importo>150</importo>"
        f"<idCliente>68</idCliente></ordine>\n" for i, ma, mi in rows)
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<sincronizza>\n<commons><table>ordini</table>'
            f"</commons>\n<ordini>\n{body}</ordini>\n</sincronizza>\n")


def test_channels_by_id_or_label_and_micro_under_its_macro(tmp_path):
    dep = load_deployment(config(tmp_path))
    assert [m.label for m in dep.lookup_table("sales_channel").macro] == [
        "e-commerce", "store", "phone", "mail"]
    landing = tmp_path / "landing"
    (landing / "ecommerce").mkdir(parents=True)
    (landing / "ecommerce" / "ordini_1.xml").write_text(orders_xml([
        ("O1", "1", "1"),                    # ids
        ("O2", "E-commerce", "landing page"),  # labels, any case
        ("O3", "store", "Negozio Milano"),
        ("O4", "1", "7"),                    # a store micro under e-commerce
        ("O5", "9", ""),                     # unknown macro
        ("O6", "phone", "99"),               # unknown micro
        ("O7", "", ""),                      # both optional
    ]))
    con = connect(tmp_path / "wh.duckdb")
    ensure_warehouse(con)
    out = ingest_source(con, dep, dep.source("shop_orders"), landing, "b1",
                        dt.datetime(2026, 11, 1))
    assert (out.files[0].records, out.files[0].rejected) == (7, 3)
    assert con.execute("SELECT source_record_id, channel_macro, channel_micro FROM raw.shop_orders "
                       "ORDER BY 1").fetchall() == [
        ("O1", 1, 1), ("O2", 1, 2), ("O3", 2, 7), ("O7", None, None)]
    assert con.execute("SELECT line, field, reason FROM ops.rejects ORDER BY line").fetchall() == [
        (8, "channel_micro", "sales channel micro does not belong to the record's channel_macro"),
        (9, "channel_macro", "not a known sales channel macro (id or label)"),
        (10, "channel_micro", "not a known sales channel micro (id or label)"),
    ]
    con.close()


def test_without_declared_micros_only_macros_are_checked(tmp_path):
    # tables without sales-channel micros
    dep = load_deployment(config(tmp_path, "lookups:\n  sector:\n    macro: [{id: 1, label: A}]\n"))
    landing = tmp_path / "landing"
    (landing / "ecommerce").mkdir(parents=True)
    (landing / "ecommerce" / "ordini_1.xml").write_text(orders_xml([("O1", "mail", "5"),
                                                                   ("O2", "5", "5")]))
    con = connect(tmp_path / "wh.duckdb")
    ensure_warehouse(con)
    ingest_source(con, dep, dep.source("shop_orders"), landing, "b1", dt.datetime(2026, 11, 1))
    assert con.execute("SELECT source_record_id, channel_macro, channel_micro FROM raw.shop_orders"
                       ).fetchall() == [("O1", 4, 5)]
    con.close()


@pytest.mark.parametrize("text,message", [
    ("lookups:\n  sales_channel:\n    macro: [{id: 9, label: fax}]\n", "predefined"),
    ("lookups:\n  sales_channel:\n    micro: [{id: 1, label: x, macro: fax}]\n", "unknown macro 'fax'"),
    ("lookups:\n  product_line:\n    micro: [{id: 1, label: x}]\n", "needs its macro"),
    ("lookups:\n  product_line:\n    macro: [{id: 1, label: a}, {id: 1, label: b}]\n", "duplicate id"),
])
def test_bad_lookup_tables_fail_at_load(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_deployment(config(tmp_path, text))


def test_template_lists_the_deployment_lookup_values(tmp_path):
    import openpyxl

    from tessera.ingest.templates import write_template

    dep = load_deployment(config(tmp_path))
    path = write_template(dep, "b2c_users", tmp_path / "t.xlsx")
    rows = list(openpyxl.load_workbook(path)["valori"].iter_rows(min_row=2, values_only=True))
    assert ("sales_channel.macro", "2", "store", None) in rows
    assert ("sales_channel.micro", "7", "Negozio Milano", "store") in rows
    assert ("product_line.micro", "13", "SMARTPHONE IPHONE", "Smartphone") in rows
    assert ("sesso", "M", None, None) in rows
