"""Tests for tessera.deployment.load_deployment: the demo loads, and every broken file names
its file, its line and its key."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tessera.settings import ConfigError
from tessera.deployment import load_deployment
from tessera.yamlfile import load_yaml

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo"


@pytest.fixture
def cfg(tmp_path) -> Path:
    out = tmp_path / "config"
    shutil.copytree(DEMO, out)
    return out


def _break(cfg: Path, name: str, old: str, new: str) -> int:
    """Replace the first ``old`` by ``new`` in ``name``; return the 1-based line of ``new``."""
    path = cfg / name
    text = path.read_text(encoding="utf-8")
    assert text.count(old) >= 1, f"{old!r} not in {name}"
    pos = text.index(old)
    path.write_text(text[:pos] + new + text[pos + len(old):], encoding="utf-8")
    return text[:pos].count("\n") + 1


def _line_of(cfg: Path, name: str, snippet: str) -> int:
    text = (cfg / name).read_text(encoding="utf-8")
    return text[: text.index(snippet)].count("\n") + 1


def _error(cfg: Path) -> str:
    with pytest.raises(ConfigError) as exc:
        load_deployment(cfg)
    return str(exc.value)


# --------------------------------------------------------------------------- #
# The demo
# --------------------------------------------------------------------------- #
def test_demo_config_loads():
    dep = load_deployment(DEMO)
    assert dep.deployment == "demo"
    assert dep.config_dir == DEMO.resolve()
    assert [n.name for n in dep.nodes] == ["erp", "crm", "web", "email_platform", "ecommerce", "lists"]
    assert dep.tree.priority == ["erp", "crm", "ecommerce", "web", "email_platform", "lists"]
    assert dep.tree.field_rules == {"mobile": "most_recent"}
    assert dep.node_rank() == {"erp": 1, "crm": 2, "ecommerce": 3, "web": 4, "email_platform": 5,
                               "lists": 6}
    assert [p.name for p in dep.properties_of("contact")] == ["loyalty_tier", "spender_level"]
    assert dep.properties_of("contact")[0].sql_type == "VARCHAR"
    assert dep.properties_of("order") == []
    # with sms_optins (#15), campaign_costs, esp_messages, app_events and crm_details (#16)
    assert len(dep.sources) == 25
    assert [dep.source(n).entity for n in ("erp_companies", "crm_companies", "crm_company_users",
                                           "purchased_companies")] == [
        "company", "company", "company_user", "potential_company"]
    assert dep.source("purchased_companies").value_map["sector_macro"]["Negozi"] == "Commercio"
    crm = dep.source("crm_contacts")
    assert crm.csv.delimiter == ";" and crm.csv.encoding == "cp1252" and crm.csv.header is True
    assert crm.columns["postcode"] == "cap" and crm.columns["loyalty_tier"] == "livello_fedelta"
    assert crm.format_of("birth_date", "date") == "%d/%m/%Y"
    assert crm.format_of("updated_at", "timestamp") == "%d/%m/%Y %H:%M"
    assert crm.format_of("city", "string") is None
    assert dep.source("shop_orders").customer_source == "erp_contacts"
    assert dep.source("erp_contacts").xml.table == "anagrafiche-b2c"
    assert [s.name for s in dep.sources_of("product_line")] == [
        "shop_product_lines_macro", "shop_product_lines_micro"]
    assert [s.name for s in dep.segments][:2] == ["high_value_customers", "recent_web_visitors"]
    assert [f.name for f in dep.feeds] == ["newsletter_high_value", "crm_hot_leads", "ads_high_value",
                                           "bi_contacts", "sales_contacts", "erp_contacts",
                                           "churn_offers"]
    assert [(f.format, f.mode) for f in dep.feeds[2:]] == [("jsonl", "diff"), ("parquet", "full"),
                                                           ("xlsx", "full"), ("xml", "diff"),
                                                           ("jsonl", "diff")]
    assert dep.feeds[-1].row_source == "predictions" and dep.feeds[-1].recommendations.k == 3
    assert dep.feeds[-1].retention.days == 30
    assert [s.name for s in dep.scores] == ["engagement", "purchase_intent"]
    assert [s.name for s in dep.stages] == ["curious", "mql", "sql", "negotiation", "customer"]
    assert dep.feeds[0].for_spreadsheet is False
    assert dep.identity.junk_emails == ["test@test.it", "nessuna@email.it"]
    with pytest.raises(KeyError):
        dep.source("nope")


def test_deployment_is_frozen():
    dep = load_deployment(DEMO)
    with pytest.raises(Exception):
        dep.deployment = "other"


def test_missing_folder(tmp_path):
    msg = str(pytest.raises(ConfigError, load_deployment, tmp_path / "absent").value)
    assert "absent" in msg and "not found" in msg


def test_missing_sources_file(cfg):
    (cfg / "sources.yaml").unlink()
    msg = _error(cfg)
    assert "sources.yaml" in msg and "file not found" in msg


def test_segments_and_feeds_files_are_optional(cfg):
    for name in ("segments.yaml", "feeds.yaml", "scoring.yaml", "stages.yaml"):
        (cfg / name).unlink()
    dep = load_deployment(cfg)
    assert dep.segments == [] and dep.feeds == [] and dep.scores == [] and dep.stages == []


def test_threshold_feed_must_exist(cfg):
    (cfg / "feeds.yaml").unlink()
    msg = _error(cfg)
    assert "scoring.yaml:" in msg and "actions[2].feed: unknown feed 'crm_hot_leads'" in msg


# --------------------------------------------------------------------------- #
# Broken copies of the demo: file, line, key
# --------------------------------------------------------------------------- #
def test_unknown_key_delimter(cfg):
    line = _break(cfg, "sources.yaml", 'csv: {delimiter: ";"', 'csv: {delimter: ";"')
    msg = _error(cfg)
    assert f"sources.yaml:{line}: sources[0].csv.delimter: unknown key" in msg


def test_unknown_top_level_key_in_main_file(cfg):
    line = _break(cfg, "tessera.yaml", "deployment: demo", "deployment: demo\nnodez: []")
    msg = _error(cfg)
    assert f"tessera.yaml:{line + 1}: nodez: unknown key" in msg


def test_unknown_node_in_source(cfg):
    _break(cfg, "sources.yaml", "node: erp\n", "node: gestionale\n")
    line = _line_of(cfg, "sources.yaml", "node: gestionale")
    msg = _error(cfg)
    assert f"sources.yaml:{line}: sources[1].node: unknown node 'gestionale'" in msg


def test_column_mapped_to_field_not_in_contract(cfg):
    line = _break(cfg, "sources.yaml", "      first_name: nome\n      last_name: cognome\n      email: email\n      mobile: cellulare",
                  "      favourite_colour: colore\n      first_name: nome\n      last_name: cognome\n      email: email\n      mobile: cellulare")
    msg = _error(cfg)
    assert f"sources.yaml:{line}: sources[0].columns.favourite_colour" in msg
    assert "'favourite_colour' is not a field of entity 'contact'" in msg


def test_order_source_missing_required_mapping(cfg):
    _break(cfg, "sources.yaml", "      amount: importo\n", "")
    line = _line_of(cfg, "sources.yaml", 'xml: {record_tag: ordine, table: ordini}') + 2  # columns:
    assert (cfg / "sources.yaml").read_text().splitlines()[line - 1].strip() == "columns:"
    msg = _error(cfg)
    assert f"sources.yaml:{line}: sources[2].columns: required field 'amount' is not mapped" in msg


def test_order_source_without_customer_source(cfg):
    _break(cfg, "sources.yaml", "    customer_source: erp_contacts\n", "")
    line = _line_of(cfg, "sources.yaml", "name: shop_orders")
    msg = _error(cfg)
    assert f"sources.yaml:{line}: sources[2]: an order source needs 'customer_source'" in msg


def test_customer_source_naming_unknown_source(cfg):
    line = _break(cfg, "sources.yaml", "customer_source: erp_contacts", "customer_source: gestionale")
    msg = _error(cfg)
    assert f"sources.yaml:{line}: sources[2].customer_source: unknown source 'gestionale'" in msg


def test_duplicate_source_name(cfg):
    line = _break(cfg, "sources.yaml", "name: erp_contacts", "name: crm_contacts")
    msg = _error(cfg)
    assert f"sources.yaml:{line}: sources[1].name: duplicate source name 'crm_contacts'" in msg


def test_csv_source_without_dialect(cfg):
    _break(cfg, "sources.yaml", '    csv: {delimiter: ",", encoding: utf-8}\n', "")
    line = _line_of(cfg, "sources.yaml", "name: email_bounces")
    text = (cfg / "sources.yaml").read_text().splitlines()
    idx = sum(1 for ln in text[:line - 1] if ln.startswith("  - name:"))
    msg = _error(cfg)
    assert f"sources.yaml:{line}: sources[{idx}]: a csv source needs a 'csv' dialect block" in msg


@pytest.mark.parametrize("old,new,key,text", [
    ("encoding: cp1252", "encoding: utf-16", "sources[0].csv.encoding", "utf-8"),
    ('delimiter: ";"', 'delimiter: ";;"', "sources[0].csv.delimiter", "at most 1"),
    ("name: crm_contacts", "name: CRM-contacts", "sources[0].name", "not a valid name"),
    ("format: csv", "format: parquet", "sources[0].format", "csv"),
])
def test_invalid_values_name_file_line_and_key(cfg, old, new, key, text):
    line = _break(cfg, "sources.yaml", old, new)
    msg = _error(cfg)
    assert f"sources.yaml:{line}: {key}:" in msg
    assert text in msg


@pytest.mark.parametrize("old,new,key,text", [
    ("{field: country, op: \"=\", value: IT}", "{field: nation, op: \"=\", value: IT}",
     "segments[0].rule.all[0].field", "unknown field 'nation'"),
    ("{field: country, op: \"=\", value: IT}", "{field: country, op: \"~=\", value: IT}",
     "segments[0].rule.all[0].op", "unknown operator '~='"),
    ("{field: order_summary, op: \">=\", value: 300}", "{field: order_summary, op: \">=\", value: lots}",
     "segments[0].rule.all[1].value", "needs a number, got 'lots'"),
    ("{field: order_number, op: \">=\", value: 4}", "{field: order_number, op: \">=\", value: true}",
     "segments[0].rule.all[2].any[1].value", "needs a number, got True"),
    ("{field: rfm_group, op: in, value: [champions, loyal]}", "{field: rfm_group, op: in, value: champions}",
     "segments[0].rule.all[2].any[0].value", "'in' needs a non-empty list"),
    ("{field: last_event_at, op: within last days, value: 30}",
     "{field: last_event_at, op: within last days, value: 30, colour: red}",
     "segments[1].rule.all[0].colour", "unknown key"),
    ("{field: last_event_at, op: within last days, value: 30}",
     "{field: city, op: within last days, value: 30}",
     "segments[1].rule.all[0].op", "needs a date field, 'city' is string"),
])
def test_bad_segment_rule(cfg, old, new, key, text):
    line = _break(cfg, "segments.yaml", old, new)
    msg = _error(cfg)
    assert f"segments.yaml:{line}: {key}: " in msg
    assert text in msg


def test_segment_unknown_top_level_key(cfg):
    line = _break(cfg, "segments.yaml", "    kind: dynamic\n    rule:\n      all:\n        - {field: country",
                  "    kind: dynamic\n    audience: all\n    rule:\n      all:\n        - {field: country")
    msg = _error(cfg)
    assert f"segments.yaml:{line + 1}: segments[0].audience: unknown key" in msg


def test_duplicate_segment_name(cfg):
    first = _line_of(cfg, "segments.yaml", "name: high_value_customers")
    line = _break(cfg, "segments.yaml", "name: recent_web_visitors", "name: high_value_customers")
    msg = _error(cfg)
    # Either occurrence is a fair place to point at; it must name file, line and key.
    assert (f"segments.yaml:{first}: segments[0].name: duplicate segment" in msg
            or f"segments.yaml:{line}: segments[1].name: duplicate segment" in msg), msg


def test_feed_naming_unknown_segment(cfg):
    line = _break(cfg, "feeds.yaml", "segment: high_value_customers", "segment: low_value_customers")
    msg = _error(cfg)
    assert f"feeds.yaml:{line}: feeds[0].segment: unknown segment 'low_value_customers'" in msg


def test_feed_unknown_field(cfg):
    line = _break(cfg, "feeds.yaml", "fields: [customer_id, email,", "fields: [customer_id, email, shoe_size,")
    msg = _error(cfg)
    assert f"feeds.yaml:{line}: feeds[0].fields[2]: unknown field 'shoe_size'" in msg


def test_email_feed_without_email(cfg):
    line = _break(cfg, "feeds.yaml", "fields: [customer_id, email,", "fields: [customer_id,")
    msg = _error(cfg)
    assert f"feeds.yaml:{line}: feeds[0].fields: a email feed must include 'email'" in msg


def test_tree_priority_unknown_node(cfg):
    line = _break(cfg, "tessera.yaml", "priority: [erp, crm,", "priority: [erp, crmx,")
    msg = _error(cfg)
    assert f"tessera.yaml:{line}: tree.priority[1]: unknown node 'crmx'" in msg


def test_tree_priority_missing_node(cfg):
    line = _break(cfg, "tessera.yaml", "priority: [erp, crm, ecommerce, web, email_platform, lists]",
                  "priority: [erp, crm, ecommerce, web, lists]")
    msg = _error(cfg)
    assert f"tessera.yaml:{line}: tree.priority: nodes missing from the priority: ['email_platform']" in msg


def test_tree_field_rule_unknown_field(cfg):
    line = _break(cfg, "tessera.yaml", "    mobile: most_recent", "    shoe_size: most_recent")
    msg = _error(cfg)
    assert f"tessera.yaml:{line}: tree.field_rules.shoe_size: 'shoe_size' is not a golden field" in msg


def test_tree_field_rule_cannot_decide_consent(cfg):
    line = _break(cfg, "tessera.yaml", "    mobile: most_recent", "    consent_email: most_recent")
    msg = _error(cfg)
    assert f"tessera.yaml:{line}: tree.field_rules.consent_email:" in msg
    assert "consent never comes from survivorship" in msg


def test_tree_field_rule_on_extended_property_is_allowed(cfg):
    _break(cfg, "tessera.yaml", "    mobile: most_recent", "    loyalty_tier: most_recent")
    assert load_deployment(cfg).tree.field_rules == {"loyalty_tier": "most_recent"}


def test_extended_property_shadowing_base_property(cfg):
    line = _break(cfg, "tessera.yaml", "{name: loyalty_tier, type: string", "{name: email, type: string")
    msg = _error(cfg)
    assert f"tessera.yaml:{line}: properties.contact[0].name: 'email' is a base property already" in msg


def test_extended_property_bad_type(cfg):
    line = _break(cfg, "tessera.yaml", "{name: loyalty_tier, type: string", "{name: loyalty_tier, type: text")
    msg = _error(cfg)
    assert f"tessera.yaml:{line}: properties.contact[0].type:" in msg


def test_invalid_yaml_names_file_and_line(cfg):
    line = _break(cfg, "feeds.yaml", "    channel: email", "    channel: [email")
    msg = _error(cfg)
    assert re.search(rf"feeds\.yaml:{line + 1}: invalid YAML|feeds\.yaml:{line}: invalid YAML", msg), msg


def test_non_utf8_yaml_rejected(cfg):
    (cfg / "feeds.yaml").write_bytes("# citt\u00e0\nfeeds: []\n".encode("cp1252"))
    msg = _error(cfg)
    assert "feeds.yaml" in msg and "not UTF-8" in msg


def test_line_of_falls_back_to_deepest_known_prefix(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("a:\n  b:\n    c: 1\n  d: 2\n", encoding="utf-8")
    y = load_yaml(p)
    assert y.data == {"a": {"b": {"c": 1}, "d": 2}}
    assert y.line_of(("a", "b", "c")) == 3
    assert y.line_of(("a", "d")) == 4
    assert y.line_of(("a", "b", "c", "deeper", 0)) == 3
    assert y.where(("a", "d")) == f"{p}:4: a.d"


def test_company_card_fields_cannot_be_contact_properties(tmp_path):
    import shutil

    d = tmp_path / "cfg"
    shutil.copytree(DEMO, d)
    main = (d / "tessera.yaml").read_text()
    (d / "tessera.yaml").write_text(main.replace(
        '    - {name: loyalty_tier,', '    - {name: company_city, type: string}\n    - {name: loyalty_tier,'))
    with pytest.raises(ConfigError, match="'company_city' is a company field of the contact card"):
        load_deployment(d)


def test_value_map_names_a_mapped_column(tmp_path):
    import shutil

    d = tmp_path / "cfg"
    shutil.copytree(DEMO, d)
    text = (d / "sources.yaml").read_text()
    (d / "sources.yaml").write_text(text.replace("      sector_macro:\n        Costruzioni",
                                                 "      sector_micro:\n        Costruzioni"))
    with pytest.raises(ConfigError, match="'sector_micro' is not a mapped column of this source"):
        load_deployment(d)


# --------------------------------------------------------------------------- #
# Batch expectations per entity (tessera.yaml, expectations:)
# --------------------------------------------------------------------------- #
def test_expectations_per_entity_and_defaults(cfg):
    dep = load_deployment(cfg)
    order = dep.expectations_of("order")
    assert order.row_count_min_ratio == 0.5 and order.row_count_blocking
    assert {c: (r.max_share, r.blocking) for c, r in order.null_rates_of("order").items()} == {
        "channel_macro": (0.2, False)}
    assert dep.expectations_of("event").row_count_min_ratio == 0.3
    # Not configured: the entity's defaults.
    assert set(dep.expectations_of("order_line").null_rates_of("order_line")) == {"product_id"}
    assert dep.expectations_of("bounce").null_rates_of("bounce") == {}


@pytest.mark.parametrize("old,new,key,text", [
    ("      channel_macro: {max_share: 0.2}", "      channel_macroo: {max_share: 0.2}",
     "expectations.order.null_rates.channel_macroo", "not a field of order"),
    ("      channel_macro: {max_share: 0.2}", "      channel_macro: {max_share: 1.5}",
     "expectations.order.null_rates.channel_macro.max_share", "less than or equal to 1"),
    ("      channel_macro: {max_share: 0.2}", "      channel_macro: {max_share: 0.2, block: true}",
     "expectations.order.null_rates.channel_macro.block", "unknown key"),
    ("  event:\n    row_count_min_ratio: 0.3", "  events:\n    row_count_min_ratio: 0.3",
     "expectations.events", "Input should be"),
    ("    row_count_min_ratio: 0.3", "    row_count_min_ratio: -1",
     "expectations.event.row_count_min_ratio", "greater than or equal to 0"),
])
def test_bad_expectations_name_file_line_and_key(cfg, old, new, key, text):
    line = _break(cfg, "tessera.yaml", old, new)
    msg = _error(cfg)
    assert f"tessera.yaml:{line}: {key}" in msg
    assert text in msg
