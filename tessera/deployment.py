"""A deployment's configuration: one folder of YAML files, validated when loaded.

The folder holds ``tessera.yaml`` (nodes, tree of priorities, extended properties,
identity settings), ``sources.yaml``, ``segments.yaml`` and ``feeds.yaml``. It is chosen
by ``TESSERA_CONFIG`` or the CLI's ``--config``; ``examples/demo`` is the demo's.

Every model forbids unknown keys: a typo such as ``delimter`` must fail at load time,
naming the file, the line and the key, instead of silently falling back to a default
and loading a file with the wrong dialect.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from tessera.contracts import entity_contracts
from tessera.marketing.rules import segment_order, validate_rule
from tessera.settings import PREDEFINED_MACROS, Deployment
from tessera.settings.activation import AutomationsFile, JourneysFile
from tessera.settings.model import (_FeedsFile, _MainFile, _ScoringFile, _SegmentsFile,
                                    _SourcesFile, _StagesFile, _LookupsFile, _RecommendationsFile)
from tessera.yamlfile import ConfigError, LoadedYaml, load_yaml
from tessera.vocabulary import (CARD_COMPANY_FIELDS, FEED_FIELDS, GOLDEN_FIELDS, STAGE_FIELDS,
                                field_catalogue, sendero_contact_fields)

def _validate(model, loaded: LoadedYaml):
    try:
        return model.model_validate(loaded.data)
    except ValidationError as exc:
        msgs = []
        for err in exc.errors()[:5]:
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            msgs.append(f"{loaded.where(err['loc'])}: {msg}")
        raise ConfigError("invalid configuration\n  " + "\n  ".join(msgs)) from None


# Base properties no deployment can switch off: what tells records apart and links them.
NEEDED = {"contact": ("email",), "company": ("legal_name", "country"),
          "company_user": ("company_name",), "potential_company": ("legal_name", "country"),
          "order": ("customer_ref", "order_date", "amount"), "product": ()}


def load_deployment(config_dir: str | Path) -> Deployment:
    """Load and cross-validate a configuration folder; raise ConfigError naming file and key."""
    config_dir = Path(config_dir).resolve()
    if not config_dir.is_dir():
        raise ConfigError(f"{config_dir}: configuration folder not found")
    main_y = load_yaml(config_dir / "tessera.yaml")
    sources_y = load_yaml(config_dir / "sources.yaml")
    main = _validate(_MainFile, main_y)
    sources = _validate(_SourcesFile, sources_y)
    seg_path = config_dir / "segments.yaml"
    feed_path = config_dir / "feeds.yaml"
    segments_y = load_yaml(seg_path) if seg_path.exists() else None
    feeds_y = load_yaml(feed_path) if feed_path.exists() else None
    segments = _validate(_SegmentsFile, segments_y) if segments_y else _SegmentsFile()
    feeds = _validate(_FeedsFile, feeds_y) if feeds_y else _FeedsFile()
    scoring_path = config_dir / "scoring.yaml"
    stages_path = config_dir / "stages.yaml"
    scoring_y = load_yaml(scoring_path) if scoring_path.exists() else None
    stages_y = load_yaml(stages_path) if stages_path.exists() else None
    scoring = _validate(_ScoringFile, scoring_y) if scoring_y else _ScoringFile()
    stages = _validate(_StagesFile, stages_y) if stages_y else _StagesFile()
    recs_path = config_dir / "recommendations.yaml"
    recs = _validate(_RecommendationsFile, load_yaml(recs_path)).recommendations \
        if recs_path.exists() else None
    auto_path, journeys_path = config_dir / "automations.yaml", config_dir / "journeys.yaml"
    auto_y = load_yaml(auto_path) if auto_path.exists() else None
    journeys_y = load_yaml(journeys_path) if journeys_path.exists() else None
    autos = _validate(AutomationsFile, auto_y) if auto_y else AutomationsFile()
    journeys = _validate(JourneysFile, journeys_y) if journeys_y else JourneysFile()

    node_names = {n.name for n in main.nodes}
    for i, name in enumerate(main.tree.priority):
        if name not in node_names:
            raise ConfigError(f"{main_y.where(('tree', 'priority', i))}: unknown node '{name}'")
    missing = node_names - set(main.tree.priority)
    if missing:
        raise ConfigError(
            f"{main_y.where(('tree', 'priority'))}: nodes missing from the priority: "
            f"{sorted(missing)}"
        )

    view_names: set[str] = set()
    for i, view in enumerate(main.tree.views):
        where_v = lambda *k: main_y.where(("tree", "views", i) + k)  # noqa: E731
        if view.name in view_names:
            raise ConfigError(f"{where_v('name')}: duplicate view '{view.name}'")
        view_names.add(view.name)
        under = view.nodes()
        for name in under:
            if name not in node_names:
                raise ConfigError(f"{where_v('children')}: unknown node '{name}'")
        if len(under) != len(set(under)):
            raise ConfigError(f"{where_v('children')}: a node appears twice in view '{view.name}'")
        if not under:
            raise ConfigError(f"{where_v('children')}: view '{view.name}' has no node")

    contracts = entity_contracts()
    ext_by_entity = {e: {p.name for p in props} for e, props in main.properties.items()}
    for e, props in main.properties.items():
        builtin = set(contracts[e].fields)
        for j, p in enumerate(props):
            if p.name in builtin:
                raise ConfigError(
                    f"{main_y.where(('properties', e, j, 'name'))}: '{p.name}' is a base "
                    "property already"
                )

    # Switched-off base properties: base fields of the registry, never its key or the
    # fields the platform needs to tell records apart (NEEDED).
    off_by_entity = {e: set(fields) for e, fields in main.switched_off.items()}
    for e, fields in main.switched_off.items():
        for j, f in enumerate(fields):
            where_off = main_y.where(("switched_off", e, j))
            if f not in contracts[e].fields:
                raise ConfigError(f"{where_off}: '{f}' is not a base property of '{e}'")
            if f in NEEDED.get(e, ()) or f == contracts[e].key:
                raise ConfigError(f"{where_off}: '{f}' cannot be switched off (Tessera needs it "
                                  "to tell records apart)")

    rule_sets = [(("tree", "field_rules"), main.tree.field_rules)] + [
        (("tree", "views", i, "field_rules"), v.field_rules) for i, v in enumerate(main.tree.views)]
    for path, field in ((p, f) for p, rules in rule_sets for f in rules):
        if field in off_by_entity.get("contact", ()) or (
                field not in GOLDEN_FIELDS and field not in sendero_contact_fields()
                and field not in ext_by_entity.get("contact", ())):
            raise ConfigError(
                f"{main_y.where(path + (field,))}: '{field}' is not a golden field "
                "(consent never comes from survivorship)")

    seen: set[str] = set()
    for i, s in enumerate(sources.sources):
        where = lambda *k: sources_y.where(("sources", i) + k)  # noqa: E731
        if s.name in seen:
            raise ConfigError(f"{where('name')}: duplicate source name '{s.name}'")
        seen.add(s.name)
        if s.node not in node_names:
            raise ConfigError(f"{where('node')}: unknown node '{s.node}'")
        if s.format == "csv" and s.csv is None:
            raise ConfigError(f"{where()}: a csv source needs a 'csv' dialect block")
        if s.format == "xml" and s.xml is None:
            raise ConfigError(f"{where()}: an xml source needs an 'xml' block")
        if s.format == "api" and s.api is None:
            raise ConfigError(f"{where()}: an api source needs an 'api' block (url, pagination, ...)")
        if s.format == "push":
            if s.push is None:
                raise ConfigError(f"{where()}: a push source needs a 'push' block (token_env, ...)")
            if s.path != f"_push/{s.name}/*.jsonl":
                raise ConfigError(f"{where('path')}: a push source lands under _push/{s.name}/; "
                                  "it takes no 'path'")
        if s.format not in ("api", "push") and not s.path:
            raise ConfigError(f"{where()}: a {s.format} source needs a 'path' glob")
        if s.format == "xlsx" and s.xlsx is None:
            raise ConfigError(f"{where()}: an xlsx source needs an 'xlsx' block (sheet, header_row)")
        allowed = set(contracts[s.entity].fields) | ext_by_entity.get(s.entity, set())
        for field in s.columns:
            if field in off_by_entity.get(s.entity, ()):
                raise ConfigError(f"{where('columns', field)}: '{field}' is switched off for "
                                  f"'{s.entity}' (tessera.yaml switched_off)")
            if field not in allowed:
                raise ConfigError(
                    f"{where('columns', field)}: '{field}' is not a field of entity "
                    f"'{s.entity}' (see data_contracts/entities/{s.entity}.yaml)"
                )
        required = [f for f, spec in contracts[s.entity].fields.items()
                    if spec.required and f != "source_record_id"
                    and f not in off_by_entity.get(s.entity, ())]
        required += [p.name for p in main.properties.get(s.entity, []) if p.required]
        for field in required:
            if field not in s.columns:
                raise ConfigError(f"{where('columns')}: required field '{field}' is not mapped")
        for field in s.value_map:
            if field not in s.columns:
                raise ConfigError(f"{where('value_map', field)}: '{field}' is not a mapped column "
                                  "of this source")
        if s.entity in ("order", "note", "task"):
            if not s.customer_source:
                raise ConfigError(f"{where()}: an {s.entity} source needs 'customer_source'")
        order = s.effective_record_order()
        if order.by == "record_timestamp":
            spec = contracts[s.entity].fields.get(order.column)
            if order.column not in s.columns or spec is None or spec.type not in ("date", "timestamp"):
                raise ConfigError(f"{where('record_order', 'column')}: '{order.column}' is not a mapped "
                                  "date or timestamp field of this source")
        if order.by == "file_date":
            import re as _re

            try:
                groups = _re.compile(order.pattern or "").groups
            except _re.error as exc:
                raise ConfigError(f"{where('record_order', 'pattern')}: not a regular expression ({exc})") from None
            if groups < 1:
                raise ConfigError(f"{where('record_order', 'pattern')}: needs a group holding the date "
                                  "in the file's name, e.g. '_(\\d{{8}})\\.csv$'")
        if s.entity in ("event", "unsubscribe", "consent", "message", "app_event", "detail") \
                and "customer_ref" in s.columns \
                and not s.customer_source:
            raise ConfigError(f"{where('columns', 'customer_ref')}: a source that maps 'customer_ref' "
                              "needs 'customer_source' (the contact source whose ids it names)")
        if s.entity in ("unsubscribe", "consent", "message", "app_event", "detail") and not any(
                f in s.columns for f in ("email", "mobile", "erp_id", "customer_ref")):
            raise ConfigError(f"{where('columns')}: an {s.entity} source must map at least one "
                              "identifier of the person: email, mobile, erp_id or customer_ref")
    names = {s.name for s in sources.sources}
    for i, s in enumerate(sources.sources):
        if s.customer_source and s.customer_source not in names:
            raise ConfigError(
                f"{sources_y.where(('sources', i, 'customer_source'))}: unknown source "
                f"'{s.customer_source}'"
            )

    lookups_path = config_dir / "lookups.yaml"
    lookups_y = load_yaml(lookups_path) if lookups_path.exists() else None
    lookups = _validate(_LookupsFile, lookups_y) if lookups_y else _LookupsFile()
    for name, table in lookups.lookups.items():
        if name in PREDEFINED_MACROS and table.macro:
            labels = ", ".join(m.label for m in PREDEFINED_MACROS[name])
            raise ConfigError(f"{lookups_y.where(('lookups', name, 'macro'))}: "
                              f"{name.replace('_', '-')} macros are predefined ({labels}); "
                              "declare micros only")
        macros = PREDEFINED_MACROS.get(name, table.macro)
        by_id = {m.id for m in macros}
        by_label = {m.label.strip().lower(): m.id for m in macros}
        for level, values in (("macro", table.macro), ("micro", table.micro)):
            ids = [v.id for v in values]
            if len(ids) != len(set(ids)):
                raise ConfigError(f"{lookups_y.where(('lookups', name, level))}: duplicate id")
        for j, v in enumerate(table.micro):
            where = lookups_y.where(("lookups", name, "micro", j))
            if v.macro is None:
                raise ConfigError(f"{where}: a micro value needs its macro")
            known = v.macro in by_id if isinstance(v.macro, int) else (
                str(v.macro).strip().lower() in by_label)
            if not known:
                raise ConfigError(f"{where}: unknown macro '{v.macro}' (a micro belongs to a "
                                  "macro of the same table)")
    # A named sales channel's micro must be a declared micro under the channel's macro
    # (once the deployment declares sales-channel micros at all).
    channel_micros = lookups.lookups.get("sales_channel")
    if channel_micros is not None and channel_micros.micro:
        by_label = {m.label.strip().lower(): m.id for m in PREDEFINED_MACROS["sales_channel"]}
        macro_of = {v.id: (v.macro if isinstance(v.macro, int) else by_label.get(str(v.macro).strip().lower()))
                    for v in channel_micros.micro}
        for cname, ch in main.sales_channels.items():
            if ch.micro is not None and macro_of.get(ch.micro) != ch.macro:
                raise ConfigError(
                    f"{main_y.where(('sales_channels', cname, 'micro'))}: micro {ch.micro} is not a "
                    f"sales-channel micro under macro {ch.macro} in lookups.yaml")

    # A lookup property names a settings table of lookups.yaml.
    for e, props in main.properties.items():
        for j, p in enumerate(props):
            if p.table and p.table not in lookups.lookups and p.table not in PREDEFINED_MACROS:
                raise ConfigError(f"{main_y.where(('properties', e, j, 'table'))}: unknown settings "
                                  f"table '{p.table}' (declare it in lookups.yaml)")

    if any(s.entity == "company_user" for s in sources.sources):

        for j, p in enumerate(main.properties.get("contact", [])):
            if p.name in CARD_COMPANY_FIELDS:
                raise ConfigError(
                    f"{main_y.where(('properties', 'contact', j, 'name'))}: '{p.name}' is a company "
                    "field of the contact card (from the company registries); rename the property")

    ident = main.identity
    for kind in ("never_merge", "always_merge"):
        for i, pair in enumerate(getattr(ident, kind)):
            for j, ref in enumerate(pair):
                if ref.source not in {s.name for s in sources.sources if s.entity == "contact"}:
                    raise ConfigError(
                        f"{main_y.where(('identity', kind, i, j, 'source'))}: unknown contact "
                        f"source '{ref.source}'")

    for entity, exp in main.expectations.items():
        known = set(contracts[entity].fields) | ext_by_entity.get(entity, set())
        for col in (exp.null_rates or {}):
            if col not in known:
                raise ConfigError(
                    f"{main_y.where(('expectations', entity, 'null_rates', col))}: '{col}' is "
                    f"not a field of {entity} (contract or extended property)")

    deployment = Deployment(
        lookups=lookups.lookups,
        config_dir=config_dir,
        deployment=main.deployment,
        description=main.description,
        nodes=main.nodes,
        tree=main.tree,
        properties=main.properties,
        switched_off=main.switched_off,
        identity=main.identity,
        sales_channels=main.sales_channels,
        sources=sources.sources,
        segments=segments.segments,
        feeds=feeds.feeds,
        scores=scoring.scores,
        stages=stages.stages,
        expectations=main.expectations,
        predictions=main.predictions,
        engine=main.engine,
        spark=main.spark,
        recommendations=recs,
        activation=autos.activation,
        automations=autos.automations,
        journeys=journeys.journeys,
        warehouse=main.warehouse,
        incremental=main.incremental,
    )

    views = {v.name for v in main.tree.views}
    for i, seg in enumerate(segments.segments):
        if seg.view and seg.view not in views:
            raise ConfigError(f"{segments_y.where(('segments', i, 'view'))}: unknown view '{seg.view}' "
                              f"(declared views: {sorted(views)})")
    for i, feed in enumerate(feeds.feeds):
        if feed.view and feed.view not in views:
            raise ConfigError(f"{feeds_y.where(('feeds', i, 'view'))}: unknown view '{feed.view}' "
                              f"(declared views: {sorted(views)})")

    # Rules and feeds are checked against the field catalogue now, so that a bad rule
    # fails when definitions load rather than in the middle of the nightly run.

    catalogue = field_catalogue(deployment)
    entities = {s.entity for s in deployment.sources}
    seg_names = [s.name for s in deployment.segments]
    for i, seg in enumerate(deployment.segments):
        if seg_names.count(seg.name) > 1:
            raise ConfigError(f"{segments_y.where(('segments', i, 'name'))}: duplicate segment")
        validate_rule(seg.rule, catalogue, segments_y, ("segments", i, "rule"),
                      segments=set(seg_names), entities=entities,
                      channels=set(deployment.sales_channels))
    try:
        segment_order(deployment.segments)
    except ValueError as exc:
        first = str(exc).split(" -> ")[0]
        i = seg_names.index(first)
        raise ConfigError(f"{segments_y.where(('segments', i, 'rule'))}: segments reference each "
                          f"other in a cycle: {exc}") from None
    _validate_scoring(deployment, scoring_y, stages_y, catalogue, entities, STAGE_FIELDS,
                      validate_rule)
    for i, feed in enumerate(deployment.feeds):
        if feed.segment and feed.segment not in seg_names:
            raise ConfigError(
                f"{feeds_y.where(('feeds', i, 'segment'))}: unknown segment '{feed.segment}'"
            )
        if feed.row_source == "score_actions" and feed.segment:
            raise ConfigError(f"{feeds_y.where(('feeds', i, 'score_actions'))}: a feed takes either "
                              "'segment' or 'score_actions'")
        if "customer_id" not in feed.source_fields:
            raise ConfigError(f"{feeds_y.where(('feeds', i, 'fields'))}: a feed must include 'customer_id'")
        for j, col in enumerate(feed.columns):
            # a mart feed's other fields are the mart's columns (checked when it runs)
            if (col.field not in catalogue and col.field not in FEED_FIELDS
                    and feed.row_source != "mart"):
                raise ConfigError(f"{feeds_y.where(('feeds', i, 'fields', j))}: unknown field '{col.field}'")
        if ("recommended_products" in feed.source_fields or feed.row_source == "recommendations") \
                and recs is None:
            raise ConfigError(f"{feeds_y.where(('feeds', i))}: recommendation lists need "
                              "recommendations.yaml")
        if feed.channel != "none":
            need = "email" if feed.channel == "email" else "mobile"
            if need not in feed.source_fields:
                raise ConfigError(
                    f"{feeds_y.where(('feeds', i, 'fields'))}: a {feed.channel} feed must "
                    f"include '{need}'"
                )
    _validate_activation(deployment, auto_y, journeys_y, catalogue, entities, set(seg_names))
    if recs is not None:
        missing = [e for e in ("order", "order_line", "product") if not deployment.sources_of(e)]
        if missing:
            raise ConfigError(f"{recs_path}: recommendations need {', '.join(missing)} sources")
    return deployment


def _validate_activation(deployment: Deployment, auto_y, journeys_y, catalogue, entities,
                         segments: set[str]) -> None:
    """Automations' and journeys' rules, event filters, destinations and templates, checked
    when the configuration loads (so a typo fails before the nightly run)."""
    dests = set(deployment.activation.destinations)
    nodes = {n.name for n in deployment.nodes}
    templates = deployment.config_dir / "templates"

    def event(src, loc, ev) -> None:
        if ev is None:
            return
        validate_rule({"event": ev.event, "where": ev.where}, catalogue, src, loc, entities=entities)
        for j, n in enumerate(ev.nodes):
            if n not in nodes:
                raise ConfigError(f"{src.where(loc + ('nodes', j))}: unknown node '{n}'")

    def rule(src, loc, r) -> None:
        if r is not None:
            validate_rule(r, catalogue, src, loc, segments=segments, entities=entities,
                          channels=set(deployment.sales_channels))

    def action(src, loc, a) -> None:
        spec = a.spec
        d = getattr(spec, "destination", None)
        if d is not None and d not in dests:
            raise ConfigError(f"{src.where(loc + (a.kind, 'destination'))}: unknown destination "
                              f"'{d}' (declare it under activation.destinations)")
        t = getattr(spec, "template", None)
        if t is not None and not (templates / t).is_file():
            raise ConfigError(f"{src.where(loc + (a.kind, 'template'))}: template {templates / t} not found")
        if a.kind == "tag" and spec.property is not None:
            props = {p.name: p for p in deployment.properties_of("contact")}
            where = src.where(loc + ("tag", "property"))
            if spec.property not in props:
                raise ConfigError(f"{where}: '{spec.property}' is not an extended contact property "
                                  "(declare it under properties.contact in tessera.yaml)")
            prop = props[spec.property]
            if spec.value is None:
                raise ConfigError(f"{where}: setting '{spec.property}' needs a value")
            if prop.allowed is not None and spec.value not in prop.allowed:
                raise ConfigError(f"{where}: '{spec.value}' is not an allowed value of '{spec.property}'")
        if a.kind == "webhook":
            for j, f in enumerate(spec.fields):
                if f not in catalogue:
                    raise ConfigError(f"{src.where(loc + ('webhook', 'fields', j))}: unknown field '{f}'")

    names = [a.name for a in deployment.automations]
    for i, a in enumerate(deployment.automations):
        if names.count(a.name) > 1:
            raise ConfigError(f"{auto_y.where(('automations', i, 'name'))}: duplicate automation")
        event(auto_y, ("automations", i, "trigger"), a.trigger)
        rule(auto_y, ("automations", i, "conditions"), a.conditions)
        action(auto_y, ("automations", i, "action"), a.action)
    names = [j.name for j in deployment.journeys]
    for i, j in enumerate(deployment.journeys):
        loc = ("journeys", i)
        if names.count(j.name) > 1:
            raise ConfigError(f"{journeys_y.where(loc + ('name',))}: duplicate journey")
        event(journeys_y, loc + ("trigger", "event"), j.trigger.event)
        rule(journeys_y, loc + ("trigger", "conditions"), j.trigger.conditions)
        if j.trigger.segment and j.trigger.segment not in segments:
            raise ConfigError(f"{journeys_y.where(loc + ('trigger', 'segment'))}: unknown segment "
                              f"'{j.trigger.segment}'")
        for k, s in enumerate(j.steps):
            sl = loc + ("steps", k)
            event(journeys_y, sl + ("check",), s.check)
            if s.action is not None:
                action(journeys_y, sl + ("action",), s.action)
            for b, br in enumerate(s.branches):
                event(journeys_y, sl + ("branches", b, "event"), br.event)
                rule(journeys_y, sl + ("branches", b, "conditions"), br.conditions)


def _validate_scoring(deployment: Deployment, scoring_y, stages_y, catalogue, entities, stage_fields,
                      validate_rule) -> None:
    names = [s.name for s in deployment.scores]
    feed_names = {f.name for f in deployment.feeds}
    for i, score in enumerate(deployment.scores):
        where = lambda *k: scoring_y.where(("scores", i) + k)  # noqa: E731
        if names.count(score.name) > 1:
            raise ConfigError(f"{where('name')}: duplicate score type '{score.name}'")
        if deployment.scores and "event" not in entities:
            raise ConfigError(f"{where()}: scoring needs an event source")
        for j, rule in enumerate(score.rules):
            if (rule.event is None) == (rule.no_event is None):
                raise ConfigError(f"{where('rules', j)}: a scoring rule has exactly one of "
                                  "'event' or 'no_event'")
            if rule.no_event is not None and rule.within_days is None:
                raise ConfigError(f"{where('rules', j)}: 'no_event' needs 'within_days'")
            # property filters use the segment language's event leaf
            leaf = {"event": rule.event or rule.no_event, "where": rule.where}
            validate_rule(leaf, catalogue, scoring_y, ("scores", i, "rules", j), entities=entities)
        for j, th in enumerate(score.thresholds):
            for k, action in enumerate(th.actions):
                try:
                    kind, target = action.kind_target()
                except ValueError as exc:
                    raise ConfigError(f"{where('thresholds', j, 'actions', k)}: {exc}") from None
                if kind == "feed" and target not in feed_names:
                    raise ConfigError(f"{where('thresholds', j, 'actions', k, 'feed')}: unknown feed "
                                      f"'{target}'")
    stage_names = [s.name for s in deployment.stages]
    stage_catalogue = {k: v for k, v in catalogue.items() if k not in stage_fields}
    for i, stage in enumerate(deployment.stages):
        if stage_names.count(stage.name) > 1:
            raise ConfigError(f"{stages_y.where(('stages', i, 'name'))}: duplicate stage '{stage.name}'")
        # A stage rule cannot read stages or segments: stages are built before segments.
        validate_rule(stage.rule, stage_catalogue, stages_y, ("stages", i, "rule"),
                      segments=None, entities=entities, channels=set(deployment.sales_channels))
