"""ConfigurableResource classes. Instances are bound once, in ``pipelines/definitions.py``."""

from resources.api import ApiCredentials, resource_key
from resources.landing import FeedStore, LandingZone
from resources.privacy import PrivacySettings
from resources.warehouse import warehouse_resource

__all__ = ["ApiCredentials", "FeedStore", "LandingZone", "PrivacySettings", "resource_key",
           "warehouse_resource"]
