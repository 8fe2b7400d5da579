"""The generator's order and event knobs (the benchmark's reference proportions)."""

from __future__ import annotations

import datetime as dt

from tessera.sampledata.generator import generate

AS_OF = dt.date(2026, 11, 1)


def _counts(root) -> tuple[int, int, bytes]:
    events = (root / "web" / "web_events_20261101.jsonl").read_bytes()
    lines = (root / "ecommerce" / "dettaglio-ordini_20261101.xml").read_text(encoding="utf-8")
    contacts = (root / "crm" / "crm_contacts_20261101.csv").read_bytes()
    return events.count(b"\n"), lines.count("<dettaglio"), contacts


def test_orders_and_events_scale_and_contacts_stay_the_same(tmp_path):
    generate(tmp_path / "a", contacts=300, seed=5, as_of=AS_OF)
    generate(tmp_path / "b", contacts=300, seed=5, as_of=AS_OF, orders_scale=4.0, events_scale=10.0)
    generate(tmp_path / "c", contacts=300, seed=5, as_of=AS_OF, orders_scale=1.0, events_scale=1.0)
    ev_a, lines_a, crm_a = _counts(tmp_path / "a")
    ev_b, lines_b, crm_b = _counts(tmp_path / "b")
    assert 8.5 <= ev_b / ev_a <= 11.5, (ev_a, ev_b)
    assert 3.2 <= lines_b / lines_a <= 4.8, (lines_a, lines_b)
    assert crm_b == crm_a  # the contacts (and their duplicates) do not depend on the knobs
    # at 1.0 the output is the generator's usual one, byte for byte
    for f in (tmp_path / "a").rglob("*"):
        if f.is_file():
            assert f.read_bytes() == (tmp_path / "c" / f.relative_to(tmp_path / "a")).read_bytes(), f
