"""A deployment's settings, split by concern; this face hands the models on.

``tessera.settings.sources`` (nodes, tree, properties, sources, lookups, expectations),
``identity``, ``marketing``, ``feeds``, ``model`` (the whole ``Deployment``). The settings
layer imports nothing of the stages: loading and cross-checking a configuration folder
(which needs the rule language) is :func:`tessera.deployment.load_deployment`.
Names are loaded on first use, so that reading the paths (``tessera.settings.paths``,
all the fast CLI commands need) does not load every pydantic model.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "ApiPull": "tessera.settings.sources",
    "Cap": "tessera.settings.marketing",
    "ConfigError": "tessera.yamlfile",
    "CsvDialect": "tessera.settings.sources",
    "DEFAULT_NULL_RATES": "tessera.settings.sources",
    "Decay": "tessera.settings.marketing",
    "Deployment": "tessera.settings.model",
    "Entity": "tessera.settings.base",
    "EntityExpectations": "tessera.settings.sources",
    "ExtendedProperty": "tessera.settings.sources",
    "FeedDef": "tessera.settings.feeds",
    "Identifier": "tessera.settings.base",
    "IdentitySettings": "tessera.settings.identity",
    "LookupTable": "tessera.settings.sources",
    "LookupValue": "tessera.settings.sources",
    "MatchKey": "tessera.settings.identity",
    "Node": "tessera.settings.sources",
    "NullRate": "tessera.settings.sources",
    "PredictionSettings": "tessera.settings.predictions",
    "Probabilistic": "tessera.settings.identity",
    "PushEndpoint": "tessera.settings.sources",
    "RecordRef": "tessera.settings.identity",
    "SALES_CHANNEL_MACROS": "tessera.settings.sources",
    "SOURCE_MACROS": "tessera.settings.sources",
    "PREDEFINED_MACROS": "tessera.settings.sources",
    "SalesChannel": "tessera.settings.sources",
    "ScoreDef": "tessera.settings.marketing",
    "ScoreRule": "tessera.settings.marketing",
    "SegmentDef": "tessera.settings.marketing",
    "Source": "tessera.settings.sources",
    "StageDef": "tessera.settings.marketing",
    "Threshold": "tessera.settings.marketing",
    "ThresholdAction": "tessera.settings.marketing",
    "Tree": "tessera.settings.sources",
    "XlsxLayout": "tessera.settings.sources",
    "WarehouseSettings": "tessera.settings.warehouse",
    "XmlLayout": "tessera.settings.sources",
}

__all__ = [
    "ApiPull", "Cap", "ConfigError", "CsvDialect", "DEFAULT_NULL_RATES", "Decay", "Deployment",
    "Entity", "EntityExpectations", "ExtendedProperty", "FeedDef", "Identifier", "IdentitySettings",
    "LookupTable", "LookupValue", "MatchKey", "Node", "NullRate", "PredictionSettings", "Probabilistic", "PushEndpoint",
    "PREDEFINED_MACROS", "RecordRef", "SALES_CHANNEL_MACROS", "SOURCE_MACROS", "SalesChannel", "ScoreDef",
    "ScoreRule", "SegmentDef", "Source", "StageDef", "Threshold", "ThresholdAction", "Tree", "WarehouseSettings",
    "XlsxLayout", "XmlLayout",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(name)
