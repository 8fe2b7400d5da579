"""Folders outside the warehouse: where source files land and where feeds are published."""

from __future__ import annotations

from pathlib import Path

import dagster as dg


class LandingZone(dg.ConfigurableResource):
    """The landing folder; each source's ``path`` glob is relative to it."""

    root: str

    @property
    def path(self) -> Path:
        return Path(self.root)


class FeedStore(dg.ConfigurableResource):
    """The folder export feeds are published to, one sub-folder per feed."""

    root: str

    @property
    def path(self) -> Path:
        p = Path(self.root)
        p.mkdir(parents=True, exist_ok=True)
        return p
