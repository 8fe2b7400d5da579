"""invalid_values: drop_value — a bad optional value is emptied and reported, the record kept."""

from __future__ import annotations

from tests.stages.test_identity_golden import World

SOURCES = """
sources:
  - name: crm_people
    entity: contact
    node: crm
    format: csv
    path: "crm/*.csv"
    csv: {delimiter: ",", encoding: utf-8}
    invalid_values: drop_value
    timestamp_format: "%Y-%m-%d"
    columns: {source_record_id: id, first_name: first, email: email, birth_date: born, updated_at: updated}
  - name: erp_people
    entity: contact
    node: erp
    format: csv
    path: "erp/*.csv"
    csv: {delimiter: ",", encoding: utf-8}
    timestamp_format: "%Y-%m-%d"
    columns: {source_record_id: id, erp_id: id, email: email, birth_date: born}
"""


def test_bad_optional_values_are_dropped_not_the_record(tmp_path):
    w = World(tmp_path)
    (w.config / "sources.yaml").write_text(SOURCES)
    w.drop("crm/c.csv", "id,first,email,born,updated\n"
                        "C1,Anna,anna@x.it,31/02/1980,2026-01-01\n"     # impossible date
                        "C2,Luca,luca@x,01/01/1990,2026-01-01\n"        # malformed e-mail
                        ",Nobody,nobody@x.it,01/01/1990,2026-01-01\n")  # no id: refused whole
    w.drop("erp/e.csv", "id,email,born\nE1,anna@x.it,31/02/1980\n")     # default: refused whole
    w.materialize()
    rows = dict((rid, (email, born)) for rid, email, born in w.query(
        "SELECT source_record_id, email, birth_date FROM raw.crm_people"))
    assert rows == {"C1": ("anna@x.it", None), "C2": (None, __import__("datetime").date(1990, 1, 1))}
    rejects = sorted(w.query("SELECT file, line, field, reason FROM ops.rejects"))
    assert ("crm/c.csv", 2, "birth_date", "value dropped, record kept: not a date in format %d/%m/%Y") in rejects
    assert ("crm/c.csv", 3, "email", "value dropped, record kept: not a valid e-mail address") in rejects
    assert ("crm/c.csv", 4, "source_record_id", "required field is empty") in rejects
    assert ("erp/e.csv", 2, "birth_date", "not a date in format %d/%m/%Y") in rejects
    report = dict((f, (rec, new, rej)) for f, rec, new, rej in w.query(
        "SELECT file, records, new, rejected FROM ops.import_report"))
    assert report == {"crm/c.csv": (3, 2, 1), "erp/e.csv": (1, 0, 1)}
