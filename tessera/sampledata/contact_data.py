"""Sample contact-card entities (``tessera generate``): messages, app events, details.

* ``email/messages_YYYYMMDD.csv`` - the e-mail platform's log of messages sent to
  contacts (e-mail, SMS, web push; UTF-8, comma), keyed by e-mail, with SALESmanago's
  delivery status codes (most sends have none: sent), first open and first click.
* ``mobile/app_events_YYYYMMDD.csv`` - the shop app's events (install, launch, session
  end with the seconds spent, location), keyed by e-mail and device.
* ``crm/crm_details_YYYYMMDD.csv`` - standard and dictionary details (key/value) of CRM
  contacts, naming the contact by CRM id (UTF-8, ``;``).

Drawn for the first persons only (at most ``LIMIT``), so the demo and the benchmarks'
large runs stay quick. One planted bad row per file (a status code that does not exist,
an unknown app event type, a detail kind that is neither standard nor dictionary) is
listed in the truth.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from tessera.sampledata.crm import write_csv

LIMIT = 20_000
STATUSES = ["FP", "IE", "OO", "PF", "TE", "TR", "SF", "LF", "HF", "UF", "C", "WFS"]
SENDERS = {"email": "newsletter@negozio.example", "sms": "NEGOZIO", "web_push": "negozio.example"}
SMS_NAMES = ["Saldi: -20% fino a domenica", "Il tuo ordine è in consegna", "Evento in negozio a Milano"]
PUSH_NAMES = ["Nuovi arrivi", "Il carrello ti aspetta", "Offerta del giorno"]
TOWNS = {"IT": ["Milano", "Roma", "Torino", "Bologna", "Napoli"], "PL": ["Warszawa", "Kraków", "Gdańsk", "Wrocław"]}
STANDARD = [("preferred_store", ["Milano Duomo", "Roma Termini", "Torino Centro", "online"]),
            ("shoe_size", ["37", "38", "39", "40", "41", "42", "43", "44"]),
            ("favourite_colour", ["nero", "blu", "rosso", "beige"])]
DICTIONARY = [("loyalty_points", None), ("newsletter_frequency", ["weekly", "monthly"]),
              ("children", ["0", "1", "2", "3"])]


def _plant(rows: list[list[str]], rng, make_bad, rel: str, field: str, problem: str, bad_rows: list) -> None:
    if rows:
        k = int(rng.integers(0, len(rows)))
        rows.insert(k, make_bad(rows[k]))
        bad_rows.append((rel, k + 2, field, problem))


def generate_contact_data(root: Path, people: list[dict], crm_ids: list[str],
                          campaigns: list[tuple[str, int, int]], seed: int, ymd: str, as_of_s: int,
                          bad_rows: list) -> tuple[list[str], dict[str, int]]:
    rng = np.random.default_rng([seed, 23])
    fmt = "%Y-%m-%dT%H:%M:%S"
    ts = lambda s: datetime.fromtimestamp(int(s), tz=timezone.utc).strftime(fmt)  # noqa: E731
    people = [p for p in people[:LIMIT] if p.get("email")]
    messages, app_events, details = [], [], []
    for p in people:
        email = p["email"]
        # e-mails of the monthly campaigns, an SMS or a web push now and then
        if rng.random() < 0.6:
            for cid, start, end in campaigns:
                if rng.random() >= 0.35:
                    continue
                created = int(rng.integers(start, max(start + 1, end - 3600)))
                status = "" if rng.random() < 0.85 else STATUSES[int(rng.integers(0, len(STATUSES)))]
                sent = "" if status in ("WFS", "C", "OO", "IE", "PF", "TE", "TR") else ts(created + 60)
                opened = ts(created + int(rng.integers(600, 3 * 86400))) if sent and not status \
                    and rng.random() < 0.45 else ""
                clicked = ts(created + 3 * 86400 + int(rng.integers(60, 86400))) if opened \
                    and rng.random() < 0.35 else ""
                via = "mailing" if rng.random() < 0.8 else ("rule" if rng.random() < 0.6 else "workflow")
                messages.append([f"M{len(messages) + 1:08d}", "email", email, cid,
                                 f"Newsletter {cid[4:]}", SENDERS["email"], via, status, ts(created),
                                 sent, opened, clicked])
        for channel, names, share in (("sms", SMS_NAMES, 0.08), ("web_push", PUSH_NAMES, 0.12)):
            if rng.random() < share:
                created = as_of_s - int(rng.integers(3600, 120 * 86400))
                status = "" if rng.random() < 0.9 else "FP"
                opened = ts(created + int(rng.integers(60, 7200))) if channel == "web_push" and not status \
                    and rng.random() < 0.5 else ""
                messages.append([f"M{len(messages) + 1:08d}", channel, email, "",
                                 names[int(rng.integers(0, len(names)))], SENDERS[channel],
                                 "rule" if channel == "web_push" else "mailing", status, ts(created),
                                 "" if status else ts(created + 30), opened, ""])
        # the shop app: installed by about one person in seven
        if rng.random() < 0.15:
            pl_ = p.get("country") == "PL"
            towns = TOWNS["PL" if pl_ else "IT"]
            android = rng.random() < 0.6
            os_, versions = ("Android", ["12", "13", "14"]) if android else ("iOS", ["16.7", "17.4", "17.5"])
            device = f"app-{p['person_id']}"
            t = as_of_s - int(rng.integers(30, 300)) * 86400 + int(rng.integers(7 * 3600, 22 * 3600))
            v = int(rng.integers(0, 2))
            base = ["it.negozio.app", "", "pl" if pl_ else "it", os_, ""]

            def event(kind, at, location="", seconds=""):
                app_events.append([f"A{len(app_events) + 1:08d}", kind, ts(at), base[0],
                                   f"3.{v}.0", base[2], os_, versions[v], location, seconds, email, device])

            event("install", t)
            for _ in range(int(rng.integers(1, 12))):
                t += int(rng.integers(3600, 20 * 86400))
                if t >= as_of_s:
                    break
                if rng.random() < 0.2 and v < 2:
                    v += 1  # the app and the system were updated
                event("launch", t)
                event("session_end", t + 60 + int(rng.integers(0, 1500)),
                      seconds=str(60 + int(rng.integers(0, 1500))))
                if rng.random() < 0.5:
                    event("location", t + 30, location=f"{towns[int(rng.integers(0, len(towns)))]}, "
                                                       f"{'PL' if pl_ else 'IT'}")
    # CRM details: standard and dictionary details of one CRM contact in four
    for rid in crm_ids[:LIMIT]:
        if rng.random() >= 0.25:
            continue
        at = as_of_s - int(rng.integers(86400, 365 * 86400))
        for kind, catalogue in (("standard", STANDARD), ("dictionary", DICTIONARY)):
            for name, values in catalogue:
                if rng.random() < 0.5:
                    value = str(int(rng.integers(0, 5000))) if values is None \
                        else values[int(rng.integers(0, len(values)))]
                    details.append([f"D{len(details) + 1:08d}", rid, kind, name, value, ts(at)])
    mrel, arel, drel = f"email/messages_{ymd}.csv", f"mobile/app_events_{ymd}.csv", f"crm/crm_details_{ymd}.csv"
    _plant(messages, rng, lambda r: [f"M9{r[0][1:]}", *r[1:7], "XX", *r[8:]], mrel, "status", "not_allowed", bad_rows)
    _plant(app_events, rng, lambda r: [f"A9{r[0][1:]}", "crash", *r[2:]], arel, "event_type", "not_allowed",
           bad_rows)
    _plant(details, rng, lambda r: [f"D9{r[0][1:]}", r[1], "secret", *r[3:]], drel, "kind", "not_allowed",
           bad_rows)
    counts = {
        "messages": write_csv(root, mrel, ["id", "channel", "email", "campaign_id", "name", "sender",
                                           "sent_via", "status", "created_at", "sent_at", "opened_at",
                                           "clicked_at"], messages, ","),
        "app_events": write_csv(root, arel, ["id", "type", "at", "app", "app_version", "language", "os",
                                             "os_version", "location", "session_seconds", "email",
                                             "device"], app_events, ","),
        "crm_details": write_csv(root, drel, ["id_dettaglio", "id_contatto", "tipo", "chiave", "valore",
                                              "data"], details, ";"),
    }
    return [mrel, arel, drel], counts
