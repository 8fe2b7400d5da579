"""Named SQL steps: what stage code hands to an engine instead of executing SQL itself.

Why: a stage that builds steps (a name, the SQL text, the parameters bound to it) can be
run by any engine that speaks the SQL, recorded, counted and checked for portability,
and read in one place when a number looks wrong. This is splink's shape
(``splink/internals/pipeline.py``: a pipeline of named ``CTE`` steps). SQL text is
written in DuckDB's dialect, the reference engine; parameters are ``$name``
placeholders bound from a mapping (or ``?`` placeholders bound from a sequence, as the
rule compiler emits them), never formatted into the text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, Mapping, Sequence


@dataclass(frozen=True)
class SqlStep:
    """One statement of a stage: ``name`` says what it computes (``"rfm.scores_of_day"``)."""

    name: str
    sql: str
    params: Mapping[str, Any] | Sequence[Any] = field(default_factory=dict)

    def bind(self, **params: Any) -> SqlStep:
        """The same step with more (or other) named parameters."""
        return SqlStep(self.name, self.sql, {**dict(self.params), **params})


@cache
def _read(package: str, name: str) -> str:
    return resources.files(package).joinpath("sql", name).read_text(encoding="utf-8")


def sql_file(package: str, name: str) -> str:
    """The text of ``<package>/sql/<name>``: SQL longer than a few lines lives in a file
    beside the stage that owns it (STYLE rule 8)."""
    return _read(package, name)


def step_from_file(package: str, name: str, **params: Any) -> SqlStep:
    """A step named ``<stage>.<file stem>`` whose SQL is ``<package>/sql/<name>``."""
    stage = package.rsplit(".", 1)[-1]
    return SqlStep(f"{stage}.{name.removesuffix('.sql')}", sql_file(package, name), params)


def ddl_statements(package: str, name: str) -> list[SqlStep]:
    """The statements of a DDL file, one step each: whole-line ``--`` comments are dropped,
    then the text is split at ``;`` (so no ``;`` inside a string literal)."""
    stage = package.rsplit(".", 1)[-1]
    text = "\n".join(line for line in sql_file(package, name).splitlines()
                     if not line.lstrip().startswith("--"))
    parts = [p.strip() for p in text.split(";") if p.strip()]
    return [SqlStep(f"{stage}.ddl.{name.removesuffix('.sql')}[{i}]", p) for i, p in enumerate(parts)]
