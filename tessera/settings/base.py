"""Building blocks of every settings model: strict models and safe identifiers."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict

_IDENT = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def _identifier(value: str) -> str:
    # Names become table, column and asset names: keep them to safe SQL identifiers so
    # they can be interpolated (quoted) without any risk of injection.
    if not _IDENT.match(value):
        raise ValueError(f"'{value}' is not a valid name (lower-case letters, digits, _)")
    return value


Identifier = Annotated[str, AfterValidator(_identifier)]


Entity = Literal[
    "contact", "order", "order_line", "product", "product_line", "event", "bounce",
    "unsubscribe", "consent", "note", "task", "service", "service_line", "offer",
    "company", "company_user", "potential_company", "campaign_cost", "message", "app_event",
    "detail",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
