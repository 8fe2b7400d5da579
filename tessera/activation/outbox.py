"""The outbox: every action decided, once, behind the consent and privacy gate.

Why a table and a deterministic key: a batch platform re-runs days, backfills them and
can die half-way. Each action gets ``action_key`` = md5(origin, automation or journey
step, contact, trigger event id or journey entry day); a key already in the outbox is
never queued again, so a re-run or a backfill decides nothing twice. Sending is a
separate phase (:mod:`tessera.activation.send`) that marks a row ``sending`` *before*
handing it over, so a crash between the hand-over and the record is re-sent with the
same key (the e-mail's Message-ID, the HTTP Idempotency-Key), never a new one.

The gate is one set-based join, applied before anything enters the outbox: the contact
is on the card (erased and soft-deleted people are not), has consent on the action's
channel (and no hard bounce for e-mail), and none of its identifiers is suppressed
(:func:`tessera.feeds.selection.delivery_filter`, the same rule the feeds apply). The
per-contact daily cap marks messages beyond it ``capped`` (decided, never sent).
Tags and coupons are warehouse writes, applied in the same transaction (``sent``).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from pathlib import Path

from tessera.card.marts import SET_PROPERTIES_STEPS, set_property_types
from tessera.engine import Engine, SqlStep, as_engine
from tessera.engine.steps import ddl_statements
from tessera.feeds.delivery import delivery_table_steps
from tessera.feeds.selection import delivery_filter
from tessera.marketing.segments import marketing_table_steps
from tessera.activation.rules import rules_changed

MESSAGE_KINDS = ("email", "sms", "webhook")
KEY_SQL = ("md5(concat_ws('|', CAST(? AS VARCHAR), CAST(? AS VARCHAR), CAST(? AS VARCHAR), "
           "CAST(customer_id AS VARCHAR), ref))")


def scratch(engine: Engine, name: str, step: SqlStep) -> int:
    """A table of the run's intermediate rows (the day's events, the gate, an action's
    candidates): temporary, so these throw-away rows never reach the warehouse file or
    its write-ahead log (they spill to DuckDB's temp directory if memory runs short);
    returns its rows."""
    engine = as_engine(engine)
    engine.run(SqlStep(step.name, f"CREATE OR REPLACE TEMP TABLE {name} AS {step.sql}", step.params))
    return int(engine.scalar(SqlStep("activation.scratch_rows", f"SELECT count(*) FROM {name}")) or 0)


def activation_table_steps() -> list[SqlStep]:
    return [SqlStep("activation.schema", "CREATE SCHEMA IF NOT EXISTS activation"),
            SqlStep("activation.exports_schema", "CREATE SCHEMA IF NOT EXISTS exports"),
            *marketing_table_steps(), *SET_PROPERTIES_STEPS, *ddl_statements(__package__, "tables.sql")]


# A template variable beside the card's fields: the contact's top recommended products
# (the combination's list of the run's day, best first; product ids), once the
# recommendations stage has published lists. An empty list for a contact without one.
# The run's day, not the newest: a backfilled or re-run day must send what was
# recommended that day (the newest lists may be from a later day). A day the stage did
# not run falls back to the latest list before it, never to a later one.
RECOMMENDED = "recommended_products"
_RECOMMENDED_JOIN = """
        LEFT JOIN (SELECT customer_id, list(product_id ORDER BY rank) AS recommended_products
                   FROM recommendations.contact_products
                   WHERE kind = 'combined'
                     AND as_of_date = (SELECT max(as_of_date) FROM recommendations.contact_products
                                       WHERE as_of_date <= CAST(? AS DATE))
                   GROUP BY customer_id) rp ON rp.customer_id = k.customer_id"""


def card_columns(engine: Engine) -> set[str]:
    """The fields a payload may carry: the card's columns, and ``recommended_products``
    where the recommendations stage has run."""
    cols = {r[0] for r in engine.rows(SqlStep(
        "activation.card_columns", "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = 'marts' AND table_name = 'contact_cards'"))}
    if engine.table_exists("recommendations", "contact_products"):
        cols.add(RECOMMENDED)
    return cols


@functools.cache
def _template_vars(path: str) -> frozenset[str]:
    import jinja2
    from jinja2 import meta
    return frozenset(meta.find_undeclared_variables(jinja2.Environment().parse(Path(path).read_text("utf-8"))))


def template_fields(deployment, action) -> set[str]:
    """The variables an action's templates read (so the payload carries only those)."""
    spec, out = action.spec, set()
    tpl = getattr(spec, "template", None)
    if tpl:
        path = deployment.config_dir / "templates" / tpl
        if not path.is_file():
            path = Path(__file__).parent / "templates" / tpl   # the package's own
        out |= _template_vars(str(path))
    subject = getattr(spec, "subject", None)
    if subject:
        import jinja2
        from jinja2 import meta
        out |= meta.find_undeclared_variables(jinja2.Environment().parse(subject))
    return out


def uses_recommendations(deployment) -> bool:
    """Whether a message template of an automation or journey reads the contact's
    recommended products (then the activation runs after the recommendations)."""
    actions = [a.action for a in deployment.automations or []]
    actions += [s.action for j in deployment.journeys or [] for s in j.steps if s.action is not None]
    return any(a.kind in ("email", "sms") and RECOMMENDED in template_fields(deployment, a) for a in actions)


def payload_fields(deployment, action, columns: set[str]) -> list[str]:
    """Card fields the send needs: the address, the templates' variables, a webhook's fields."""
    kind, spec = action.kind, action.spec
    want: set[str] = set()
    if kind == "email" and not spec.to:
        want.add("email")
    if kind == "sms":
        want.add("mobile")
    if kind in ("email", "sms"):
        want |= template_fields(deployment, action)
    if kind == "webhook":
        want |= set(spec.fields)
    return sorted(want & columns)


def target_of(action) -> str:
    spec = action.spec
    return {"email": lambda: spec.destination or spec.to or "smtp",
            "sms": lambda: spec.destination, "webhook": lambda: spec.destination,
            "tag": lambda: spec.tag, "coupon": lambda: spec.campaign}[action.kind]()


GATE = "_act_gate"


def gate_fields(deployment, columns: set[str]) -> list[str]:
    """The card fields any action's payload reads (a message's address and template
    variables, a webhook's fields): copied into :data:`GATE` once per day, so that an
    action reads the one narrow gate table instead of joining the wide card again."""
    from tessera.activation.scores import notify_actions     # scores queue through here
    actions = [a.action for a in deployment.automations or []]
    actions += [s.action for j in deployment.journeys or [] for s in j.steps if s.action is not None]
    actions += [a for *_, a in notify_actions(deployment)]
    out: set[str] = set()
    for a in actions:
        out |= set(payload_fields(deployment, a, columns))
    return sorted(out - {RECOMMENDED})


def build_gate(engine: Engine, deployment=None, columns: set[str] = frozenset()) -> int:
    """``_act_gate``: per card, whether an action may go out on each channel
    (:func:`tessera.feeds.selection.delivery_filter`: consent, hard bounce, the HMAC
    suppression ledger), and the card fields the payloads read (:func:`gate_fields`).
    Built once per evaluated day: the ledger's keyed hashes are then computed once per
    contact, not once per candidate of every action, and the card is read once."""
    fields = gate_fields(deployment, columns) if deployment is not None else []
    cols = "".join(f', "{f}"' for f in fields if f != "customer_id")
    return scratch(as_engine(engine), GATE, SqlStep("activation.gate_table", f"""
        SELECT customer_id, ({delivery_filter('email')}) AS ok_email, ({delivery_filter('sms')}) AS ok_sms,
               ({delivery_filter('none')}) AS ok_none{cols}
        FROM marts.contact_cards"""))


def queue(engine: Engine, deployment, *, origin: str, name: str, step: str, action, day: dt.date,
          now: dt.datetime, candidates: SqlStep, columns: set[str], version: str | None = None,
          since: dt.date | None = None) -> dict:
    """Gate and queue one action for the contacts ``candidates`` selects (columns
    ``customer_id, ref, trigger_event, coupon``). Returns the counts.

    ``since``: the first day on which an action of these triggers can have been decided
    (a journey action's entry day, a score crossing's day: both are in the key's trigger),
    so the anti-join reads the outbox from that day on (pruned by the zone maps of the
    rows appended day after day), not the whole history."""
    engine = as_engine(engine)
    n = scratch(engine, "_act_candidates", candidates)
    fields = payload_fields(deployment, action, columns)
    parts = [f"'{f}': g.\"{f}\"" for f in fields] + ["'event': g.trigger_event", "'coupon': g.coupon"]
    payload = "to_json({" + ", ".join(parts) + "})" if action.kind in MESSAGE_KINDS else "CAST(NULL AS VARCHAR)"
    cap = deployment.activation.daily_cap
    message = action.kind in MESSAGE_KINDS
    status = "'pending'" if message else "'sent'"
    if message and cap is not None:
        status = f"CASE WHEN g.nth > {int(cap)} THEN 'capped' ELSE 'pending' END"
    sent_at = "CAST(NULL AS TIMESTAMP)" if message else "CAST(? AS TIMESTAMP)"
    cols = "".join(", coalesce(rp.recommended_products, [])" + f' AS "{RECOMMENDED}"' if f == RECOMMENDED
                   else f', c."{f}"' for f in fields)
    rec_join = _RECOMMENDED_JOIN if RECOMMENDED in fields else ""
    # the payload's fields come from the gate table when it carries them (built for this
    # deployment), else from the card
    in_gate = set(fields) - {RECOMMENDED} <= set(gate_fields(deployment, columns))
    card = "" if in_gate else " JOIN marts.contact_cards c ON c.customer_id = k.customer_id"
    if in_gate:
        cols = cols.replace(', c."', ', ok."')
    gated = scratch(engine, "_act_gated", SqlStep("activation.gate", f"""
        SELECT {KEY_SQL.replace("customer_id", "k.customer_id").replace("ref)", "k.ref)")} AS action_key,
               k.customer_id, k.ref, k.trigger_event, k.coupon{cols}
        FROM _act_candidates k
        JOIN {GATE} ok ON ok.customer_id = k.customer_id AND ok.ok_{action.channel}{card}{rec_join}""",
        [origin, name, step, *([day] if rec_join else [])]))
    # the cap's window only when there is a cap (a sort per contact is not free)
    if message and cap is not None:
        counted = """,
        today AS (
            SELECT customer_id, count(*) AS sent_today FROM activation.outbox
            WHERE as_of_date = CAST(? AS DATE) AND kind IN ('email', 'sms', 'webhook')
              AND status <> 'capped'
              AND customer_id IN (SELECT customer_id FROM _act_gated) GROUP BY customer_id),
        g AS (
            SELECT f.*, coalesce(t.sent_today, 0)
                   + row_number() OVER (PARTITION BY f.customer_id ORDER BY f.action_key) AS nth
            FROM fresh f LEFT JOIN today t ON t.customer_id = f.customer_id)"""
        cap_params = [day]
    else:
        counted, cap_params = ", g AS (SELECT * FROM fresh)", []
    # candidates are unique per (contact, trigger) by construction (an event id within its
    # source, a journey entry, a score crossing), so the anti-join is the only de-duplication
    # the anti-join's build side is only this action's rows of the outbox (a key holds its
    # origin, name and step): the whole outbox's keys, hashed once per action, were the
    # costliest step of a day at scale
    sql = f"""
        WITH prior AS (
            SELECT action_key FROM activation.outbox WHERE origin = ? AND name = ? AND step = ?
              AND as_of_date >= CAST(? AS DATE)),
        fresh AS (
            SELECT * FROM _act_gated n
            WHERE NOT EXISTS (SELECT 1 FROM prior o WHERE o.action_key = n.action_key)){counted}
        SELECT g.action_key, CAST(? AS DATE) AS as_of_date, ? AS origin, ? AS name, ? AS step,
               g.customer_id, g.ref, ? AS kind, ? AS channel, ? AS target, {payload} AS payload,
               {status} AS status, 0 AS attempts, CAST(NULL AS VARCHAR) AS delivery_batch,
               CAST(? AS TIMESTAMP) AS queued_at, {sent_at} AS sent_at,
               CAST(NULL AS VARCHAR) AS last_error, CAST(? AS VARCHAR) AS version
        FROM g"""
    params = [origin, name, step, since or dt.date.min, *cap_params, day, origin, name, step, action.kind, action.channel,
              target_of(action), now] + ([] if message else [now]) + [version]
    queued = scratch(engine, "_act_queued", SqlStep("activation.fresh", sql, params))
    engine.append("activation.outbox", SqlStep("activation.enqueue", "SELECT * FROM _act_queued"))
    if action.kind == "email":
        record_subjects(engine, deployment, action)
    spec = action.spec
    if action.kind == "tag":
        engine.run(SqlStep("activation.apply_tags", """
            INSERT INTO marketing.tag_assignments
            SELECT customer_id, ?, as_of_date, origin || ':' || name FROM _act_queued""",
                           [spec.tag]))
        if spec.property is not None:
            set_property(engine, deployment, spec.property, spec.value, columns)
        if queued:
            rules_changed()     # the day's shared rule tables no longer see these tags
    elif action.kind == "coupon":
        engine.run(SqlStep("activation.issue_coupons", """
            INSERT INTO activation.coupons
            SELECT upper(substr(action_key, 1, 10)), ?, customer_id, origin, name, ref, as_of_date,
                   as_of_date + CAST(? AS INTEGER), ?, action_key FROM _act_queued""",
                           [spec.campaign, spec.valid_days, spec.discount]))
    capped = engine.scalar(SqlStep("activation.capped",
                                   "SELECT count(*) FROM _act_queued WHERE status = 'capped'"))
    return {"candidates": int(n), "blocked": int(n) - int(gated), "queued": int(queued) - int(capped),
            "capped": int(capped), "already": int(gated) - int(queued)}


def record_subjects(engine: Engine, deployment, action) -> int:
    """The subject each e-mail just queued will carry, rendered now from its payload as
    the send will render it (``activation.outbox_subjects``): the page shows what a person
    was sent without publishing payloads. A subject without variables is one constant,
    written by SQL; otherwise each is rendered from its payload (the templates are Jinja,
    as the send's; a batch of payloads at a time)."""
    import jinja2
    import pyarrow as pa
    from jinja2 import meta

    from tessera.activation.send import _renderer

    subject = getattr(action.spec, "subject", None) or ""
    _, plain = _renderer(deployment.config_dir)
    if not meta.find_undeclared_variables(jinja2.Environment().parse(subject)):
        return engine.append("activation.outbox_subjects", SqlStep(
            "activation.subjects_constant",
            "SELECT action_key, customer_id, ? AS subject FROM _act_queued",
            [plain.from_string(subject).render()]))
    template = plain.from_string(subject)
    data = engine.columns(SqlStep("activation.subjects_payloads",
                                  "SELECT action_key, customer_id, payload FROM _act_queued"))
    engine.register_arrow("_subjects", pa.table({
        "action_key": pa.array(data["action_key"], pa.string()),
        "customer_id": pa.array(data["customer_id"], pa.int64()),
        "subject": pa.array([template.render(**payload(p)) for p in data["payload"]], pa.string())}))
    try:
        return engine.append("activation.outbox_subjects", SqlStep(
            "activation.subjects_rendered", "SELECT action_key, customer_id, subject FROM _subjects"))
    finally:
        engine.unregister("_subjects")


def set_property(engine: Engine, deployment, prop: str, value, columns: set[str]) -> None:
    """A tag action's ``property: value`` for the contacts just queued: recorded in
    ``activation.contact_properties`` (the card overlays it on every rebuild) and written
    on today's card too, so the rest of the run (later days, journeys' conditions) sees it."""
    engine.run(SqlStep("activation.set_property", """
        INSERT INTO activation.contact_properties
        SELECT customer_id, ?, ?, as_of_date, origin || ':' || name, action_key
        FROM _act_queued""", [prop, value]))
    sql_type = set_property_types(deployment).get(prop)
    if sql_type is not None and prop in columns:
        tables = [("activation.card_property", "marts.contact_cards")]
        if prop in gate_fields(deployment, columns):     # a template reads it the same day
            tables.append(("activation.gate_property", GATE))
        for step_name, table in tables:
            engine.run(SqlStep(step_name, f"""
                UPDATE {table} SET "{prop}" = TRY_CAST(? AS {sql_type})
                WHERE customer_id IN (SELECT customer_id FROM _act_queued)""", [value]))


def outbox_summary(engine: Engine) -> dict[str, int]:
    engine = as_engine(engine)
    return {s: int(n) for s, n in engine.rows(SqlStep(
        "activation.outbox_summary", "SELECT status, count(*) FROM activation.outbox GROUP BY 1 ORDER BY 1"))}


def unconsented_sends(engine: Engine) -> int:
    """Messages still to send whose contact now has no consent on the channel, is
    suppressed, or is no longer on the card: the check's number, 0 after every run (the
    run turns them ``withdrawn``, and drops them from an HTTP batch not sent yet). Rows
    of a batch no longer pending (delivered, rejected, given up) are left out."""
    engine = as_engine(engine)
    engine.run(*delivery_table_steps())
    total = 0
    for channel in ("email", "sms", "none"):
        total += int(engine.scalar(SqlStep("activation.unconsented", f"""
            SELECT count(*) FROM activation.outbox o
            WHERE o.channel = ? AND o.status IN ('pending', 'sending')
              AND (o.delivery_batch IS NULL OR o.delivery_batch IN (
                   SELECT batch_id FROM exports.delivery_batches
                   WHERE destination = o.target AND status = 'pending'))
              AND o.customer_id NOT IN (SELECT customer_id FROM marts.contact_cards
                                        WHERE {delivery_filter(channel)})""", [channel])) or 0)
    return total


def duplicate_actions(engine: Engine) -> int:
    """Actions decided twice (same origin, step, contact and trigger): 0 by construction."""
    return int(as_engine(engine).scalar(SqlStep("activation.duplicates", """
        SELECT count(*) FROM (SELECT origin, name, step, customer_id, ref FROM activation.outbox
                              GROUP BY ALL HAVING count(*) > 1)""")) or 0)


def payload(text: str | None) -> dict:
    doc = json.loads(text) if text else {}
    if isinstance(doc.get("event"), str):
        doc["event"] = json.loads(doc["event"])
    return doc
