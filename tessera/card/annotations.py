"""CRM annotations: notes and tasks on contacts, linked to golden customers.

SALESmanago's contact card shows the notes (public, or private to their author), the
tasks with their owner and reminder, and the contact's owner. They come in with the
CRM's records: a note or task names the contact's id in the contact source given by the
source's ``customer_source``, exactly as an order names its customer, so it follows the
person through merges and splits.

Notes are personal data of the most sensitive kind (free text). They live in
``core.notes`` only: the contact card carries counts and dates, never a note's text,
so segments and feeds cannot leak one; a private note is counted for nobody but kept
for its author. Erasure deletes them with the person (``core`` tables keyed by
``customer_id``; raw and staging rows by the erased contact records they name).
"""

from __future__ import annotations

from tessera.engine import Engine, SqlStep, as_engine
from tessera.settings import Deployment

ANNOTATION_ENTITIES = ("note", "task")

NOTES_DDL = """(note_id VARCHAR, customer_id BIGINT, source VARCHAR, contact_ref VARCHAR, body VARCHAR,
                visibility VARCHAR, author VARCHAR, created_at TIMESTAMP)"""
TASKS_DDL = """(task_id VARCHAR, customer_id BIGINT, source VARCHAR, contact_ref VARCHAR, title VARCHAR,
                owner VARCHAR, due_at TIMESTAMP, reminder_at TIMESTAMP, status VARCHAR,
                created_at TIMESTAMP, completed_at TIMESTAMP)"""


def annotation_table_steps() -> list[SqlStep]:
    """Empty annotation tables for deployments without note or task sources (the card
    reads them either way)."""
    return [SqlStep("card.notes_ddl", f"CREATE TABLE IF NOT EXISTS core.notes {NOTES_DDL}"),
            SqlStep("card.tasks_ddl", f"CREATE TABLE IF NOT EXISTS core.tasks {TASKS_DDL}")]


def ensure_tables(engine: Engine) -> None:
    """:func:`annotation_table_steps`, run."""
    as_engine(engine).run(*annotation_table_steps())


def _linked(deployment: Deployment, entity: str, table: str) -> list[str]:
    return [f"SELECT x.*, cs.customer_id FROM staging.{table} x "
            f"LEFT JOIN core.customer_sources cs ON cs.source = '{s.customer_source}' "
            f"AND cs.source_record_id = x.contact_ref WHERE x.source = '{s.name}'"
            for s in deployment.sources_of(entity)]


def build_annotations(engine: Engine, deployment: Deployment) -> dict:
    """``core.notes`` and ``core.tasks``: every annotation with the customer it is about."""
    engine = as_engine(engine)
    notes = _linked(deployment, "note", "notes") if engine.table_exists("staging", "notes") else []
    tasks = _linked(deployment, "task", "tasks") if engine.table_exists("staging", "tasks") else []
    with engine.together():
        if notes:
            engine.replace_table("core.notes", SqlStep("card.notes", f"""
                SELECT source_record_id AS note_id, customer_id, source, contact_ref, body,
                       coalesce(visibility, 'public') AS visibility, author, created_at
                FROM ({' UNION ALL '.join(notes)}) ORDER BY customer_id, created_at, note_id"""))
        else:
            engine.run(SqlStep("card.notes_empty", f"CREATE OR REPLACE TABLE core.notes {NOTES_DDL}"))
        if tasks:
            engine.replace_table("core.tasks", SqlStep("card.tasks", f"""
                SELECT source_record_id AS task_id, customer_id, source, contact_ref, title, owner,
                       due_at, reminder_at, coalesce(status, 'open') AS status, created_at, completed_at
                FROM ({' UNION ALL '.join(tasks)}) ORDER BY customer_id, due_at NULLS LAST, task_id"""))
        else:
            engine.run(SqlStep("card.tasks_empty", f"CREATE OR REPLACE TABLE core.tasks {TASKS_DDL}"))
    n = engine.rows(SqlStep("card.annotation_counts",
                            "SELECT (SELECT count(*) FROM core.notes), "
                            "(SELECT count(*) FROM core.notes WHERE customer_id IS NULL), "
                            "(SELECT count(*) FROM core.tasks), "
                            "(SELECT count(*) FROM core.tasks WHERE status = 'open'), "
                            "(SELECT count(*) FROM core.tasks WHERE customer_id IS NULL)"))[0]
    return {"notes": int(n[0]), "notes_without_customer": int(n[1]), "tasks": int(n[2]),
            "open_tasks": int(n[3]), "tasks_without_customer": int(n[4])}


# The card's view of annotations: counts and dates only (never a note's text).
CARD_SQL = """
    SELECT customer_id,
           count(*) FILTER (WHERE kind = 'note' AND visibility = 'public') AS note_count,
           max(happened_at) FILTER (WHERE kind = 'note' AND visibility = 'public') AS last_note_at,
           count(*) FILTER (WHERE kind = 'task' AND status = 'open') AS open_tasks,
           min(due_ts) FILTER (WHERE kind = 'task' AND status = 'open') AS next_task_due_at
    FROM (
        SELECT customer_id, 'note' AS kind, visibility, NULL AS status, created_at AS happened_at, NULL::TIMESTAMP AS due_ts
        FROM core.notes
        UNION ALL
        SELECT customer_id, 'task', NULL, status, created_at, due_at FROM core.tasks
    ) WHERE customer_id IS NOT NULL GROUP BY customer_id"""

CARD_FIELDS = {"note_count": "integer", "last_note_at": "timestamp", "open_tasks": "integer",
               "next_task_due_at": "timestamp"}
