"""Segment rules: a small, reviewable YAML language compiled to one set-based SQL query.

A rule is a tree of ``all`` / ``any`` / ``none`` groups whose leaves are one of:

* ``{field, op, value}``: a condition on a column of the *rule base* (the contact card,
  its extended properties, the day's RFM scores, scores, stage and tags);
* ``{event: TYPE, where: [...], within_days: N, count|first|last|days_since_last: {op, value}}``:
  behaviour, i.e. events of a type (optionally filtered on their JSON properties) in a
  window, aggregated per contact (default: at least one);
* ``{purchase: {channel, channel_macro, channel_micro, offer, with_offer, product, product_line,
  product_line_micro}, within_days: N, count|total|first|last|days_since_last: {op, value}}``:
  sales, i.e. orders matching filters (product lines bought, offers used, store) in a window;
* ``{segment: NAME}``: membership of another segment on the same day.

Field names, event property names and segment names are checked when the configuration
loads (so identifiers can be quoted into SQL safely); values are always bound as
parameters, never formatted into the SQL. Every leaf compiles to a column predicate or a
``customer_id [NOT] IN (SELECT ... GROUP BY customer_id HAVING ...)`` semi-join, so a
whole segment is one set-based query.
"""

from __future__ import annotations

import datetime as dt
import operator
import re
from typing import Any

from tessera.yamlfile import ConfigError, LoadedYaml

COMPARISON = {"=": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}


OPERATORS = set(COMPARISON) | {
    "in", "not in", "between", "contains", "starts with", "is empty", "is not empty",
    "within last days", "before", "after",
}


_NUMERIC = {"integer", "decimal"}


_TEMPORAL = {"date", "timestamp"}


_LIST_OPS = {"contains", "in", "not in", "is empty", "is not empty"}


_PROPERTY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


_PY_CMP = {"=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
           ">": operator.gt, ">=": operator.ge}


# Aggregates of the behaviour and sales leaves, and the type of what they produce.
EVENT_AGGREGATES = {"count": "integer", "first": "timestamp", "last": "timestamp",
                    "days_since_last": "integer"}


PURCHASE_AGGREGATES = {"count": "integer", "total": "decimal", "first": "date", "last": "date",
                       "days_since_last": "integer"}


PURCHASE_FILTERS = {"channel", "channel_macro", "channel_micro", "offer", "with_offer", "product",
                    "product_line", "product_line_micro"}


def _fail(src: LoadedYaml | None, loc: tuple, msg: str) -> None:
    where = src.where(loc) if src is not None else ".".join(map(str, loc))
    raise ConfigError(f"{where}: {msg}")


def _check_value(ftype: str, value: Any, src, loc, op: str) -> None:
    if ftype == "boolean" and not isinstance(value, bool):
        _fail(src, loc, f"operator '{op}' on a yes/no field needs true or false, got {value!r}")
    if ftype in ("string", "list") and not isinstance(value, str):
        _fail(src, loc, f"operator '{op}' on a text field needs a text value, got {value!r}")
    if ftype in _NUMERIC and (isinstance(value, bool) or not isinstance(value, (int, float))):
        _fail(src, loc, f"operator '{op}' on a number needs a number, got {value!r}")
    if ftype in _TEMPORAL and not isinstance(value, (dt.date, str)):
        _fail(src, loc, f"operator '{op}' on a date needs a date (YYYY-MM-DD), got {value!r}")
    if ftype in _TEMPORAL and isinstance(value, str):
        try:
            dt.date.fromisoformat(value)
        except ValueError:
            _fail(src, loc, f"'{value}' is not a date (YYYY-MM-DD)")


def _validate_condition(ftype: str, what: str, cond: dict, src, loc) -> None:
    """Validate ``{op, value}`` against a value of type ``ftype`` (``what`` names it)."""
    op = cond.get("op")
    if op not in OPERATORS:
        _fail(src, loc + ("op",), f"unknown operator '{op}' (one of {sorted(OPERATORS)})")
    value = cond.get("value")
    vloc = loc + ("value",)
    if ftype == "list" and op not in _LIST_OPS:
        _fail(src, loc + ("op",), f"'{op}' does not apply to the list '{what}' (use one of {sorted(_LIST_OPS)})")
    if op in ("is empty", "is not empty"):
        if "value" in cond:
            _fail(src, vloc, f"'{op}' takes no value")
    elif op in ("in", "not in"):
        if not isinstance(value, list) or not value:
            _fail(src, vloc, f"'{op}' needs a non-empty list")
        for v in value:
            _check_value(ftype, v, src, vloc, op)
    elif op == "between":
        if not isinstance(value, list) or len(value) != 2:
            _fail(src, vloc, "'between' needs a list of two values")
        for v in value:
            _check_value(ftype, v, src, vloc, op)
    elif op == "within last days":
        if ftype not in _TEMPORAL:
            _fail(src, loc + ("op",), f"'{op}' needs a date field, '{what}' is {ftype}")
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            _fail(src, vloc, "'within last days' needs a whole number of days")
    elif op in ("before", "after"):
        if ftype not in _TEMPORAL:
            _fail(src, loc + ("op",), f"'{op}' needs a date field, '{what}' is {ftype}")
        _check_value(ftype, value, src, vloc, op)
    elif op in ("contains", "starts with"):
        if ftype not in ("string", "list") or not isinstance(value, str):
            _fail(src, vloc, f"'{op}' needs a text field and a text value")
        if ftype == "list" and op == "starts with":
            _fail(src, loc + ("op",), f"'{op}' does not apply to a list")
    else:
        if value is None:
            _fail(src, vloc, f"'{op}' needs a value")
        _check_value(ftype, value, src, vloc, op)


def _check_keys(node: dict, allowed: set, src, loc) -> None:
    unknown = set(node) - allowed
    if unknown:
        _fail(src, loc + (sorted(unknown)[0],), "unknown key")


def _validate_window(node: dict, src, loc) -> None:
    if "within_days" in node:
        v = node["within_days"]
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            _fail(src, loc + ("within_days",), "'within_days' needs a whole number of days")


def _validate_aggregate(node: dict, aggregates: dict, src, loc, what: str) -> None:
    present = [k for k in aggregates if k in node]
    if len(present) > 1:
        _fail(src, loc + (present[1],), f"one aggregate per condition (found {present})")
    for k in present:
        cond = node[k]
        if not isinstance(cond, dict):
            _fail(src, loc + (k,), f"'{k}' needs {{op, value}}")
        _check_keys(cond, {"op", "value"}, src, loc + (k,))
        _validate_condition(aggregates[k], f"{what}.{k}", cond, src, loc + (k,))


def _validate_event(rule: dict, src, loc) -> None:
    _check_keys(rule, {"event", "where", "within_days", *EVENT_AGGREGATES}, src, loc)
    types = rule["event"] if isinstance(rule["event"], list) else [rule["event"]]
    if not types or not all(isinstance(t, str) and t for t in types):
        _fail(src, loc + ("event",), "'event' needs an event type or a list of them")
    where = rule.get("where", [])
    if not isinstance(where, list):
        _fail(src, loc + ("where",), "'where' needs a list of {property, op, value}")
    for i, cond in enumerate(where):
        ploc = loc + ("where", i)
        if not isinstance(cond, dict):
            _fail(src, ploc, "a property condition is {property, op, value}")
        _check_keys(cond, {"property", "op", "value"}, src, ploc)
        prop = cond.get("property")
        if not isinstance(prop, str) or not _PROPERTY.match(prop):
            _fail(src, ploc + ("property",), f"'{prop}' is not a property name (letters, digits, _)")
        if cond.get("op") in ("within last days", "before", "after"):
            _fail(src, ploc + ("op",), f"'{cond.get('op')}' does not apply to an event property")
        value = cond.get("value")
        sample = value[0] if isinstance(value, list) and value else value
        ptype = "decimal" if isinstance(sample, (int, float)) and not isinstance(sample, bool) else "string"
        _validate_condition(ptype, f"property {prop}", cond, src, ploc)
    _validate_window(rule, src, loc)
    _validate_aggregate(rule, EVENT_AGGREGATES, src, loc, "event")


def _validate_purchase(rule: dict, src, loc, entities: set | None, channels: set | None) -> None:
    _check_keys(rule, {"purchase", "within_days", *PURCHASE_AGGREGATES}, src, loc)
    if entities is not None and "order" not in entities:
        _fail(src, loc + ("purchase",), "a purchase condition needs an order source")
    filters = rule["purchase"] if rule["purchase"] is not None else {}
    if not isinstance(filters, dict):
        _fail(src, loc + ("purchase",), "'purchase' needs a mapping of filters (or {})")
    _check_keys(filters, PURCHASE_FILTERS, src, loc + ("purchase",))
    for k, v in filters.items():
        floc = loc + ("purchase", k)
        if k == "with_offer":
            if not isinstance(v, bool):
                _fail(src, floc, "'with_offer' needs true or false")
            continue
        if k == "channel":
            names = v if isinstance(v, list) else [v]
            if not names or not all(isinstance(x, str) for x in names):
                _fail(src, floc, "'channel' needs a sales-channel name or a list of them")
            for x in names:
                if channels is not None and x not in channels:
                    _fail(src, floc, f"unknown sales channel '{x}' (declare it under "
                                     f"sales_channels in tessera.yaml; known: {sorted(channels)})")
            continue
        values = v if isinstance(v, list) else [v]
        if not values or not all(isinstance(x, (str, int)) and not isinstance(x, bool) for x in values):
            _fail(src, floc, f"'{k}' needs an id or a non-empty list of ids")
        if k.startswith("product") and entities is not None and not {"order_line", "product"} <= entities:
            _fail(src, floc, f"'{k}' needs order-line and product sources")
    _validate_window(rule, src, loc)
    _validate_aggregate(rule, PURCHASE_AGGREGATES, src, loc, "purchase")


def validate_rule(rule: Any, catalogue: dict[str, str], src: LoadedYaml | None = None,
                  loc: tuple = ("rule",), *, segments: set[str] | None = None,
                  entities: set[str] | None = None, channels: set[str] | None = None) -> None:
    """Check a rule tree; raise ConfigError naming file, line and key.

    ``segments``: names a rule may reference (None: segment references are refused);
    ``entities``: the deployment's source entities (None: not checked).
    """
    if not isinstance(rule, dict):
        _fail(src, loc, "a rule is a mapping with 'all', 'any', 'none', 'field', 'event', "
                        "'purchase' or 'segment'")
    groups = [k for k in ("all", "any", "none") if k in rule]
    if groups:
        if len(rule) != 1:
            _fail(src, loc, "a group has exactly one key: 'all', 'any' or 'none'")
        items = rule[groups[0]]
        if not isinstance(items, list) or not items:
            _fail(src, loc + (groups[0],), "a group needs a non-empty list of conditions")
        for i, item in enumerate(items):
            validate_rule(item, catalogue, src, loc + (groups[0], i), segments=segments,
                          entities=entities, channels=channels)
        return
    if "event" in rule:
        if entities is not None and "event" not in entities:
            _fail(src, loc + ("event",), "an event condition needs an event source")
        return _validate_event(rule, src, loc)
    if "purchase" in rule:
        return _validate_purchase(rule, src, loc, entities, channels)
    if "segment" in rule:
        _check_keys(rule, {"segment"}, src, loc)
        if segments is None:
            _fail(src, loc + ("segment",), "segment references are not allowed here")
        if rule["segment"] not in segments:
            _fail(src, loc + ("segment",), f"unknown segment '{rule['segment']}'")
        return
    _check_keys(rule, {"field", "op", "value"}, src, loc)
    field = rule.get("field")
    if field not in catalogue:
        _fail(src, loc + ("field",), f"unknown field '{field}'")
    _validate_condition(catalogue[field], field, rule, src, loc)


def referenced_segments(rule: Any) -> list[str]:
    """Segment names a rule references, in order of appearance."""
    out: list[str] = []
    if isinstance(rule, dict):
        if "segment" in rule and isinstance(rule["segment"], str):
            out.append(rule["segment"])
        for g in ("all", "any", "none"):
            for item in rule.get(g, []) or []:
                out.extend(referenced_segments(item))
    return out


def referenced_fields(rule: Any) -> list[str]:
    out: list[str] = []
    if isinstance(rule, dict):
        if "field" in rule:
            out.append(rule["field"])
        for g in ("all", "any", "none"):
            for item in rule.get(g, []) or []:
                out.extend(referenced_fields(item))
    return out


def segment_order(segments) -> list:
    """Segments sorted so that a segment comes after those it references; ValueError on a cycle
    (the message names the cycle)."""
    by_name = {s.name: s for s in segments}
    state: dict[str, int] = {}
    out: list = []

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = path[path.index(name):] + [name]
            raise ValueError(" -> ".join(cycle))
        state[name] = 1
        for ref in referenced_segments(by_name[name].rule):
            if ref in by_name:
                visit(ref, path + [ref])
        state[name] = 2
        out.append(by_name[name])

    for s in segments:
        visit(s.name, [s.name])
    return out


def _cast(ftype: str) -> str:
    # Numbers compare as DOUBLE: `order_number < 4.5` must not round 4.5 to an integer.
    return {"integer": "DOUBLE", "decimal": "DOUBLE", "date": "DATE", "timestamp": "TIMESTAMP",
            "boolean": "BOOLEAN"}.get(ftype, "VARCHAR")


def _predicate(col: str, ftype: str, cond: dict, params: list, as_of: dt.date) -> str:
    """SQL for ``col <op> value``; appends the bound values to ``params`` in textual order."""
    op, value = cond["op"], cond.get("value")
    cast = _cast(ftype)
    if ftype == "list":
        if op == "contains":
            params.append(value)
            return f"list_contains({col}, CAST(? AS VARCHAR))"
        if op in ("in", "not in"):
            params.append(list(value))
            neg = "NOT " if op == "not in" else ""
            return f"({neg}list_has_any(coalesce({col}, []::VARCHAR[]), CAST(? AS VARCHAR[])))"
        if op == "is empty":
            return f"({col} IS NULL OR len({col}) = 0)"
        return f"({col} IS NOT NULL AND len({col}) > 0)"
    if op in COMPARISON:
        params.append(value)
        return f"({col} {COMPARISON[op]} CAST(? AS {cast}))"
    if op in ("in", "not in"):
        params.extend(value)
        marks = ", ".join(f"CAST(? AS {cast})" for _ in value)
        neg = "NOT " if op == "not in" else ""
        return f"({col} {neg}IN ({marks}))"
    if op == "between":
        params.extend(value)
        return f"({col} BETWEEN CAST(? AS {cast}) AND CAST(? AS {cast}))"
    if op == "contains":
        params.append(value)
        return f"contains(lower({col}), lower(?))"
    if op == "starts with":
        params.append(value)
        return f"starts_with(lower({col}), lower(?))"
    if op == "is empty":
        return f"({col} IS NULL OR CAST({col} AS VARCHAR) = '')"
    if op == "is not empty":
        return f"({col} IS NOT NULL AND CAST({col} AS VARCHAR) <> '')"
    if op == "within last days":
        params.extend([as_of, value, as_of])
        return (f"(CAST({col} AS DATE) > CAST(? AS DATE) - CAST(? AS INTEGER) "
                f"AND CAST({col} AS DATE) <= CAST(? AS DATE))")
    if op in ("before", "after"):
        params.append(value)
        return f"(CAST({col} AS DATE) {'<' if op == 'before' else '>'} CAST(? AS DATE))"
    raise ValueError(op)  # pragma: no cover - validated at load


def _zero_matches(cond: dict) -> bool:
    """Does a count or total of 0 satisfy the condition? (Then contacts without any matching
    event or order are members, and the leaf compiles to a NOT IN over the others.)"""
    op, v = cond["op"], cond.get("value")
    if op in _PY_CMP:
        return _PY_CMP[op](0, v)
    if op == "in":
        return 0 in v
    if op == "not in":
        return 0 not in v
    if op == "between":
        return v[0] <= 0 <= v[1]
    return False


def _aggregate_leaf(source_sql: str, aggregates: dict, exprs: dict, node: dict, params: list,
                    src_params: list, as_of: dt.date) -> str:
    """``customer_id [NOT] IN (SELECT customer_id FROM source GROUP BY 1 HAVING agg)``."""
    agg = next((k for k in aggregates if k in node), None)
    if agg is None:
        params.extend(src_params)
        return f"(customer_id IN (SELECT customer_id FROM ({source_sql}) GROUP BY customer_id))"
    cond = node[agg]
    having_params: list = []
    having = _predicate(exprs[agg], aggregates[agg], cond, having_params, as_of)
    params.extend(src_params)
    params.extend(having_params)
    if agg in ("count", "total") and _zero_matches(cond):
        return (f"(customer_id NOT IN (SELECT customer_id FROM ({source_sql}) GROUP BY customer_id "
                f"HAVING NOT coalesce({having}, FALSE)))")
    return f"(customer_id IN (SELECT customer_id FROM ({source_sql}) GROUP BY customer_id HAVING {having}))"


def _window(col: str, node: dict, as_of: dt.date, params: list) -> str:
    # Never anything after the day: a backfill sees what the original run saw.
    sql = f" AND CAST({col} AS DATE) <= CAST(? AS DATE)"
    params.append(as_of)
    if "within_days" in node:
        sql += f" AND CAST({col} AS DATE) > CAST(? AS DATE) - CAST(? AS INTEGER)"
        params.extend([as_of, node["within_days"]])
    return sql


def _event_leaf(node: dict, params: list, as_of: dt.date) -> str:
    src: list = []
    types = node["event"] if isinstance(node["event"], list) else [node["event"]]
    sql = ("SELECT customer_id, occurred_at FROM core.events WHERE customer_id IS NOT NULL "
           f"AND event_type IN ({', '.join('?' for _ in types)})")
    src.extend(types)
    sql += _window("occurred_at", node, as_of, src)
    for cond in node.get("where", []):
        value = cond.get("value")
        sample = value[0] if isinstance(value, list) and value else value
        numeric = isinstance(sample, (int, float)) and not isinstance(sample, bool)
        src.append("$." + cond["property"])
        expr = "json_extract_string(properties, ?)"
        if numeric:
            expr = f"TRY_CAST({expr} AS DOUBLE)"
        sql += " AND " + _predicate(expr, "decimal" if numeric else "string", cond, src, as_of)
    exprs = {"count": "count(*)", "first": "min(occurred_at)", "last": "max(occurred_at)",
             "days_since_last": f"date_diff('day', CAST(max(occurred_at) AS DATE), DATE '{as_of.isoformat()}')"}
    return _aggregate_leaf(sql, EVENT_AGGREGATES, exprs, node, params, src, as_of)


def _ids(v) -> list[str]:
    return [str(x) for x in (v if isinstance(v, list) else [v])]


def _purchase_leaf(node: dict, params: list, as_of: dt.date, channels: dict) -> str:
    src: list = []
    f = node["purchase"] or {}
    sql = "SELECT customer_id, order_date, amount FROM core.orders o WHERE customer_id IS NOT NULL"
    sql += _window("order_date", node, as_of, src)
    for key, col in (("channel_macro", "channel_macro"), ("channel_micro", "channel_micro"),
                     ("offer", "offer_id")):
        if key in f:
            ids = _ids(f[key])
            sql += f" AND CAST(o.{col} AS VARCHAR) IN ({', '.join('?' for _ in ids)})"
            src.extend(ids)
    if "channel" in f:
        # named sales channels (tessera.yaml sales_channels): a store is a micro under a macro
        ors = []
        for name in (f["channel"] if isinstance(f["channel"], list) else [f["channel"]]):
            ch = channels[name]
            if ch.micro is None:
                ors.append("CAST(o.channel_macro AS VARCHAR) = ?")
                src.append(str(ch.macro))
            else:
                ors.append("(CAST(o.channel_macro AS VARCHAR) = ? AND CAST(o.channel_micro AS VARCHAR) = ?)")
                src.extend([str(ch.macro), str(ch.micro)])
        sql += " AND (" + " OR ".join(ors) + ")"
    if "with_offer" in f:
        has = "(o.offer_id IS NOT NULL AND CAST(o.offer_id AS VARCHAR) <> '')"
        sql += f" AND {has}" if f["with_offer"] else f" AND NOT {has}"
    line_filters = [(k, c) for k, c in (("product", "p.source_record_id"),
                                        ("product_line", "p.line_macro_id"),
                                        ("product_line_micro", "p.line_micro_id")) if k in f]
    if line_filters:
        sql += (" AND o.order_id IN (SELECT l.order_id FROM staging.order_lines l "
                "JOIN staging.products p ON p.source_record_id = l.product_id WHERE TRUE")
        for k, c in line_filters:
            ids = _ids(f[k])
            sql += f" AND CAST({c} AS VARCHAR) IN ({', '.join('?' for _ in ids)})"
            src.extend(ids)
        sql += ")"
    exprs = {"count": "count(*)", "total": "coalesce(sum(amount), 0)", "first": "min(order_date)",
             "last": "max(order_date)",
             "days_since_last": f"date_diff('day', max(order_date), DATE '{as_of.isoformat()}')"}
    return _aggregate_leaf(sql, PURCHASE_AGGREGATES, exprs, node, params, src, as_of)


def compile_rule(rule: dict, catalogue: dict[str, str], as_of: dt.date,
                 channels: dict | None = None) -> tuple[str, list]:
    """Return a boolean SQL expression over the rule base's columns, and its parameters.

    The expression refers to the base relation's columns unqualified (``customer_id``
    included), so it is used as ``SELECT ... FROM (base) WHERE <expression>``.
    """
    params: list = []

    def walk(node: dict) -> str:
        for group, joiner in (("all", " AND "), ("any", " OR ")):
            if group in node:
                return "(" + joiner.join(walk(item) for item in node[group]) + ")"
        if "none" in node:
            # NULL (unknown) counts as "not matching", so `none` is the complement of `any`.
            return "(NOT (" + " OR ".join(f"coalesce({walk(i)}, FALSE)" for i in node["none"]) + "))"
        if "event" in node:
            return _event_leaf(node, params, as_of)
        if "purchase" in node:
            return _purchase_leaf(node, params, as_of, channels or {})
        if "segment" in node:
            params.extend([node["segment"], as_of])
            return ("(customer_id IN (SELECT customer_id FROM marketing.segment_members "
                    "WHERE segment = ? AND as_of_date = ?))")
        field = node["field"]
        # checked against the catalogue: a safe identifier
        return _predicate(f'"{field}"', catalogue[field], node, params, as_of)

    return walk(rule), params
