"""The command line's surface: every command and option documented, bad input answered in
one line (no traceback), destructive commands never run unattended without --yes, and
the light commands start without importing Dagster."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from tessera.cli import main
from tessera.cli.app import cli
from tessera.cli.common import MultiValueOption

PROJECT_ROOT = Path(__file__).resolve().parents[2]

COMMANDS = {"generate", "run", "rebuild", "demo", "summary", "forget", "bulk-edit", "purge",
            "unsuppress", "export-person", "stop-monitoring", "init-home", "template", "serve-push",
            "segment", "score", "potential-unsubscribes", "runs", "identity", "predict", "web", "search", "card", "recommend-csv", "feeds"}


def walk(group: click.Group, path: tuple[str, ...] = ()):
    """Every command of the tree, with the words that reach it."""
    for name, command in sorted(group.commands.items()):
        yield path + (name,), command
        if isinstance(command, click.Group):
            yield from walk(command, path + (name,))


ALL = list(walk(cli))


@pytest.fixture()
def isolated(tmp_path, monkeypatch):
    """A home with nothing in it: a command that reached the warehouse would create it."""
    monkeypatch.setenv("TESSERA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home" / "dagster_home"))
    monkeypatch.setenv("TESSERA_CONFIG", str(PROJECT_ROOT / "examples" / "demo"))
    for var in ("TESSERA_WAREHOUSE", "TESSERA_LANDING", "TESSERA_FEEDS"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path / "home"


def test_help_lists_every_command(capsys):
    assert set(cli.commands) == COMMANDS
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert f"  {name}" in out


@pytest.mark.parametrize("path", [p for p, _ in ALL], ids=" ".join)
def test_every_command_help_works(path, capsys):
    assert main([*path, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Usage: tessera {' '.join(path)}")


@pytest.mark.parametrize("path,command", [(("tessera",), cli)] + ALL,
                         ids=[" ".join(p) for p in [("tessera",)] + [p for p, _ in ALL]])
def test_every_option_and_argument_is_documented(path, command):
    assert (command.help or "").strip(), f"{' '.join(path)} has no help text"
    ctx = click.Context(command, info_name=" ".join(path))
    text = command.get_help(ctx)
    for param in command.params:
        if isinstance(param, click.Option):
            assert (param.help or "").strip(), f"{' '.join(path)} {param.opts[0]} has no help"
        else:  # click arguments carry no help: the command's text must explain each one
            name = param.human_readable_name
            assert text.count(name) >= 2, f"{' '.join(path)}: {name} is not explained"


@pytest.mark.parametrize("argv,option", [
    (["run", "--date", "2026-13-01"], "--date"),
    (["rebuild", "--yes", "--date", "01/11/2026"], "--date"),
    (["segment", "dry-run", "x", "--date", "yesterday"], "--date"),
    (["score", "rescore", "--from", "2026-11-01", "--to", "2026-11-31"], "--to"),
    (["generate", "--as-of", "20261101"], "--as-of"),
])
def test_a_bad_date_is_a_one_line_usage_error(argv, option, isolated, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    errors = [line for line in captured.err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1
    assert option in errors[0] and "YYYY-MM-DD" in errors[0]
    assert not isolated.exists()  # refused before anything was opened


def test_bad_choices_and_missing_options_are_usage_errors(capsys):
    assert main(["bulk-edit", "explode"]) == 2
    assert main(["export-person", "--customer-id", "1"]) == 2  # --out is required
    assert main(["nosuchcommand"]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_a_configuration_error_is_one_message_not_a_traceback(tmp_path, capsys):
    missing = tmp_path / "no-such-config"
    rc = main(["--config", str(missing), "template", "b2c_users", "--out",
               str(tmp_path / "t.xlsx")])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("configuration error:") and "Traceback" not in err


@pytest.mark.parametrize("argv", [
    ["forget", "--email", "someone@example.invalid"],
    ["forget", "--customer-id", "7"],
    ["purge", "--grace-hours", "0"],
    ["bulk-edit", "delete", "--customer-id", "7"],
    ["rebuild"],
])
def test_destructive_commands_refuse_without_yes_when_not_interactive(argv, isolated, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--yes" in err and "refused" in err
    assert "someone@example.invalid" not in err  # no personal data echoed
    assert not isolated.exists()  # the warehouse was never opened


def test_destructive_commands_ask_at_a_terminal(isolated, monkeypatch, capsys):
    import io

    monkeypatch.setattr("tessera.cli.common.interactive", lambda: True)
    monkeypatch.setattr(sys, "stdin", io.StringIO("n\n"))
    assert main(["purge"]) == 1  # answered no
    assert "Go on?" in capsys.readouterr().err
    assert not isolated.exists()


def test_ids_take_several_values_after_one_flag():
    @click.command()
    @click.argument("name")
    @click.option("--ids", type=int, cls=MultiValueOption, help="ids")
    @click.option("--date", help="a day")
    def probe(name, ids, date):
        click.echo(json.dumps([name, list(ids), date]))

    runner = CliRunner()
    out = runner.invoke(probe, ["seg", "--ids", "1", "2", "3", "--date", "d", "--ids", "4"])
    assert json.loads(out.output) == ["seg", [1, 2, 3, 4], "d"]
    assert runner.invoke(probe, ["seg", "--ids", "1", "x"]).exit_code == 2


def _warehouse_for_summary(home: Path) -> None:
    from tessera.engine.warehouse import connect, ensure_warehouse

    home.mkdir(parents=True)
    con = connect(home / "warehouse.duckdb")
    try:
        ensure_warehouse(con)
        con.execute("CREATE TABLE core.customers (customer_id BIGINT)")
        con.execute("CREATE TABLE core.customer_sources (customer_id BIGINT)")
        con.execute("CREATE TABLE exports.feed_deliveries (feed VARCHAR, as_of_date DATE, "
                    "file VARCHAR, rows BIGINT, written_at TIMESTAMP)")
    finally:
        con.close()


def test_help_and_summary_do_not_import_dagster(tmp_path):
    home = tmp_path / "home"
    _warehouse_for_summary(home)
    code = (
        "import sys\n"
        "from tessera.cli import main\n"
        "assert main(['--help']) == 0\n"
        "assert 'dagster' not in sys.modules, 'dagster imported by --help'\n"
        "assert main(['--home', sys.argv[1], 'summary']) == 0\n"
        "assert 'dagster' not in sys.modules, 'dagster imported by summary'\n"
        "assert 'polars' not in sys.modules, 'polars imported by summary'\n"
    )
    env = {k: v for k, v in __import__("os").environ.items()
           if k not in ("TESSERA_WAREHOUSE", "DAGSTER_HOME", "TESSERA_HOME")}
    proc = subprocess.run([sys.executable, "-c", code, str(home)], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Tessera daily run summary" in proc.stdout


def test_summary_of_a_day_lists_that_days_feeds_only(tmp_path, capsys):
    import datetime as dt

    from tessera.cli import main
    from tessera.engine import DuckDBEngine
    from tessera.engine.warehouse import connect
    from tessera.history import record_day

    home = tmp_path / "home"
    _warehouse_for_summary(home)
    con = connect(home / "warehouse.duckdb")
    try:
        for i, day in enumerate((dt.date(2026, 11, 1), dt.date(2026, 11, 2))):
            con.execute("INSERT INTO core.customers VALUES (?)", [10 + i])
            con.execute("INSERT INTO exports.feed_deliveries VALUES (?, ?, ?, ?, now())",
                        [f"feed_day{i + 1}", day, f"f{i}.csv", 5 + i])
            record_day(DuckDBEngine(con), day, f"run-{i}", dt.datetime(2026, 11, 3 + i))
    finally:
        con.close()
    assert main(["--home", str(home), "summary", "--date", "2026-11-02"]) == 0
    out = capsys.readouterr().out
    assert "day 2026-11-02" in out
    assert "new 1, updated 0, merged 0, split 0, erased 0" in out
    assert "feed_day2 2026-11-02: 6 rows" in out and "feed_day1" not in out
