"""automations.yaml / journeys.yaml: what the loader refuses, named by file and key."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from pydantic import ValidationError

from tessera.deployment import load_deployment
from tessera.settings.activation import Action, JourneyDef, QuietHours
from tessera.yamlfile import ConfigError

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo"


def test_the_demo_loads_the_milan_journey_and_four_automations():
    dep = load_deployment(DEMO)
    assert [s.name for s in dep.journeys[0].steps][:3] == ["issue_coupon", "sms_coupon", "coupon_used"]
    assert {a.action.kind for a in dep.automations} == {"tag", "email", "webhook"}
    assert dep.activation.daily_cap == 3 and not dep.activation.send


def test_an_action_is_exactly_one_kind_and_knows_its_consent_channel():
    with pytest.raises(ValidationError, match="exactly one"):
        Action.model_validate({"tag": {"tag": "a"}, "coupon": {"campaign": "b"}})
    assert Action.model_validate({"email": {"subject": "s", "template": "t.html"}}).channel == "email"
    assert Action.model_validate({"email": {"subject": "s", "template": "t.html",
                                            "to": "ops@x.example"}}).channel == "none"
    assert Action.model_validate({"sms": {"template": "t", "destination": "gw"}}).channel == "sms"


def test_a_journey_step_must_lead_to_a_known_step():
    with pytest.raises(ValidationError, match="unknown step 'nowhere'"):
        JourneyDef.model_validate({"name": "j", "trigger": {"segment": "s"},
                                   "steps": [{"name": "w", "wait": 1, "next": "nowhere"}]})
    with pytest.raises(ValidationError, match="check needs within_days"):
        JourneyDef.model_validate({"name": "j", "trigger": {"segment": "s"},
                                   "steps": [{"name": "c", "check": {"event": "x"}}]})


@pytest.mark.parametrize("hour,held", [(21, False), (22, True), (3, True), (8, False)])
def test_quiet_hours_wrap_around_midnight(hour, held):
    assert QuietHours(start=22, end=8).holds(hour) is held


@pytest.mark.parametrize("text,error", [
    ("automations:\n  - {name: a, trigger: {event: x}, action: {webhook: {destination: nope}}}\n",
     "automations.yaml:2: automations[0].action.webhook.destination: unknown destination 'nope'"),
    ("automations:\n  - {name: a, trigger: {event: x}, action: {email: {subject: s, template: missing.html}}}\n",
     "template"),
    ("automations:\n  - {name: a, trigger: {event: x, nodes: [moon]}, action: {tag: {tag: t}}}\n",
     "unknown node 'moon'"),
])
def test_the_loader_names_the_file_and_key(tmp_path, text, error):
    cfg = tmp_path / "cfg"
    shutil.copytree(DEMO, cfg)
    (cfg / "automations.yaml").write_text(text)
    with pytest.raises(ConfigError, match=re.escape(error)):
        load_deployment(cfg)
