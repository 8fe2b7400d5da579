"""Sending the outbox: e-mail over SMTP, everything HTTP through the feeds' delivery.

Exactly once, as far as a sender can: a row is marked ``sending`` (and its attempt
counted) in the warehouse *before* it is handed over, and ``sent`` after. A process
that dies in between leaves ``sending`` rows; the next run sends them again with the
same identity: the e-mail's ``Message-ID`` is ``<action_key@tessera>``, an HTTP batch
keeps its batch id (``webhook-id`` / ``Idempotency-Key``), so the receiver can tell
the retry from a new message. Nothing else can send a row twice: a row leaves
``pending`` / ``sending`` only for ``sent``, ``failed`` or ``withdrawn``.

Consent is checked again right before sending (it may have been withdrawn since the
action was decided): such rows become ``withdrawn`` and are never sent. Quiet hours
hold every message until a run outside them. SMTP sessions run concurrently up to
``smtp.connections``; HTTP receivers get batches of ``batch_rows`` actions.
"""

from __future__ import annotations

import datetime as dt
import os
import smtplib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Callable, Mapping

from tessera.engine import Engine, SqlStep, as_engine
from tessera.feeds import delivery
from tessera.feeds.selection import delivery_filter
from tessera.activation.outbox import payload as decode_payload, scratch


@dataclass
class SendReport:
    sent: int = 0
    failed: int = 0
    retrying: int = 0
    withdrawn: int = 0
    held: int = 0
    resent_after_crash: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)

    def as_metadata(self) -> dict:
        return {"sent": self.sent, "failed": self.failed, "retrying": self.retrying,
                "withdrawn": self.withdrawn, "held_quiet_hours": self.held,
                "resent_after_crash": self.resent_after_crash}


def _renderer(config_dir: Path):
    """E-mail bodies are HTML, autoescaped (a name like ``<b>`` arrives as text); SMS
    texts and subjects are plain text (escaping would show ``&amp;``)."""
    import jinja2
    loader = jinja2.ChoiceLoader([jinja2.FileSystemLoader(str(config_dir / "templates")),
                                  jinja2.PackageLoader("tessera.activation", "templates")])
    html = jinja2.Environment(loader=loader, autoescape=True, undefined=jinja2.ChainableUndefined)
    text = jinja2.Environment(loader=loader, autoescape=False, undefined=jinja2.ChainableUndefined)
    return html, text


def _action_index(deployment) -> dict[tuple, Any]:
    """(origin, name, step, version) -> the action, for the current automations and score
    notifications (the journeys' versions are added by :func:`action_index`)."""
    from tessera.activation.scores import notify_actions
    out = {("automation", a.name, "action", None): a.action for a in deployment.automations}
    out.update({("score", name, step, None): action for name, _at, step, action in notify_actions(deployment)})
    return out


def withdraw_unconsented(engine: Engine) -> int:
    """Pending messages whose contact lost consent (or was suppressed, soft-deleted) since
    the action was decided become ``withdrawn``."""
    engine = as_engine(engine)
    n = 0
    for channel in ("email", "sms", "none"):
        n += int(engine.scalar(SqlStep("activation.withdraw_count", f"""
            SELECT count(*) FROM activation.outbox WHERE status IN ('pending', 'sending')
              AND channel = ? AND delivery_batch IS NULL AND customer_id NOT IN
              (SELECT customer_id FROM marts.contact_cards WHERE {delivery_filter(channel)})""",
            [channel])) or 0)
        engine.run(SqlStep("activation.withdraw", f"""
            UPDATE activation.outbox SET status = 'withdrawn', payload = NULL
            WHERE status IN ('pending', 'sending') AND channel = ? AND delivery_batch IS NULL
              AND customer_id NOT IN
              (SELECT customer_id FROM marts.contact_cards WHERE {delivery_filter(channel)})""",
            [channel]))
    return n + withdraw_from_batches(engine)


def withdraw_from_batches(engine: Engine) -> int:
    """Actions already inside an HTTP batch not sent yet (pending, being retried) whose
    contact lost consent, was suppressed or left the card since: their records are
    dropped from the batch body before it is (re)sent, the way ``forget`` scrubs an
    erased person (:func:`tessera.feeds.delivery.scrub_batch_subjects`; the batch keeps
    its id), and they become ``withdrawn``."""
    engine = as_engine(engine)
    engine.run(*delivery.delivery_table_steps())
    parts = [f"""
        SELECT o.target AS destination, o.delivery_batch AS batch_id, o.customer_id, o.action_key
        FROM activation.outbox o JOIN exports.delivery_batches b
          ON b.batch_id = o.delivery_batch AND b.destination = o.target
        WHERE o.status IN ('pending', 'sending') AND o.channel = '{channel}' AND b.status = 'pending'
          AND o.customer_id NOT IN (SELECT customer_id FROM marts.contact_cards
                                    WHERE {delivery_filter(channel)})"""
             for channel in ("email", "sms", "none")]
    n = scratch(engine, "_act_unconsented", SqlStep(
        "activation.unconsented_in_batches", " UNION ALL ".join(parts)))
    if not n:
        return 0
    with engine.together():
        delivery.scrub_batch_subjects(engine, "SELECT destination, batch_id, customer_id "
                                              "FROM _act_unconsented")
        engine.run(SqlStep("activation.withdraw_batched", """
            UPDATE activation.outbox SET status = 'withdrawn', payload = NULL,
                   last_error = 'consent withdrawn before sending'
            WHERE action_key IN (SELECT action_key FROM _act_unconsented)"""))
    return int(n)


def _mark(engine: Engine, keys: list[str], sql: str, params: list, name: str) -> None:
    if keys:
        engine.run(SqlStep(name, sql + " WHERE action_key IN (SELECT unnest(CAST(? AS VARCHAR[])))",
                           [*params, keys]))


def record_sent(engine: Engine, keys: list[str], now: dt.datetime) -> None:
    """The hand-over is recorded (a crash before this re-sends with the same Message-ID)."""
    _mark(engine, keys, "UPDATE activation.outbox SET status = 'sent', payload = NULL, "
          "sent_at = CAST(? AS TIMESTAMP), last_error = NULL", [now], "activation.sent")


def _smtp_batch(smtp, messages: list[tuple[str, EmailMessage]]) -> list[tuple[str, str | None, bool]]:
    """One SMTP session sends its share: (key, error class or None, permanent)."""
    out = []
    try:
        with smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout_s) as s:
            if smtp.starttls:
                s.starttls()
            if smtp.username_env:
                s.login(os.environ.get(smtp.username_env, ""), os.environ.get(smtp.password_env or "", ""))
            for key, msg in messages:
                try:
                    s.send_message(msg)
                    out.append((key, None, False))
                except smtplib.SMTPRecipientsRefused as exc:
                    codes = [c for c, _ in exc.recipients.values()]
                    out.append((key, "SMTPRecipientsRefused", all(500 <= c < 600 for c in codes)))
                except smtplib.SMTPResponseException as exc:
                    out.append((key, type(exc).__name__, 500 <= exc.smtp_code < 600))
    except (OSError, smtplib.SMTPException) as exc:
        done = {k for k, _, _ in out}
        out += [(k, type(exc).__name__, False) for k, _ in messages if k not in done]
    return out


def _send_smtp(engine: Engine, deployment, rows, now, clock, report: SendReport) -> None:
    settings = deployment.activation
    env, plain = _renderer(deployment.config_dir)
    actions = action_index(engine, deployment)
    msgs: list[tuple[str, EmailMessage]] = []
    for key, origin, name, step, version, cid, status, pl in rows:
        action = actions[(origin, name, step, version)]
        doc = decode_payload(pl)
        spec = action.email
        msg = EmailMessage()
        msg["From"] = settings.smtp.sender
        msg["To"] = spec.to or doc.get("email")
        msg["Subject"] = plain.from_string(spec.subject).render(**doc)
        msg["Message-ID"] = f"<{key}@tessera>"
        msg.set_content(env.get_template(spec.template).render(**doc), subtype="html")
        msgs.append((key, msg))
        if status == "sending":
            report.resent_after_crash += 1
    keys = [k for k, _ in msgs]
    # 1. recorded as being sent, attempt counted, BEFORE the hand-over
    _mark(engine, keys, "UPDATE activation.outbox SET status = 'sending', attempts = attempts + 1",
          [], "activation.sending")
    started = clock()
    n = settings.smtp.connections
    shares = [msgs[i::n] for i in range(n) if msgs[i::n]]
    with ThreadPoolExecutor(max_workers=max(1, len(shares))) as pool:
        results = [r for part in pool.map(lambda m: _smtp_batch(settings.smtp, m), shares) for r in part]
    ok = [k for k, err, _ in results if err is None]
    record_sent(engine, ok, clock())                                # 2. recorded as sent
    report.sent += len(ok)
    report.by_kind["email"] = report.by_kind.get("email", 0) + len(ok)
    bad = [(k, err, perm) for k, err, perm in results if err is not None]
    if results:
        engine.run(SqlStep("activation.smtp_attempts", """
            INSERT INTO activation.outbox_attempts
            SELECT a.action_key, o.customer_id, o.attempts, CAST(? AS TIMESTAMP), a.outcome, a.error
            FROM (SELECT unnest(CAST(? AS VARCHAR[])) AS action_key, unnest(CAST(? AS VARCHAR[])) AS outcome,
                         unnest(CAST(? AS VARCHAR[])) AS error) a
            JOIN activation.outbox o ON o.action_key = a.action_key""",
            [started, [k for k, _, _ in results],
             ["sent" if e is None else ("rejected" if p else "retry") for _, e, p in results],
             [e for _, e, _ in results]]))
    for key, err, perm in bad:
        engine.run(SqlStep("activation.smtp_failed", """
            UPDATE activation.outbox SET last_error = ?,
                   status = CASE WHEN ? OR attempts >= ? THEN 'failed' ELSE 'pending' END,
                   payload = CASE WHEN ? OR attempts >= ? THEN NULL ELSE payload END
            WHERE action_key = ?""", [err, perm, settings.max_attempts, perm, settings.max_attempts, key]))
    failed = engine.scalar(SqlStep("activation.failed_now", "SELECT count(*) FROM activation.outbox "
                                   "WHERE status = 'failed' AND action_key IN (SELECT unnest(CAST(? AS VARCHAR[])))",
                                   [[k for k, _, _ in bad]])) if bad else 0
    report.failed += int(failed)
    report.retrying += len(bad) - int(failed)


def action_index(engine: Engine, deployment) -> dict[tuple, Any]:
    """(origin, name, step, version) -> action, for the automations and every stored
    journey version (a contact finishing an older version gets that version's message)."""
    from tessera.activation.journeys import stored_versions, version_of
    out = _action_index(deployment)
    pairs = [(v, j) for _n, v, j in stored_versions(engine)]
    pairs += [(version_of(j), j) for j in deployment.journeys]
    for version, journey in pairs:
        for s in journey.steps:
            if s.action is not None:
                out[("journey", journey.name, s.name, version)] = s.action
    return out


def _http_record(env, plain, action, key: str, doc: dict) -> dict:
    kind, spec = action.kind, action.spec
    if kind == "webhook":
        rec = {"action_key": key}
        rec.update({k: v for k, v in doc.items() if k not in ("event", "coupon")})
        if doc.get("event"):
            rec["event"] = doc["event"]
        return rec
    if kind == "sms":
        return {"action_key": key, "to": doc.get("mobile"),
                "text": plain.get_template(spec.template).render(**doc)}
    body = env.get_template(spec.template).render(**doc)
    return {"action_key": key, "to": spec.to or doc.get("email"),
            "subject": plain.from_string(spec.subject).render(**doc), "html": body}


def _send_http(engine: Engine, deployment, environ, now, sleep, report: SendReport) -> None:
    settings = deployment.activation
    env, plain = _renderer(deployment.config_dir)
    actions = action_index(engine, deployment)
    for dest_name, dest_def in settings.destinations.items():
        rows = engine.rows(SqlStep("activation.http_pending", """
            SELECT action_key, origin, name, step, version, payload, customer_id FROM activation.outbox
            WHERE target = ? AND kind IN ('email', 'sms', 'webhook') AND status = 'pending'
              AND delivery_batch IS NULL ORDER BY queued_at, action_key""", [dest_name]))
        has_queue = engine.scalar(SqlStep("activation.http_queue", """
            SELECT count(*) FROM activation.outbox WHERE target = ? AND delivery_batch IS NOT NULL
              AND status IN ('pending', 'sending')""", [dest_name]))
        if not rows and not has_queue:
            continue
        dest = delivery.HttpDestination.from_settings(dest_name, dest_def, environ)
        groups: dict[tuple, list] = {}
        for key, origin, name, step, version, pl, cid in rows:
            groups.setdefault((origin, name, step, version), []).append((key, pl, cid))
        for (origin, name, step, version), items in groups.items():
            action = actions[(origin, name, step, version)]
            records = [_http_record(env, plain, action, k, decode_payload(pl)) for k, pl, _ in items]
            body = getattr(action.spec, "body", dest_def.body)
            make = delivery.xml_batches if body == "xml" else delivery.json_batches
            source = f"activation:{origin}:{name}:{step}"
            batches = make(dest.name, source=source, as_of=None, records=records,
                           batch_rows=dest_def.batch_rows,
                           envelope={"origin": origin, "name": name, "step": step},
                           # whose each record is: forget drops them from an unsent body
                           subjects=[cid for _, _, cid in items])
            delivery.enqueue(engine, dest.name, batches, now, supersede=False)
            keys, ids = [], []
            for b, i in zip(batches, range(0, len(items), dest_def.batch_rows)):
                for k, _, _ in items[i:i + dest_def.batch_rows]:
                    keys.append(k)
                    ids.append(b.batch_id)
            engine.run(SqlStep("activation.batched", """
                UPDATE activation.outbox AS o SET delivery_batch = m.batch_id, status = 'sending'
                FROM (SELECT unnest(CAST(? AS VARCHAR[])) AS k, unnest(CAST(? AS VARCHAR[])) AS batch_id) m
                WHERE o.action_key = m.k""", [keys, ids]))
        delivery.deliver_pending(engine, dest, sleep=sleep)
        # a batch never acknowledged after max_attempts attempts (over the runs) is given
        # up: its actions fail (a journey holds its contacts and retries with new keys)
        engine.run(SqlStep("activation.http_give_up", """
            UPDATE exports.delivery_batches AS b SET status = 'gave_up', body = NULL
            WHERE b.destination = ? AND b.status = 'pending'
              AND b.batch_id IN (SELECT delivery_batch FROM activation.outbox
                                 WHERE target = ? AND status = 'sending')
              AND (SELECT count(*) FROM exports.delivery_attempts a
                   WHERE a.batch_id = b.batch_id AND a.destination = b.destination) >= ?""",
            [dest_name, dest_name, settings.max_attempts]))
        before = dict(engine.rows(SqlStep("activation.http_before", """
            SELECT status, count(*) FROM activation.outbox WHERE target = ? GROUP BY 1""", [dest_name])))
        engine.run(SqlStep("activation.http_sync", """
            UPDATE activation.outbox AS o SET
                status = CASE b.status WHEN 'delivered' THEN 'sent' WHEN 'pending' THEN 'sending'
                                       ELSE 'failed' END,
                sent_at = b.delivered_at,
                payload = CASE WHEN b.status = 'pending' THEN o.payload END,
                attempts = (SELECT count(*) FROM exports.delivery_attempts a
                            WHERE a.batch_id = b.batch_id AND a.destination = b.destination),
                last_error = CASE b.status WHEN 'rejected' THEN 'rejected by the receiver'
                                           WHEN 'pending' THEN 'not acknowledged yet'
                                           WHEN 'gave_up' THEN 'no acknowledgement, gave up'
                                           WHEN 'erased' THEN 'erased' END
            FROM exports.delivery_batches b
            WHERE b.batch_id = o.delivery_batch AND b.destination = ?
              AND o.target = ? AND o.status IN ('pending', 'sending')""",
            [dest_name, dest_name]))
        after = dict(engine.rows(SqlStep("activation.http_after", """
            SELECT status, count(*) FROM activation.outbox WHERE target = ? GROUP BY 1""", [dest_name])))
        sent = after.get("sent", 0) - before.get("sent", 0)
        report.sent += sent
        report.failed += after.get("failed", 0) - before.get("failed", 0)
        report.retrying += after.get("sending", 0)
        for kind, n in engine.rows(SqlStep("activation.http_kinds", """
                SELECT kind, count(*) FROM activation.outbox WHERE target = ? AND status = 'sent'
                  AND sent_at >= CAST(? AS TIMESTAMP) GROUP BY 1""", [dest_name, now])):
            report.by_kind[kind] = report.by_kind.get(kind, 0) + int(n)


def dispatch(engine: Engine, deployment, now: dt.datetime, *, environ: Mapping[str, str] | None = None,
             sleep: Callable[[float], Any] = time.sleep,
             clock: Callable[[], dt.datetime] = lambda: dt.datetime.now().replace(tzinfo=None)) -> SendReport:
    """Send what the outbox holds: pending rows, and ``sending`` rows a crash left behind."""
    engine = as_engine(engine)
    report = SendReport()
    report.withdrawn = withdraw_unconsented(engine)
    quiet = deployment.activation.quiet_hours
    if quiet is not None and quiet.holds(now.hour):
        report.held = int(engine.scalar(SqlStep("activation.held", """
            SELECT count(*) FROM activation.outbox WHERE status IN ('pending', 'sending')""")) or 0)
        return report
    rows = engine.rows(SqlStep("activation.smtp_pending", """
        SELECT action_key, origin, name, step, version, customer_id, status, payload FROM activation.outbox
        WHERE kind = 'email' AND target NOT IN (SELECT unnest(CAST(? AS VARCHAR[])))
          AND status IN ('pending', 'sending') ORDER BY queued_at, action_key""",
        [list(deployment.activation.destinations)]))
    if rows:
        _send_smtp(engine, deployment, rows, now, clock, report)
    _send_http(engine, deployment, os.environ if environ is None else environ, now, sleep, report)
    return report
