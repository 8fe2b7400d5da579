"""The analyst's web page: search, the 360-degree contact card and a small analytics page.

A front end beside :mod:`tessera.cli`, read-only: every request reads the snapshot the
daily job publishes at its end (``snapshot``: Parquet files of the tables the page reads,
switched atomically), so the page never holds DuckDB's file while the daily job needs to
write it (RELIABILITY.md rule 3), and answers while a run writes.

``queries`` holds what is read (named SQL steps over the warehouse), ``snapshot`` the
publication, ``report`` the daily static HTML report, ``app`` the Starlette application
and its templates.
"""
