"""CRM notes and tasks: linked to golden customers through the contact they name, counted
on the card (public notes only, never their text), and erased with the person."""
from __future__ import annotations

import os


from tessera.ingest.scrub import scrub_landing_files
from tessera.privacy import suppression as privacy
from tests.stages.small_world import SmallWorld, crm_people

TESSERA_YAML = """
deployment: test
nodes: [{name: crm}]
tree: {priority: [crm]}
"""
SOURCES_YAML = """
sources:
""" + crm_people("source_record_id: id, first_name: first, email: email, owner: owner",
                 "crm/people*.csv") + """\
  - name: crm_notes
    entity: note
    node: crm
    format: csv
    path: "crm/notes*.csv"
    csv: {delimiter: ";", encoding: utf-8}
    customer_source: crm_people
    timestamp_format: "%Y-%m-%d %H:%M"
    columns: {source_record_id: id, contact_ref: contact, body: text, visibility: vis, author: by,
              created_at: at}
  - name: crm_tasks
    entity: task
    node: crm
    format: csv
    path: "crm/tasks*.csv"
    csv: {delimiter: ";", encoding: utf-8}
    customer_source: crm_people
    timestamp_format: "%Y-%m-%d %H:%M"
    columns: {source_record_id: id, contact_ref: contact, title: title, owner: owner, due_at: due,
              status: status, created_at: at}
"""
PEOPLE = ("id;first;email;owner\n"
          "P1;Anna;anna@example.it;g.rossi\n"
          "P2;Bruno;bruno@example.it;\n"
          "P3;Anna;ANNA@example.it ;m.bianchi\n")
NOTES = ("id;contact;text;vis;by;at\n"
         "N1;P1;Chiamata: vuole il catalogo;public;g.rossi;2026-10-01 10:00\n"
         "N2;P3;Cliente difficile;private;m.bianchi;2026-10-05 09:00\n"
         "N3;P2;Ordine in arrivo;;g.rossi;2026-09-01 12:00\n"
         "N4;P9;Contatto sconosciuto;public;g.rossi;2026-09-02 12:00\n"
         "N5;P2;Senza data;public;g.rossi;\n")
TASKS = ("id;contact;title;owner;due;status;at\n"
         "T1;P1;Richiamare;g.rossi;2026-11-10 09:00;open;2026-10-01 10:00\n"
         "T2;P3;Inviare catalogo;m.bianchi;2026-11-05 09:00;;2026-10-02 10:00\n"
         "T3;P1;Vecchio;g.rossi;2026-10-01 09:00;done;2026-09-01 10:00\n"
         "T4;P2;Boh;g.rossi;2026-10-01 09:00;maybe;2026-09-01 10:00\n")


def _world(tmp_path):
    return SmallWorld(tmp_path, {"tessera.yaml": TESSERA_YAML, "sources.yaml": SOURCES_YAML},
                      {"crm/people.csv": PEOPLE, "crm/notes.csv": NOTES,
                       "crm/tasks.csv": TASKS}).materialize_card()


def test_notes_and_tasks_follow_the_person_onto_the_card(tmp_path):
    dep, con = _world(tmp_path)
    try:
        anna, bruno = (con.execute("SELECT customer_id FROM core.customer_sources WHERE source_record_id = ?",
                                   [r]).fetchone()[0] for r in ("P1", "P2"))
        assert con.execute("SELECT customer_id FROM core.customer_sources WHERE source_record_id = 'P3'"
                           ).fetchone()[0] == anna  # P1 and P3 are one person: their notes meet
        notes = con.execute("SELECT note_id, customer_id, visibility FROM core.notes ORDER BY note_id").fetchall()
        assert notes == [("N1", anna, "public"), ("N2", anna, "private"), ("N3", bruno, "public"),
                         ("N4", None, "public")]
        tasks = con.execute("SELECT task_id, customer_id, status FROM core.tasks ORDER BY task_id").fetchall()
        assert tasks == [("T1", anna, "open"), ("T2", anna, "open"), ("T3", anna, "done")]
        card = con.execute("""SELECT note_count, last_note_at, open_tasks, next_task_due_at, owner
                              FROM marts.contact_cards WHERE customer_id = ?""", [anna]).fetchone()
        assert card[0] == 1 and str(card[1]) == "2026-10-01 10:00:00"  # the private note is not counted
        assert card[2] == 2 and str(card[3]) == "2026-11-05 09:00:00"
        assert card[4] in ("g.rossi", "m.bianchi")
        assert "body" not in {r[0] for r in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'contact_cards'").fetchall()}
        rejects = con.execute("SELECT source, line, field FROM ops.rejects ORDER BY source").fetchall()
        assert rejects == [("crm_notes", 6, "created_at"), ("crm_tasks", 5, "status")]

        # Forget Anna: her notes and tasks go from every table and from the landing files.
        key = os.environ["TESSERA_SUPPRESSION_KEY"]
        out = privacy.forget(con, dep, key, emails=["anna@example.it"], request_id="r1")
        scrub_landing_files(con, dep, tmp_path / "landing", key, "r1", out["records"], out["orders"])
        assert con.execute("SELECT count(*) FROM core.notes WHERE customer_id = ?", [anna]).fetchone()[0] == 0
        assert con.execute("SELECT count(*) FROM core.tasks WHERE customer_id = ?", [anna]).fetchone()[0] == 0
        for table in ("raw.crm_notes", "staging.notes"):
            assert con.execute(f"SELECT count(*) FROM {table} WHERE contact_ref IN ('P1', 'P3')").fetchone()[0] == 0
        notes_file = (tmp_path / "landing" / "crm" / "notes.csv").read_text()
        assert "N1;" not in notes_file and "N2;" not in notes_file and "N3;P2" in notes_file
        assert "T1;" not in (tmp_path / "landing" / "crm" / "tasks.csv").read_text()
        # the rejected rows of others keep pointing at their (moved) lines
        assert con.execute("SELECT line FROM ops.rejects WHERE source = 'crm_notes'").fetchone()[0] == 4
    finally:
        con.close()
