"""A deployment's settings, split by concern; this face hands the models on.

``tessera.settings.sources`` (nodes, tree, properties, sources, lookups, expectations),
``identity``, ``marketing``, ``feeds``, ``model`` (the whole ``Deployment``). The settings
layer imports nothing of the stages: loading and cross-checking a configuration folder
(which needs the rule language) is :func:`tessera.deployment.load_deployment`.
"""

from tessera.settings.base import Entity, Identifier
from tessera.settings.feeds import FeedDef
from tessera.settings.identity import IdentitySettings, MatchKey, Probabilistic, RecordRef
from tessera.settings.marketing import (Cap, Decay, ScoreDef, ScoreRule, SegmentDef, StageDef,
                                        Threshold, ThresholdAction)
from tessera.settings.model import Deployment
from tessera.settings.sources import (DEFAULT_NULL_RATES, SALES_CHANNEL_MACROS, ApiPull, CsvDialect,
                                      EntityExpectations, ExtendedProperty, LookupTable, LookupValue,
                                      Node, NullRate, PushEndpoint, SalesChannel, Source, Tree,
                                      XlsxLayout, XmlLayout)
from tessera.yamlfile import ConfigError

__all__ = [
    "ApiPull", "Cap", "ConfigError", "CsvDialect", "DEFAULT_NULL_RATES", "Decay", "Deployment",
    "Entity", "EntityExpectations", "ExtendedProperty", "FeedDef", "Identifier", "IdentitySettings",
    "LookupTable", "LookupValue", "MatchKey", "Node", "NullRate", "Probabilistic", "PushEndpoint",
    "RecordRef", "SALES_CHANNEL_MACROS", "SalesChannel", "ScoreDef", "ScoreRule", "SegmentDef",
    "Source", "StageDef", "Threshold", "ThresholdAction", "Tree", "XlsxLayout", "XmlLayout",
]
