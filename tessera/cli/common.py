"""What the command modules share: date parsing, confirmation, the warehouse they open.

Kept free of Dagster, DuckDB and polars at import time: ``tessera --help`` loads every
command module, and a command pays only for what it uses.
"""

from __future__ import annotations

import datetime as dt
import re
import sys
from typing import Any

import click

DEMO_DATE = dt.date(2026, 11, 1)
_ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


class DateType(click.ParamType):
    """A calendar day written YYYY-MM-DD; anything else is a usage error naming the option."""

    name = "YYYY-MM-DD"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> dt.date:
        if isinstance(value, dt.date):
            return value
        text = str(value).strip()
        try:
            if not _ISO_DAY.fullmatch(text):
                raise ValueError
            return dt.date.fromisoformat(text)
        except ValueError:
            self.fail(f"{text!r} is not a calendar day in the form YYYY-MM-DD", param, ctx)


DATE = DateType()


class MultiValueOption(click.Option):
    """An option that takes one or more values after a single flag (``--ids 1 2 3``), as the
    argparse CLI's ``nargs="+"`` did; it may also be repeated.

    click has no such option type, so the parser's handler for this flag is wrapped to take
    the following words up to the next option. This leans on click's parser internals
    (``_long_opt`` / ``_short_opt``); tests/core/test_cli.py covers it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["multiple"] = True
        super().__init__(*args, **kwargs)

    def add_to_parser(self, parser: Any, ctx: click.Context) -> None:
        super().add_to_parser(parser, ctx)
        for opt in self.opts:
            table = parser._long_opt if opt in parser._long_opt else parser._short_opt
            parser_opt = table[opt]
            process = parser_opt.process

            def greedy(value: Any, state: Any, _process: Any = process) -> None:
                _process(value, state)
                while state.rargs and not state.rargs[0].startswith("-"):
                    _process(state.rargs.pop(0), state)

            parser_opt.process = greedy


def setup_env(ctx: click.Context) -> None:
    """Apply the group's --config / --home to the environment and prepare DAGSTER_HOME."""
    from tessera.settings.paths import setup_env as _setup_env

    obj = ctx.find_root().obj or {}
    _setup_env(obj.get("config"), obj.get("home"))


def wait_seconds(ctx: click.Context) -> float | None:
    """The group's ``--wait SECONDS`` (None: wait for the warehouse as long as it takes)."""
    return (ctx.find_root().obj or {}).get("wait")


def warehouse_and_deployment(ctx: click.Context):
    """An open, initialised warehouse connection, the deployment and the paths."""
    setup_env(ctx)
    from tessera.deployment import load_deployment
    from tessera.engine.warehouse import connect, ensure_warehouse
    from tessera.settings.paths import tessera_paths

    paths = tessera_paths()
    # closes runs whose process died and waits (saying for whom) while one uses the warehouse
    from pipelines.runs import before_warehouse_command

    before_warehouse_command(f"tessera {ctx.command_path.split(' ', 1)[-1]}",
                             wait_s=wait_seconds(ctx))
    deployment = load_deployment(paths["config"])
    con = connect(paths["warehouse"], memory_limit=deployment.warehouse.memory_limit,
                  temp_directory=deployment.warehouse.temp_directory)
    ensure_warehouse(con)
    try:
        _finish_killed_erasures(con, deployment, paths)
    except BaseException:
        con.close()
        raise
    return con, deployment, paths


def _finish_killed_erasures(con, deployment, paths) -> None:
    """A forget or purge killed between its warehouse transaction and the landing files is
    finished by the next warehouse command (its warehouse part is already all or nothing)."""
    import os

    from tessera.ingest.scrub import erasures_owed, finish_erasures

    if not erasures_owed(con):
        return
    key = os.environ.get("TESSERA_SUPPRESSION_KEY")
    if not key:
        click.echo("an interrupted erasure still owes landing files; set "
                   "TESSERA_SUPPRESSION_KEY so that the next command finishes it", err=True)
        return
    done = finish_erasures(con, deployment, paths["landing"], key)
    click.echo(f"finished {len(done)} interrupted erasure(s): "
               f"{sum(done.values())} landing file(s) rewritten", err=True)


def interactive() -> bool:
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):  # stdin closed or replaced by a test harness
        return False


def confirmed(what: str, yes: bool) -> int | None:
    """None to go on; else the exit code of a refusal.

    Without --yes a person at a terminal is asked; a script or scheduler (no terminal) is
    refused, so a destructive command never runs because nobody was there to say no.
    """
    if yes:
        return None
    if not interactive():
        click.echo(f"{what}; refused without --yes in a non-interactive run", err=True)
        return 2
    if click.confirm(f"{what}. Go on?", default=False, err=True):
        return None
    click.echo("nothing done", err=True)
    return 1


def yes_option(help_text: str):
    return click.option("--yes", "-y", is_flag=True, help=help_text)
