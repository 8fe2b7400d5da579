"""Sendero sync semantics through ingestion and identity: the ERP id is the first key,
the e-mail the second; an ERP id survives an e-mail change."""
from __future__ import annotations

from tests.stages.test_identity_golden import World


def test_erp_id_first_then_email(tmp_path):
    w = World(tmp_path)
    w.drop("erp/day1.csv", """\
        id,first,last,email,mobile,updated
        E1,Mario,Rossi,mario@old.it,,2026-01-01
        E2,Anna,Bianchi,anna@x.it,,2026-01-01
        """)
    # A CRM record without ERP id but with Anna's e-mail syncs to her by e-mail.
    w.drop("crm/day1.csv", """\
        id;first;last;email;mobile;consent;updated
        C9;Anna;Bianchi;ANNA@x.it;;1;2026-01-02
        """, encoding="cp1252")
    w.materialize()
    first = w.customer_of()
    assert first["C9"] == first["E2"] and first["E1"] != first["E2"]

    # Day 2: the ERP changes Mario's e-mail. Same ERP id: same customer, new e-mail wins.
    w.drop("erp/day2.csv", """\
        id,first,last,email,mobile,updated
        E1,Mario,Rossi,mario@new.it,,2026-02-01
        """)
    w.materialize()
    second = w.customer_of()
    assert second["E1"] == first["E1"]
    assert w.query("SELECT count(*) FROM core.customers WHERE erp_id = 'E1'") == [(1,)]
    assert w.query("SELECT email FROM core.customers WHERE erp_id = 'E1'") == [("mario@new.it",)]
    assert w.query("SELECT count(*) FROM core.customers") == [(2,)]
