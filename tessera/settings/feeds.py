"""Export feed settings."""

from __future__ import annotations

from typing import Literal

from tessera.settings.base import _Strict, Identifier

class FeedDef(_Strict):
    name: Identifier
    description: str = ""
    segment: Identifier | None = None
    channel: Literal["email", "sms", "none"] = "email"
    format: Literal["csv"] = "csv"
    fields: list[Identifier]
    # Feeds opened by people in spreadsheets get formula-looking cells neutralised.
    for_spreadsheet: bool = False
    # The contacts a score threshold pushed to this feed on the day (e.g. to the CRM).
    score_actions: bool = False
