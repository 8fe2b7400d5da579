"""Activation: automations and journeys evaluated per day, their actions sent once.

One multi-asset (they share the outbox and one transaction per day): the automations'
actions, the journeys' state and the outbox. Thin over tessera.activation.run; metadata
carries counts only (per automation, per journey step), never personal data."""


import datetime as dt

import dagster as dg
from dagster_duckdb import DuckDBResource

from assets._common import POOL, markdown_counts
from pipelines.partitions import daily_partitions
from resources import PrivacySettings
from tessera.activation.outbox import duplicate_actions, outbox_summary, unconsented_sends, uses_recommendations
from tessera.activation.run import run_activation, step_counts
from tessera.engine.warehouse import Timer
from tessera.privacy import suppression as privacy_core
from tessera.settings import Deployment

GROUP = "activation"
AUTOMATIONS = dg.AssetKey(["activation", "automations"])
JOURNEYS = dg.AssetKey(["activation", "journeys"])
OUTBOX = dg.AssetKey(["activation", "outbox"])


def build(deployment: Deployment):
    if not deployment.automations and not deployment.journeys:
        return [], []
    deps = [dg.AssetKey(["marts", "contact_cards"]), dg.AssetKey(["marketing", "rfm_scores"])]
    if deployment.sources_of("event"):
        deps.append(dg.AssetKey(["core", "events"]))
    if deployment.scores:
        deps.append(dg.AssetKey(["marketing", "scores"]))
    if deployment.stages:
        deps.append(dg.AssetKey(["marketing", "stages"]))
    deps += [dg.AssetKey(["segments", s.name]) for s in deployment.segments]
    if deployment.recommendations is not None and uses_recommendations(deployment):
        deps.append(dg.AssetKey(["recommendations", "contact_products"]))

    @dg.multi_asset(
        specs=[
            dg.AssetSpec(AUTOMATIONS, group_name=GROUP, deps=deps, kinds={"duckdb", "smtp", "http"},
                         description="Automations (automations.yaml): the day's triggering events "
                                     "and the actions decided, once each, behind the consent gate."),
            dg.AssetSpec(JOURNEYS, group_name=GROUP, deps=deps, kinds={"duckdb"},
                         description="Journeys (journeys.yaml): per contact, the step, since when, the "
                                     "branch, the history (activation.journey_state / journey_history)."),
            dg.AssetSpec(OUTBOX, group_name=GROUP, deps=[AUTOMATIONS, JOURNEYS], kinds={"duckdb"},
                         description="Every action decided (activation.outbox): pending, sending, sent, "
                                     "failed, capped, withdrawn; sent over SMTP or the feeds' delivery."),
        ],
        check_specs=[
            dg.AssetCheckSpec("no_action_without_consent", asset=OUTBOX, blocking=True,
                              description="No message pending or sent to a contact without consent "
                                          "on its channel, suppressed, erased or soft-deleted."),
            dg.AssetCheckSpec("no_action_twice", asset=OUTBOX, blocking=True,
                              description="No action decided twice for the same step, contact and trigger."),
        ],
        pool=POOL, partitions_def=daily_partitions,
    )
    def activation(context: dg.AssetExecutionContext, warehouse: DuckDBResource,
                   privacy: PrivacySettings):
        timer = Timer()
        day = dt.date.fromisoformat(context.partition_key)
        with warehouse.get_connection() as con:
            privacy_core.ensure_tables(con)
            privacy_core.install_hmac(con, privacy.suppression_key)
            out = run_activation(con, deployment, day)
            steps = step_counts(con, out["days"])
            summary = outbox_summary(con)
            unconsented = unconsented_sends(con)
            twice = duplicate_actions(con)
        days = [d.isoformat() for d in out["days"]]
        if not days:
            context.log.info(f"{day} was evaluated before: no state changed, only pending actions sent")
        per_auto: dict = {}
        for d_stats in out["evaluated"].values():
            for name, s in d_stats["automations"].items():
                acc = per_auto.setdefault(name, {})
                for k, v in s.items():
                    acc[k] = acc.get(k, 0) + v
        with warehouse.get_connection() as con:  # the rows each asset's tables hold now
            auto_rows, journey_rows = con.execute(
                "SELECT count(*) FILTER (WHERE origin = 'automation'), "
                "(SELECT count(*) FROM activation.journey_state) FROM activation.outbox").fetchone()
        auto_meta = {
            "dagster/row_count": dg.MetadataValue.int(int(auto_rows)),
            "days_evaluated": dg.MetadataValue.json(days),
            "by_automation": dg.MetadataValue.json(per_auto),
            "actions_queued": dg.MetadataValue.int(sum(s.get("queued", 0) for s in per_auto.values())),
            "blocked_no_consent": dg.MetadataValue.int(sum(s.get("blocked", 0) for s in per_auto.values())),
            "duration_s": dg.MetadataValue.float(timer.seconds),
        }
        cols = ("journey / step", "entered", "moved", "waited", "branched", "acted", "blocked", "failed",
                "held", "gave_up")
        lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" + " ---: |" * (len(cols) - 1)]
        lines += [f"| {j} / {s} | " + " | ".join(str(int(v)) for v in rest) + " |"
                  for j, s, *rest in steps]
        journey_meta = {
            "dagster/row_count": dg.MetadataValue.int(int(journey_rows)),
            "days_evaluated": dg.MetadataValue.json(days),
            "per_step": dg.MetadataValue.md("\n".join(lines)),
            "entered": dg.MetadataValue.int(sum(int(r[2]) for r in steps)),
            "acted": dg.MetadataValue.int(sum(int(r[6]) for r in steps)),
            "failed": dg.MetadataValue.int(sum(int(r[8]) for r in steps)),
            # contacts held at a step whose action failed (retried next run) / exited after the retries
            "held_after_failure": dg.MetadataValue.int(sum(int(r[9]) for r in steps)),
            "gave_up": dg.MetadataValue.int(sum(int(r[10]) for r in steps)),
        }
        outbox_meta = {"dagster/row_count": dg.MetadataValue.int(sum(summary.values())),
                       "by_status": markdown_counts("status", sorted(summary.items())),
                       **{k: dg.MetadataValue.int(v) if isinstance(v, int) else v
                          for k, v in out["send"].as_metadata().items()},
                       "duration_s": dg.MetadataValue.float(timer.seconds)}
        yield dg.MaterializeResult(asset_key=AUTOMATIONS, metadata=auto_meta)
        yield dg.MaterializeResult(asset_key=JOURNEYS, metadata=journey_meta)
        yield dg.MaterializeResult(asset_key=OUTBOX, metadata=outbox_meta)
        yield dg.AssetCheckResult(asset_key=OUTBOX, check_name="no_action_without_consent",
                                  passed=unconsented == 0, metadata={"unconsented": unconsented})
        yield dg.AssetCheckResult(asset_key=OUTBOX, check_name="no_action_twice",
                                  passed=twice == 0, metadata={"duplicates": twice})

    return [activation], []
