"""ConfigurableResource classes. Instances are bound once, in ``pipelines/definitions.py``."""

from resources.landing import FeedStore, LandingZone
from resources.privacy import PrivacySettings
from resources.warehouse import warehouse_resource

__all__ = ["FeedStore", "LandingZone", "PrivacySettings", "warehouse_resource"]
