"""The fitted probabilistic model, stored and refitted on a schedule.

Why: a pair's match weight reads the model (``m`` by EM over every candidate pair, ``u``
on a sample of random pairs, the term frequency of each value over every record, the
threshold from the record count). Refitted at every run, one new record moves every
score, so no run could re-resolve only the records a day's changes reach, and a full
rebuild could never equal an incremental day. Fitted once and stored, the weight of a
pair reads its two records only: full and incremental runs between two refits score
with the same stored model and resolve identically.

A refit happens in a full identity build when the stored fit is missing, older than
``identity.probabilistic.refit_every_days`` (0: every run, the old behaviour), or was
fitted under other identity settings. ``ops.identity_model_fit`` holds the fit (m, u as
JSON, the threshold in bits, when and over how many records); ``ops.identity_model_tf``
the term frequencies keyed by the value's hash (no personal value is stored).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json

from tessera.engine import Engine, SqlStep
from tessera.identity.matching import tf_table_sql
from tessera.settings import IdentitySettings

# Bump when what a fit holds or how it is used changes: every stored fit becomes stale.
MECHANISM = "1"
TF_TABLE = "ops.identity_model_tf"
FIT_DDL = """
CREATE TABLE IF NOT EXISTS ops.identity_model_fit (
    fitted_at       TIMESTAMP NOT NULL,
    run_key         VARCHAR   NOT NULL,
    digest          VARCHAR   NOT NULL,   -- the identity settings it was fitted under
    records         BIGINT    NOT NULL,   -- records it was fitted on
    threshold_bits  DOUBLE    NOT NULL,   -- the weight a pair needs
    m_json          VARCHAR   NOT NULL,   -- [[comparison, level code, m], ...]
    u_json          VARCHAR   NOT NULL    -- [[comparison, level code, u], ...]
)"""


def _q(name: str, sql: str, **params) -> SqlStep:
    return SqlStep(f"identity.model.{name}", sql, params)


def model_digest(settings: IdentitySettings) -> str:
    """The settings a fit depends on (all of identity's, less the refit schedule)."""
    dump = settings.model_dump(mode="json")
    dump["probabilistic"].pop("refit_every_days", None)
    text = json.dumps([MECHANISM, dump], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _latest(engine: Engine) -> tuple | None:
    if not engine.table_exists("ops", "identity_model_fit") or not engine.table_exists("ops", "identity_model_tf"):
        return None
    rows = engine.rows(_q("latest", """
        SELECT fitted_at, digest, records, threshold_bits, m_json, u_json FROM ops.identity_model_fit
        ORDER BY fitted_at DESC LIMIT 1"""))
    return rows[0] if rows else None


def refit_reason(engine: Engine, settings: IdentitySettings, run_at: dt.datetime) -> str | None:
    """Why this run must fit the model afresh (None: score with the stored one)."""
    every = settings.probabilistic.refit_every_days
    if every == 0:
        return "refit_every_days is 0"
    latest = _latest(engine)
    if latest is None:
        return "no fitted model"
    fitted_at, digest = latest[0], latest[1]
    if digest != model_digest(settings):
        return "the identity settings changed"
    age = (run_at.date() - fitted_at.date()).days
    if age >= every:
        return f"the model is {age} days old"
    return None


def load(engine: Engine) -> dict:
    """The stored fit: ``m`` and ``u`` as ``{(comparison, code): value}``, the threshold."""
    fitted_at, _digest, records, threshold, m_json, u_json = _latest(engine)
    return {"fitted_at": fitted_at, "records": int(records), "threshold": float(threshold),
            "m": {(c, int(k)): float(v) for c, k, v in json.loads(m_json)},
            "u": {(c, int(k)): float(v) for c, k, v in json.loads(u_json)}}


def save(engine: Engine, run_key: str, run_at: dt.datetime, settings: IdentitySettings, fit: dict) -> None:
    """Store a fit and the term frequencies of ``_mrec`` (the records it was fitted on)."""
    engine.run(_q("fit_ddl", FIT_DDL))
    engine.replace_table(TF_TABLE, _q("tf", tf_table_sql()))
    engine.run(
        _q("fit_clear", "DELETE FROM ops.identity_model_fit"),
        _q("fit_write", """
            INSERT INTO ops.identity_model_fit
            SELECT CAST($at AS TIMESTAMP), $k, $digest, $records, $threshold, $m, $u""",
           at=run_at, k=run_key, digest=model_digest(settings), records=int(fit["records"]),
           threshold=float(fit["threshold"]),
           m=json.dumps([[c, k, v] for (c, k), v in sorted(fit["m"].items())]),
           u=json.dumps([[c, k, v] for (c, k), v in sorted(fit["u"].items())])))


def drop(engine: Engine) -> None:
    """Forget the stored fit: the next identity build refits."""
    engine.run(_q("drop_fit", "DROP TABLE IF EXISTS ops.identity_model_fit"),
               _q("drop_tf", f"DROP TABLE IF EXISTS {TF_TABLE}"))
