"""The whole validated configuration of a deployment, and the shape of each of its files."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from tessera.settings.activation import ActivationSettings, AutomationDef, JourneyDef
from tessera.settings.base import _Strict, Entity, Identifier
from tessera.settings.engine import EngineName, SparkSettings
from tessera.settings.feeds import FeedDef
from tessera.settings.identity import IdentitySettings
from tessera.settings.marketing import ScoreDef, SegmentDef, StageDef
from tessera.settings.predictions import PredictionSettings
from tessera.settings.recommendations import RecommendationSettings
from tessera.settings.warehouse import WarehouseSettings
from tessera.settings.sources import EntityExpectations, ExtendedProperty, LookupTable, Node, PREDEFINED_MACROS, SalesChannel, Source, Tree

# The registries that take extended properties and switched-off base properties.
PropertyEntity = Literal["contact", "company", "company_user", "potential_company", "order", "product"]


class _LookupsFile(_Strict):
    lookups: dict[Identifier, LookupTable] = {}


class _MainFile(_Strict):
    deployment: str
    description: str = ""
    nodes: list[Node]
    tree: Tree
    properties: dict[PropertyEntity, list[ExtendedProperty]] = {}
    # Base properties a deployment does not use, per registry: neither required, stored,
    # shown nor exported ([Contacthub] lets a deployment switch base properties off).
    switched_off: dict[PropertyEntity, list[str]] = {}
    identity: IdentitySettings = IdentitySettings()
    sales_channels: dict[Identifier, SalesChannel] = {}
    expectations: dict[Entity, EntityExpectations] = {}
    predictions: PredictionSettings = PredictionSettings()
    warehouse: WarehouseSettings = WarehouseSettings()
    engine: EngineName = "duckdb"
    spark: SparkSettings = SparkSettings()
    # staging rewrites only the records whose raw versions changed since its last build
    # (tessera.ingest.changed_keys); false: every day rebuilds staging in full
    incremental: bool = False


class _SourcesFile(_Strict):
    sources: list[Source]


class _SegmentsFile(_Strict):
    segments: list[SegmentDef] = []


class _FeedsFile(_Strict):
    feeds: list[FeedDef] = []


class _ScoringFile(_Strict):
    scores: list[ScoreDef] = []


class _StagesFile(_Strict):
    stages: list[StageDef] = []


class _RecommendationsFile(_Strict):
    recommendations: RecommendationSettings = RecommendationSettings()


class Deployment(_Strict):
    """The whole validated configuration of one deployment."""

    config_dir: Path
    deployment: str
    description: str = ""
    nodes: list[Node]
    tree: Tree
    properties: dict[str, list[ExtendedProperty]] = {}
    switched_off: dict[str, list[str]] = {}
    identity: IdentitySettings = IdentitySettings()
    sales_channels: dict[str, SalesChannel] = {}
    sources: list[Source]
    segments: list[SegmentDef] = []
    feeds: list[FeedDef] = []
    lookups: dict[str, LookupTable] = {}
    scores: list[ScoreDef] = []
    stages: list[StageDef] = []
    expectations: dict[str, EntityExpectations] = {}
    predictions: PredictionSettings = PredictionSettings()
    recommendations: RecommendationSettings | None = None  # None: no recommendations.yaml
    activation: ActivationSettings = ActivationSettings()
    automations: list[AutomationDef] = []
    journeys: list[JourneyDef] = []
    warehouse: WarehouseSettings = WarehouseSettings()
    engine: EngineName = "duckdb"  # which engine runs the stages on the seam
    spark: SparkSettings = SparkSettings()
    incremental: bool = False  # see _MainFile.incremental

    def expectations_of(self, entity: str) -> EntityExpectations:
        """The entity's configured batch expectations, or the defaults."""
        return self.expectations.get(entity, EntityExpectations())

    def lookup_table(self, name: str) -> LookupTable:
        """A lookup table with predefined values merged in (sales-channel and source macros)."""
        table = self.lookups.get(name, LookupTable())
        if name in PREDEFINED_MACROS:
            table = LookupTable(macro=PREDEFINED_MACROS[name], micro=table.micro)
        return table

    def properties_of(self, entity: str) -> list[ExtendedProperty]:
        return list(self.properties.get(entity, []))

    def switched_off_of(self, entity: str) -> set[str]:
        return set(self.switched_off.get(entity, []))

    def sources_of(self, entity: str) -> list[Source]:
        return [s for s in self.sources if s.entity == entity]

    def source(self, name: str) -> Source:
        for s in self.sources:
            if s.name == name:
                return s
        raise KeyError(name)

    def node_rank(self) -> dict[str, int]:
        return {name: i + 1 for i, name in enumerate(self.tree.priority)}
