"""A withdrawal reaches the person by any identifier and survives every merge (#20 item 3).

One person, two records from two sources (ERP: ERP id, e-mail, mobile; CRM: the same
e-mail in other case, SMS granted by its import flag, dated after the STOP). An SMS STOP
names them by the phone it came from, by e-mail or by ERP id, and arrives before both
records, between them or after both, with the records in either order. Whatever the
order, the merged person is SMS-withdrawn (an import's newer "yes" is no explicit
grant), keeps e-mail, and the blocking check re-verifies it.
"""

from __future__ import annotations

import pytest

from tests.stages.test_identity_golden import World

SOURCES = """
sources:
  - name: erp_people
    entity: contact
    node: erp
    format: csv
    path: "erp/*.csv"
    csv: {delimiter: ",", encoding: utf-8}
    timestamp_format: "%Y-%m-%d"
    columns: {source_record_id: id, erp_id: id, first_name: first, last_name: last, email: email,
              mobile: mobile, updated_at: updated}
  - name: crm_people
    entity: contact
    node: crm
    format: csv
    path: "crm/*.csv"
    csv: {delimiter: ",", encoding: utf-8}
    timestamp_format: "%Y-%m-%d"
    columns: {source_record_id: id, first_name: first, last_name: last, email: email,
              consent_email: mail_ok, consent_sms: sms_ok, updated_at: updated}
  - name: stops
    entity: unsubscribe
    node: crm
    format: csv
    path: "stops/*.csv"
    csv: {delimiter: ",", encoding: utf-8}
    timestamp_format: "%Y-%m-%d"
    columns: {source_record_id: id, email: email, mobile: phone, erp_id: erp, channel: channel,
              requested_at: at}
"""

ERP = "id,first,last,email,mobile,updated\nE1,Mario,Rossi,mario@x.it,347 555 0192,2026-01-01\n"
CRM = "id,first,last,email,mail_ok,sms_ok,updated\nC1,Mario,Rossi,MARIO@x.it,1,1,2026-06-01\n"
STOP_HEADER = "id,email,phone,erp,channel,at\n"
BYSTANDER = "id,first,last,email,mobile,updated\nZ9,Zoe,Verdi,zoe@y.it,,2026-01-01\n"
STOPS = {
    "phone": "S1,,+39 347-555-0192,,sms,2026-03-01\n",   # an SMS STOP: the number only
    "email": "S1,Mario@X.it,,,sms,2026-03-01\n",
    "erp_id": "S1,,,e1,sms,2026-03-01\n",
}


def sms_state(w: World) -> tuple[str, str]:
    ids = w.customer_of()
    assert ids["E1"] == ids["C1"]
    return w.query("SELECT sms_consent, email_consent FROM core.customers WHERE customer_id = ?",
                   [ids["E1"]])[0]


def check_passed(result) -> bool:
    evals = [e for e in result.get_asset_check_evaluations()
             if e.check_name == "withdrawals_hold_for_the_person"]
    assert len(evals) == 1
    return evals[0].passed


@pytest.mark.parametrize("by", ["phone", "email", "erp_id"])
@pytest.mark.parametrize("when", ["before", "between", "after"])
def test_stop_holds_for_the_merged_person(tmp_path, by, when):
    w = World(tmp_path)
    (w.config / "sources.yaml").write_text(SOURCES)
    # the records arrive in either order: ERP first for phone and e-mail, CRM first for ERP id
    # (a STOP by ERP id "between" then names a person not yet holding it)
    first, second = (("erp/e.csv", ERP), ("crm/c.csv", CRM))
    if by == "erp_id":
        first, second = second, first
    steps = {"before": ["stop", first, second], "between": [first, "stop", second],
             "after": [first, second, "stop"]}[when]
    w.drop("erp/0.csv", BYSTANDER)  # someone else, so that a run before both records has contacts
    result = None
    for step in steps:  # one run per arrival
        if step == "stop":
            w.drop("stops/s.csv", STOP_HEADER + STOPS[by])
        else:
            w.drop(*step)
        result = w.materialize()
    assert sms_state(w) == ("withdrawn", "granted")
    assert check_passed(result)
    kinds = w.query("SELECT channel, state, kind, explicit, source FROM core.consent_events "
                    "WHERE source = 'stops'")
    assert kinds == [("sms", "withdrawn", "MANAGE", True, "stops")]


def test_without_the_stop_the_person_is_sms_granted(tmp_path):
    w = World(tmp_path)
    (w.config / "sources.yaml").write_text(SOURCES)
    w.drop("erp/e.csv", ERP)
    w.drop("crm/c.csv", CRM)
    w.drop("stops/s.csv", STOP_HEADER + "S9,,+39 333 000 1234,,sms,2026-03-01\n")  # someone else's number
    assert check_passed(w.materialize())
    assert sms_state(w) == ("granted", "granted")


def test_the_check_catches_a_lifted_stop(tmp_path):
    from tessera.deployment import load_deployment
    from tessera.engine.warehouse import connect
    from tessera.privacy.consent import withdrawal_violations

    w = World(tmp_path)
    (w.config / "sources.yaml").write_text(SOURCES)
    w.drop("erp/e.csv", ERP)
    w.drop("crm/c.csv", CRM)
    w.drop("stops/s.csv", STOP_HEADER + STOPS["phone"])
    w.materialize()
    con = connect(w.warehouse)
    try:
        assert withdrawal_violations(con, load_deployment(w.config)) == {
            "standing_withdrawals": 1, "violations": 0}
        con.execute("UPDATE core.customers SET sms_consent = 'granted'")  # a regression, simulated
        assert withdrawal_violations(con, load_deployment(w.config))["violations"] == 1
    finally:
        con.close()
