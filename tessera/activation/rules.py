"""Profile conditions evaluated once per day and shared by every step that reads them.

Why: a profile condition is a segment rule, and its rule base (the card with the day's
tags, scores, RFM) is the costliest relation of a day. Ten automations and five
journeys built from one template ask the same few rules many times (the Milan
journey's ``top spender and female`` once per journey and per branch); inside a day's
evaluation each distinct rule is computed once into a temporary table of members, and
every step reads that. Anything that changes what a rule sees (a tag applied, a
property set) drops the tables, so a rule read afterwards sees the change (a tag is
visible in conditions from the same run on).
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

from tessera.engine import Engine, SqlStep, as_engine


class RuleSets:
    def __init__(self, engine: Engine):
        self.engine = as_engine(engine)
        self.tables: dict[tuple, str] = {}
        self.made = 0

    def table(self, sql: str, params: list) -> str:
        key = (sql, repr(params))
        name = self.tables.get(key)
        if name is None:
            name = f"_act_rule_{self.made}"
            self.made += 1
            self.engine.run(SqlStep("activation.rule_members",
                                    f"CREATE OR REPLACE TEMP TABLE {name} AS {sql}", params))
            self.tables[key] = name
        return name

    def clear(self) -> None:
        for name in self.tables.values():
            self.engine.run(SqlStep("activation.rule_drop", f"DROP TABLE IF EXISTS {name}"))
        self.tables.clear()


_CURRENT: contextvars.ContextVar[RuleSets | None] = contextvars.ContextVar("activation_rules", default=None)


@contextlib.contextmanager
def shared_rules(engine: Engine) -> Iterator[RuleSets]:
    """Within the block, :func:`current` gives the day's shared rule tables."""
    rules = RuleSets(engine)
    token = _CURRENT.set(rules)
    try:
        yield rules
    finally:
        _CURRENT.reset(token)
        with contextlib.suppress(Exception):    # an aborted transaction drops them anyway
            rules.clear()


def current() -> RuleSets | None:
    return _CURRENT.get()


def rules_changed() -> None:
    """A tag or a property was written: the members computed so far may be stale."""
    rules = _CURRENT.get()
    if rules is not None:
        rules.clear()
