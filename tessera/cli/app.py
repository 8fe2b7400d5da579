"""The ``tessera`` command group and ``main``.

Commands are grouped by concern in ``run``, ``privacy``, ``marketing`` and ``sources``;
each imports Dagster, DuckDB or polars inside its own body, so ``tessera --help`` and
``tessera summary`` do not pay for the Dagster definitions they do not use.

Paths come from TESSERA_CONFIG (configuration folder), TESSERA_HOME (warehouse, landing,
feeds) and DAGSTER_HOME (:mod:`tessera.settings.paths`), with ``--config`` / ``--home``
overriding them. Runs go through the Dagster instance in DAGSTER_HOME, so they appear in
the UI.
"""

from __future__ import annotations

import sys

import click

from tessera.cli import feeds, identity, marketing, predictions, privacy, recommendations, run, sources, web


@click.group("tessera", context_settings={"help_option_names": ["-h", "--help"],
                                          "max_content_width": 100})
@click.option("--config", type=click.Path(file_okay=False),
              help="configuration folder (default: $TESSERA_CONFIG or examples/demo)")
@click.option("--home", type=click.Path(file_okay=False),
              help="data folder (default: $TESSERA_HOME or var/demo)")
@click.option("--wait", type=click.FloatRange(min=0), metavar="SECONDS",
              help="wait at most this long for another Tessera process to release the "
                   "warehouse, then stop naming it (exit 75); default: wait until it is free")
@click.pass_context
def cli(ctx: click.Context, config: str | None, home: str | None, wait: float | None) -> None:
    """Tessera customer data platform."""
    ctx.obj = {"config": config, "home": home, "wait": wait}


for _module in (run, privacy, marketing, sources, feeds, identity, predictions, recommendations, web):
    for _command in _module.COMMANDS:
        cli.add_command(_command)


def main(argv: list[str] | None = None) -> int:
    """Run the command line and return its exit code (the console script exits with it).

    Tests call ``main([...])`` in process, so click runs with ``standalone_mode=False`` and
    its exceptions become a printed message and a code here instead of ``sys.exit``.
    """
    try:
        rv = cli.main(args=argv, prog_name="tessera", standalone_mode=False)
    except SystemExit as exc:  # a wait for the warehouse stopped by a signal or --wait
        if isinstance(exc.code, int):
            return exc.code
        raise
    except click.exceptions.Abort as exc:
        # click turns an EOFError or KeyboardInterrupt into Abort: name which (no message,
        # it could carry data), so an interrupted run says why
        cause = type(exc.__context__).__name__ if exc.__context__ else "interrupted"
        click.echo(f"Aborted! ({cause})", err=True)
        return 1
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except Exception as exc:  # a clear one-line error, no traceback with data in it
        from tessera.yamlfile import ConfigError

        if isinstance(exc, ConfigError):
            print(f"configuration error: {exc}", file=sys.stderr)
            return 2
        raise
    return rv if isinstance(rv, int) else 0
