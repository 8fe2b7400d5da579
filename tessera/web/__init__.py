"""The analyst's web page: search, the 360-degree contact card and a small analytics page.

A front end beside :mod:`tessera.cli`, read-only: every request opens the warehouse
read-only through the engine seam (:func:`tessera.engine.read_only`) and closes it before
answering, so the page never holds DuckDB's file while the daily job needs to write it
(RELIABILITY.md rule 3); while a run writes, the page says so instead of waiting.

``queries`` holds what is read (named SQL steps over the warehouse), ``app`` the
Starlette application and its templates.
"""
