"""The seeds' segment examples, shipped in examples/demo, on generated data with answers
known by construction (planted B2B companies and their users) or read straight from the landing files:

* Nurtigo: contacts of Turin companies with revenue over 5 M and a purchase in the last
  six months (``turin_companies_5m``);
* Flow: top-spending women who bought in the Milan store, a segment built on the segment
  ``top_spenders`` (``milan_store_women_top_spenders``);
* Contacthub: a customer rule with ALL and ANY (``reachable_loyal_italians``).

One real run of the daily job (Dagster, in process) over a temporary warehouse."""
from __future__ import annotations

import datetime as dt

import pytest
from lxml import etree

from tests.conftest import AS_OF, PipelineEnv


def _records(path, tag):
    out = []
    for _, el in etree.iterparse(str(path), tag=tag, resolve_entities=False, no_network=True):
        out.append({c.tag: (c.text or "") for c in el})
        el.clear()
    return out


def _orders(landing):
    good = []
    for o in _records(next((landing / "ecommerce").glob("ordini_*.xml")), "ordine"):
        try:
            day = dt.datetime.strptime(o["data"], "%d/%m/%Y").date()
            float(o["importo"])
        except ValueError:
            continue
        if o["idOrdine"] and o["idCliente"]:
            good.append({**o, "day": day})
    return good


@pytest.fixture(scope="module")
def seed_env(tmp_path_factory):
    from tessera.sampledata.generator import generate

    env = PipelineEnv(tmp_path_factory.mktemp("seeds"))
    generate(env.landing, contacts=1000, seed=11, as_of=AS_OF)
    erp = [r for r in _records(next((env.landing / "erp").glob("erp_contacts_*.xml")), "utente")
           if r["idgestionale"] and "@" in r["email"]]
    orders = _orders(env.landing)
    last = {}
    for o in orders:
        last[o["idCliente"]] = max(last.get(o["idCliente"], dt.date.min), o["day"])
    recent = [r for r in erp if (AS_OF - last.get(r["idgestionale"], dt.date.min)).days <= 150]
    stale = [r for r in erp if r["idgestionale"] in last and (AS_OF - last[r["idgestionale"]]).days >= 200]
    plan = {  # group -> (people, company city, revenue)
        "in": (recent[0:6], "Torino", "6000000.00"),
        "small": (recent[6:9], "Torino", "4000000.00"),
        "boundary": (recent[9:10], "Torino", "5000000.00"),
        "elsewhere": (recent[10:13], "Milano", "9000000.00"),
        "stale": (stale[0:3], "Torino", "8000000.00"),
    }
    # The planted companies replace the generated B2B files, so that the answer is known.
    import shutil

    from tessera.ingest.vat import check_digit

    shutil.rmtree(env.landing / "b2b")
    (env.landing / "b2b").mkdir()
    companies = ["codice;ragionesociale;partitaiva;citta;provincia;paese;settore;tipologia;"
                 "fatturato;dipendenti;datamodifica"]
    users = ["codice;nome;cognome;azienda;partitaivaazienda;email;ruolo;consensoemail"]
    n = 0
    for group, (people, city, revenue) in plan.items():
        assert people, f"the sample has nobody for group {group}"
        for r in people:
            n += 1
            vat = f"{n:010d}"
            vat += str(check_digit(vat))
            companies.append(f"A{n:04d};Azienda {n} S.p.A.;{vat};{city};;IT;Manifattura;spa;{revenue};10;"
                             "01/10/2026 10:00")
            # the user names the company another way: linked by the normalised legal name
            users.append(f"U{n:04d};{r['nome']};{r['cognome']};AZIENDA {n} SPA;;{r['email']};acquisti;si")
    (env.landing / "b2b" / "aziende_20261101.csv").write_text("\n".join(companies) + "\n", encoding="utf-8")
    (env.landing / "b2b" / "utenti-aziende_20261101.csv").write_text("\n".join(users) + "\n",
                                                                    encoding="utf-8")
    env.plan = {g: [r["idgestionale"] for r in people] for g, (people, _, _) in plan.items()}
    env.erp = {r["idgestionale"]: r for r in erp}
    env.orders = orders
    result = env.run_daily()
    assert result.success
    env.result = result
    return env


def _members(con, segment):
    return sorted(r[0] for r in con.execute(
        "SELECT customer_id FROM marketing.segment_members WHERE segment = ? AND as_of_date = ?",
        [segment, AS_OF]).fetchall())


def _cid_of_erp(con) -> dict:
    return dict(con.execute("SELECT source_record_id, customer_id FROM core.customer_sources "
                            "WHERE source = 'erp_contacts'").fetchall())


def test_nurtigo_turin_companies_over_5m_with_a_recent_purchase(seed_env):
    con = seed_env.connect()
    try:
        cid = _cid_of_erp(con)
        got = _members(con, "turin_companies_5m")
        linked = con.execute("SELECT count(*) FROM marts.contact_cards WHERE company_revenue IS NOT NULL").fetchone()[0]
    finally:
        con.close()
    expected = sorted(cid[e] for e in seed_env.plan["in"] if e in cid)
    assert expected and got == expected
    assert linked == sum(len(v) for v in seed_env.plan.values())  # every company user is a B2C person


def test_flow_top_spending_women_who_bought_in_the_milan_store(seed_env):
    con = seed_env.connect()
    try:
        cid = _cid_of_erp(con)
        top = {r[0] for r in con.execute("SELECT customer_id FROM marketing.rfm_scores "
                                         "WHERE as_of_date = ? AND m_score = 5", [AS_OF]).fetchall()}
        got = _members(con, "milan_store_women_top_spenders")
        top_seg = set(_members(con, "top_spenders"))
    finally:
        con.close()
    milan_buyers = {o["idCliente"] for o in seed_env.orders
                    if o["idCanaleMacro"] == "2" and o["idCanaleMicro"] == "1"}
    women = {e for e, r in seed_env.erp.items() if r["sesso"] == "F"}
    expected = sorted(cid[e] for e in milan_buyers & women if e in cid and cid[e] in top)
    assert top_seg == top
    assert expected and got == expected


def test_contacthub_customer_rule_with_all_and_any(seed_env):
    con = seed_env.connect()
    try:
        cards = con.execute("""SELECT customer_id, country, order_number, email_consent, sms_consent,
                                      loyalty_tier, birth_date FROM marts.contact_cards""").fetchall()
        got = _members(con, "reachable_loyal_italians")
    finally:
        con.close()
    expected = sorted(
        c for c, country, orders, email, sms, tier, birth in cards
        if country == "IT" and orders >= 1 and "granted" in (email, sms)
        and (tier in ("gold", "silver") or (birth is not None and birth < dt.date(1980, 1, 1))))
    assert expected and got == expected


def test_scores_stages_and_threshold_feed_in_the_daily_job(seed_env):
    con = seed_env.connect()
    try:
        low = con.execute("SELECT count(*) FROM marketing.score_actions WHERE score < threshold").fetchone()[0]
        fired = con.execute("SELECT count(DISTINCT customer_id) FROM marketing.score_actions "
                            "WHERE score_type = 'engagement' AND action = 'feed'").fetchone()[0]
        hot = con.execute("SELECT count(*) FROM marketing.scores WHERE as_of_date = ? "
                          "AND score_type = 'engagement' AND score >= 100", [AS_OF]).fetchone()[0]
        funnel = con.execute("SELECT sum(contacts) FROM marketing.funnel_daily WHERE as_of_date = ?",
                             [AS_OF]).fetchone()[0]
        staged = con.execute("SELECT count(*) FROM marketing.stages WHERE as_of_date = ?", [AS_OF]).fetchone()[0]
        fed = con.execute("SELECT count(*) FROM exports.crm_hot_leads WHERE as_of_date = ?", [AS_OF]).fetchone()[0]
    finally:
        con.close()
    assert low == 0
    assert fired == hot > 0  # first day: everybody at or above 100 crossed today
    assert fed == fired
    assert funnel == staged > 0
    mats = {e.event_specific_data.materialization.asset_key.to_user_string()
            for e in seed_env.result.get_asset_materialization_events()}
    assert {"marketing/scores", "marketing/score_actions", "marketing/stages", "marketing/funnel_daily",
            "segments/milan_store_women_top_spenders", "exports/crm_hot_leads"} <= mats


def test_cli_dry_run_and_overrides(seed_env, monkeypatch, capsys):
    from tessera.cli import main

    monkeypatch.setenv("TESSERA_CONFIG", str(seed_env.config))
    monkeypatch.setenv("TESSERA_HOME", str(seed_env.root))
    monkeypatch.setenv("DAGSTER_HOME", str(seed_env.dagster_home))
    assert main(["segment", "dry-run", "turin_companies_5m", "--date", AS_OF.isoformat()]) == 0
    out = capsys.readouterr().out
    assert "would enter: 0   would leave: 0" in out
    assert "@" not in out  # ids and counts only
    assert main(["segment", "add", "turin_companies_5m", "--ids", "1", "2", "--date", AS_OF.isoformat()]) == 0
    assert main(["segment", "dry-run", "turin_companies_5m", "--date", AS_OF.isoformat()]) == 0
    out = capsys.readouterr().out
    con = seed_env.connect()
    try:
        stored = len(_members(con, "turin_companies_5m"))
        new = len({1, 2} - set(_members(con, "turin_companies_5m")))
    finally:
        con.close()
    assert f"would enter: {new}   would leave: 0" in out
    assert f"{stored + new} members" in out
    assert main(["segment", "dry-run", "nope"]) == 2
