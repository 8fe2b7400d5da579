"""Marketing maintenance: segment dry-run / add / remove, score rescore."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import click

from tessera.cli.common import DATE, MultiValueOption, warehouse_and_deployment


def _segment_def(deployment, name: str):
    from tessera.yamlfile import ConfigError

    for seg in deployment.segments:
        if seg.name == name:
            return seg
    raise ConfigError(f"unknown segment '{name}' (one of {[s.name for s in deployment.segments]})")


def _read_ids(ids: tuple[int, ...], file: str | None) -> list[int]:
    out = list(ids)
    if file:
        # one customer id per line (a header line that is not a number is skipped)
        for line in Path(file).read_text(encoding="utf-8").splitlines():
            cell = line.split(",")[0].strip()
            if cell.isdigit():
                out.append(int(cell))
    return out


@click.group("segment", short_help="Dry-run a segment, or add / remove members.")
def segment() -> None:
    """Dry-run a segment rule, or add / remove members explicitly."""


@segment.command("dry-run")
@click.argument("name")
@click.option("--date", "day", type=DATE, help="business day (default: the latest built day)")
@click.option("--sample", type=int, default=10, show_default=True,
              help="how many ids to show: of the members, of who would enter, of who would leave")
@click.pass_context
def dry_run_cmd(ctx: click.Context, name: str, day: dt.date | None, sample: int) -> int:
    """Size, sample ids, and who would enter / leave vs the stored membership.

    NAME is the segment's name in segments.yaml. Writes nothing.
    """
    from tessera.marketing.segments import dry_run

    con, deployment, _paths = warehouse_and_deployment(ctx)
    try:
        seg = _segment_def(deployment, name)
        if day is None:
            day = (con.execute("SELECT max(as_of_date) FROM ops.segment_runs WHERE segment = ?",
                               [seg.name]).fetchone()[0]
                   or dt.date.today() - dt.timedelta(days=1))
        r = dry_run(con, deployment, seg, day, sample=sample)
    finally:
        con.close()
    print(f"segment {r['segment']} ({r['kind']}) as of {r['as_of']}: {r['size']} members "
          "with the rule as configured")
    print(f"  sample ids: {', '.join(map(str, r['sample_ids'])) or '(none)'}")
    if r["stored_day"] is None:
        print("  no stored membership to compare with (never built)")
    else:
        print(f"  stored membership of {r['stored_day']}: {r['stored_size']} members")
        print(f"  would enter: {r['entering']}   would leave: {r['leaving']}")
        for label, n, ids in (("entering", r["entering"], r["entering_ids"]),
                              ("leaving", r["leaving"], r["leaving_ids"])):
            more = f" (+{n - len(ids)} more)" if n > len(ids) else ""
            print(f"  {label} ids: {', '.join(map(str, ids)) or '(none)'}{more}")
    return 0


def _override(ctx: click.Context, name: str, ids: tuple[int, ...], file: str | None,
              day: dt.date | None, action: str) -> int:
    from tessera.marketing.segments import add_overrides

    con, deployment, _paths = warehouse_and_deployment(ctx)
    try:
        seg = _segment_def(deployment, name)
        chosen = _read_ids(ids, file)
        if not chosen:
            print("no customer ids given (--ids or --file)", file=sys.stderr)
            return 2
        day = day or dt.date.today()
        n = add_overrides(con, seg.name, chosen, action, day, origin="file" if file else "cli")
    finally:
        con.close()
    print(f"{n} customer ids recorded as '{action}' for segment {seg.name} from {day}; "
          "they apply when the segment is next built for that day or later")
    return 0


def _override_command(verb: str, action: str, text: str) -> click.Command:
    @click.command(verb, help=f"{text}\n\nNAME is the segment's name in segments.yaml.")
    @click.argument("name")
    @click.option("--ids", type=int, cls=MultiValueOption,
                  help="customer ids, space-separated after one --ids (repeatable)")
    @click.option("--file", type=click.Path(dir_okay=False),
                  help="a file with one customer id per line")
    @click.option("--date", "day", type=DATE, help="effective from this day (default: today)")
    @click.pass_context
    def command(ctx: click.Context, name: str, ids: tuple[int, ...], file: str | None,
                day: dt.date | None) -> int:
        return _override(ctx, name, ids, file, day, action)

    return command


segment.add_command(_override_command(
    "add", "include", "Include customer ids (static or dynamic segment)."))
segment.add_command(_override_command(
    "remove", "exclude", "Exclude customer ids (static or dynamic segment)."))


@click.group("score")
def score() -> None:
    """Scoring maintenance."""


@score.command("rescore")
@click.option("--from", "date_from", type=DATE, required=True, help="first day to recompute")
@click.option("--to", "date_to", type=DATE, required=True, help="last day to recompute")
@click.pass_context
def rescore_cmd(ctx: click.Context, date_from: dt.date, date_to: dt.date) -> int:
    """Recompute scores and threshold actions from history (after a scoring rule change)."""
    from tessera.marketing.scoring import rescore

    con, deployment, _paths = warehouse_and_deployment(ctx)
    try:
        r = rescore(con, deployment, date_from, date_to)
    finally:
        con.close()
    print(f"rescored {r['days']} days; {r['actions']} threshold actions recorded")
    return 0


COMMANDS = [segment, score]
