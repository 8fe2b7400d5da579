"""ConfigurableResource classes. Instances are bound once, in ``pipelines/definitions.py``."""

from resources.api import ApiCredentials, resource_key
from resources.landing import FeedStore, LandingZone
from resources.privacy import PrivacySettings
from resources.spark import SparkEngineResource, spark_resource
from resources.warehouse import warehouse_resource

__all__ = ["ApiCredentials", "FeedStore", "LandingZone", "PrivacySettings", "SparkEngineResource", "resource_key",
           "spark_resource",
           "warehouse_resource"]
