"""Identity: why two records are, or are not, one customer."""

from __future__ import annotations

import json
import sys

import click

from tessera.cli.common import warehouse_and_deployment


def _ref(value: str) -> tuple[str, str]:
    source, sep, rid = value.partition(":")
    if not sep or not source or not rid:
        raise click.BadParameter(f"expected SOURCE:RECORD_ID, got '{value}'")
    return source, rid


@click.group("identity", short_help="Explain identity decisions.")
def identity() -> None:
    """Explain identity decisions (read-only)."""


@identity.command("explain")
@click.argument("record_a", metavar="SOURCE:ID")
@click.argument("record_b", metavar="SOURCE:ID")
@click.option("--json", "as_json", is_flag=True, help="print the explanation as JSON")
@click.pass_context
def explain_cmd(ctx: click.Context, record_a: str, record_b: str, as_json: bool) -> int:
    """Why two source records are, or are not, one customer.

    Prints each comparison's level, the two normalised values and the weight in bits, as
    the last run's trained model scores them, the total beside the threshold, and what
    the run did (each record's customer, the direct link and its rule). Writes nothing.
    The values are personal data: the output is for the analyst who asked.
    """
    from tessera.identity.explain import ExplainError, explain_pair

    a, b = _ref(record_a), _ref(record_b)
    con, _deployment, _paths = warehouse_and_deployment(ctx)
    try:
        r = explain_pair(con, a, b)
    except ExplainError as exc:
        print(f"identity explain: {exc}", file=sys.stderr)
        return 2
    finally:
        con.close()
    if as_json:
        print(json.dumps(r, indent=2, default=str))
        return 0
    print(f"{'comparison':<16} {'level':<14} {'weight':>7}  {record_a}  |  {record_b}")
    for c in r["comparisons"]:
        w = "" if c["weight"] is None else f"{c['weight']:+.2f}"
        print(f"{c['comparison']:<16} {c['level']:<14} {w:>7}  {c['left'] or '-'}  |  {c['right'] or '-'}")
    print(f"{'street + place':<16} {'':<14} {r['place_weight']:+7.2f}")
    if r["swapped_names"]:
        print("first and last name given the other way round (a penalty is taken off)")
    verdict = "would link" if r["would_match"] else "would not link"
    print(f"\nscore {r['score']:+.2f} bits, threshold {r['threshold']:.2f}, "
          f"{'corroborated' if r['corroborated'] else 'not corroborated (names and place only)'}: {verdict}")
    cust = r["customers"]
    same = len(set(cust.values())) == 1 and None not in cust.values()
    print("customers: " + ", ".join(f"{k} -> {v}" for k, v in cust.items())
          + (" (the same customer)" if same else ""))
    for link in r["direct_link"]:
        print(f"linked directly by {link['rule']}" + (f" at {link['weight']} bits" if link["weight"] else ""))
    return 0


COMMANDS = [identity]
