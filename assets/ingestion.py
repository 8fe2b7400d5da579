"""Ingestion: one asset per configured source, ``raw.<source>``.

Each run loads the source's landing files not loaded before; rejects and the import
report go to ``ops``. The reconciliation check is blocking: identity never runs on a
load whose numbers do not add up.
"""


import datetime as dt

import dagster as dg
from dagster_duckdb import DuckDBResource

from assets._common import POOL, heartbeat, table_metadata
from resources import LandingZone, PrivacySettings, resource_key
from tessera.settings import Deployment, Source
from tessera.ingest.load import ingest_source, line_reference_sources, rejected_by_reason
from tessera.ingest.run_report import files_markdown, reasons_markdown, run_files, top_reject_reasons
from tessera.engine.warehouse import Timer, ensure_warehouse

GROUP = "ingestion"


def _source_asset(deployment: Deployment, source: Source):
    key = dg.AssetKey(["raw", source.name])

    api_key = resource_key(source.name) if source.format == "api" else None

    def _run(context: dg.AssetExecutionContext, warehouse: DuckDBResource,
             landing: LandingZone, privacy: PrivacySettings, token: str | None) -> dg.MaterializeResult:
        timer = Timer()
        now = dt.datetime.now().replace(microsecond=0)
        with warehouse.get_connection() as con:
            ensure_warehouse(con)
            # each file as it starts and ends, and a heartbeat inside a long one
            with heartbeat(context, con, f"loading {source.name}"):
                outcome = ingest_source(con, deployment, source, landing.path, context.run_id, now,
                                        privacy.suppression_key, token=token, progress=context.log.info)
            for f in outcome.files:  # each loaded file's counts were logged as it ended
                if f.status == "failed":
                    context.log.warning(f"{source.name}: file failed: {f.message}")
            loaded = [f for f in outcome.files if f.status not in ("already_loaded",)]
            meta = table_metadata(con, "raw", source.name, timer.seconds, {
                "files_seen": len(outcome.files),
                "files_processed": len(loaded),
                "files_failed": sum(f.status == "failed" for f in outcome.files),
                "records_read": outcome.total("records"),
                "new": outcome.total("new"),
                "updated": outcome.total("updated"),
                "unchanged": outcome.total("unchanged"),
                "rejected": outcome.total("rejected"),
                "suppressed": outcome.total("suppressed"),
                # "field: reason" -> records; reasons never carry the refused values
                "rejected_by_reason": rejected_by_reason(con, source.name, context.run_id),
            }, entity=source.entity, descriptions={
                p.name: p.description for p in deployment.properties_of(source.entity)})
        return dg.MaterializeResult(metadata=meta)

    # B2B companies load before their users (Sendero's rule): a run loads the company
    # files first, so that the users' links see them.
    deps = ([dg.AssetKey(["raw", s.name]) for s in deployment.sources_of("company")]
            if source.entity == "company_user" else [])
    # Micro product lines are checked against the loaded macros, products against both:
    # those sources load first.
    deps += [dg.AssetKey(["raw", s.name]) for s in line_reference_sources(deployment, source)]
    common = dict(
        key=key,
        deps=deps,
        group_name=GROUP,
        pool=POOL,
        kinds={"duckdb", source.format},
        description=f"Every accepted version of the records of source '{source.name}' "
                    f"({source.entity}, node {source.node}), loaded from "
                    f"{source.path if source.format != 'api' else 'a REST API pull'}.",
        metadata={"source": source.name, "entity": source.entity, "node": source.node,
                  "landing_glob": source.path} if source.format != "api" else
                 {"source": source.name, "entity": source.entity, "node": source.node,
                  "token_env": source.api.token_env or ""},
    )
    if api_key is None:
        @dg.asset(**common)
        def _ingest(context: dg.AssetExecutionContext, warehouse: DuckDBResource,
                    landing: LandingZone, privacy: PrivacySettings) -> dg.MaterializeResult:
            return _run(context, warehouse, landing, privacy, None)
    else:
        # The API token comes from a per-source resource bound with dg.EnvVar.
        @dg.asset(**common, required_resource_keys={"warehouse", "landing", "privacy", api_key})
        def _ingest(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
            r = context.resources
            return _run(context, r.warehouse, r.landing, r.privacy, getattr(r, api_key).token)

    @dg.asset_check(pool=POOL, asset=key, name="import_reconciles", blocking=True,
                    description="For every file of this run: accepted + rejected + suppressed = records read.")
    def _reconciles(context: dg.AssetCheckExecutionContext, warehouse: DuckDBResource):
        with warehouse.get_connection() as con:
            ensure_warehouse(con)
            bad = con.execute("""
                SELECT count(*) FROM ops.import_report
                WHERE source = ? AND batch_id = ? AND status IN ('loaded', 'empty')
                  AND new + updated + unchanged + rejected + suppressed <> records""",
                              [source.name, context.run.run_id]).fetchone()[0]
        return dg.AssetCheckResult(passed=bad == 0, metadata={"files_not_reconciled": int(bad)})

    @dg.asset_check(pool=POOL, asset=key, name="no_failed_files", blocking=False,
                    description="No landing file of this run was refused whole (encoding, XML, header).")
    def _no_failed(context: dg.AssetCheckExecutionContext, warehouse: DuckDBResource):
        with warehouse.get_connection() as con:
            ensure_warehouse(con)
            failed = con.execute("""
                SELECT file, message FROM ops.import_report
                WHERE source = ? AND batch_id = ? AND status = 'failed'""",
                                 [source.name, context.run.run_id]).fetchall()
        return dg.AssetCheckResult(
            passed=not failed, severity=dg.AssetCheckSeverity.WARN,
            metadata={"failed_files": dg.MetadataValue.json([{"file": f, "reason": m} for f, m in failed])})

    return _ingest, [_reconciles, _no_failed]


IMPORT_REPORT = dg.AssetKey(["ops", "import_report"])
REJECTS = dg.AssetKey(["ops", "rejects"])


def _run_report_asset(deployment: Deployment):
    """The import report and the rejects as assets: after every source of the run loaded,
    their metadata lists each file of the run with its counts and the top reasons with
    line numbers (the tables themselves are written by each source's load)."""
    deps = [dg.AssetKey(["raw", s.name]) for s in deployment.sources]

    @dg.multi_asset(
        specs=[
            dg.AssetSpec(IMPORT_REPORT, deps=deps, group_name=GROUP, kinds={"duckdb"},
                         description="One row per landing file and run: records found, new, updated, "
                                     "unchanged, rejected, suppressed. Metadata: this run's files."),
            dg.AssetSpec(REJECTS, deps=deps, group_name=GROUP, kinds={"duckdb"},
                         description="Every refused record field or file: file, line, field, reason "
                                     "(never the value). Metadata: this run's top reasons with lines."),
        ],
        pool=POOL, name="ops_run_report")
    def _report(context: dg.AssetExecutionContext, warehouse: DuckDBResource):
        timer = Timer()
        run = context.run_id
        with warehouse.get_connection() as con:
            ensure_warehouse(con)
            files = run_files(con, run)
            reasons = top_reject_reasons(con, run)
            report = table_metadata(con, "ops", "import_report", timer.seconds, {
                "files_of_run": len(files),
                "files_failed": sum(f["status"] == "failed" for f in files),
                "records_of_run": sum(int(f["records"]) for f in files),
                "rejected_of_run": sum(int(f["rejected"]) for f in files),
            }, where="batch_id = ?", params=[run])
            rejects = table_metadata(con, "ops", "rejects", timer.seconds, {
                "reasons_of_run": len(reasons),
            }, where="batch_id = ?", params=[run])
        report["files"] = dg.MetadataValue.md(files_markdown(files))
        report["files_json"] = dg.MetadataValue.json(files)
        rejects["top_reasons"] = dg.MetadataValue.md(reasons_markdown(reasons))
        rejects["top_reasons_json"] = dg.MetadataValue.json(reasons)
        yield dg.MaterializeResult(asset_key=IMPORT_REPORT, metadata=report)
        yield dg.MaterializeResult(asset_key=REJECTS, metadata=rejects)

    @dg.asset_check(pool=POOL, asset=REJECTS, name="rejected_files_have_reasons", blocking=False,
                    description="Every file of the run that rejected records has its reasons in "
                                "ops.rejects, and every reject of the run names a file of the report.")
    def _have_reasons(context: dg.AssetCheckExecutionContext, warehouse: DuckDBResource):
        with warehouse.get_connection() as con:
            ensure_warehouse(con)
            unexplained, orphans = con.execute("""
                SELECT
                  (SELECT count(*) FROM ops.import_report r WHERE r.batch_id = $run AND r.rejected > 0
                     AND NOT EXISTS (SELECT 1 FROM ops.rejects j WHERE j.batch_id = $run
                                     AND j.source = r.source AND j.file = r.file)),
                  (SELECT count(*) FROM (SELECT DISTINCT source, file FROM ops.rejects j WHERE j.batch_id = $run
                     AND NOT EXISTS (SELECT 1 FROM ops.import_report r WHERE r.batch_id = $run
                                     AND r.source = j.source AND r.file = j.file)))""",
                                               {"run": context.run.run_id}).fetchone()
        return dg.AssetCheckResult(passed=unexplained == 0 and orphans == 0,
                                   severity=dg.AssetCheckSeverity.WARN,
                                   metadata={"files_without_reasons": int(unexplained),
                                             "reject_files_not_in_report": int(orphans)})

    return _report, _have_reasons


def build(deployment: Deployment):
    assets, checks = [], []
    for source in deployment.sources:
        a, c = _source_asset(deployment, source)
        assets.append(a)
        checks.extend(c)
    report, check = _run_report_asset(deployment)
    assets.append(report)
    checks.append(check)
    return assets, checks
