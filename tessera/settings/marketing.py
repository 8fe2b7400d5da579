"""Marketing settings: segments, scores with thresholds, stages."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field
from tessera.settings.base import _Strict, Identifier

class SegmentDef(_Strict):
    name: Identifier
    description: str = ""
    # dynamic: recomputed every run; static: frozen at its first build, then changed only
    # by explicit additions / removals (``tessera segment add|remove``).
    kind: Literal["dynamic", "static"] = "dynamic"
    rule: dict[str, Any]
    # a view node of tree.views: the rule reads its golden profile (default: the main one)
    view: Identifier | None = None


class ThresholdAction(_Strict):
    """One action fired once when a contact's score crosses a threshold upwards."""

    tag: Identifier | None = None
    notify: str | None = Field(None, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$",
                               description="an internal address to notify (never the contact's)")
    feed: Identifier | None = None

    def kind_target(self) -> tuple[str, str]:
        set_ = [(k, v) for k, v in (("tag", self.tag), ("notify", self.notify), ("feed", self.feed))
                if v is not None]
        if len(set_) != 1:
            raise ValueError("an action has exactly one of tag, notify, feed")
        return set_[0]


class Threshold(_Strict):
    at: float
    actions: list[ThresholdAction] = Field(min_length=1)


class ScoreRule(_Strict):
    """Points per matching event (``event``), or once when no such event happened in the
    last ``within_days`` days (``no_event``: e.g. no e-mail opened in 30 days: -10)."""

    event: str | list[str] | None = None
    no_event: str | list[str] | None = None
    where: list[dict[str, Any]] = []
    within_days: int | None = Field(None, ge=1)
    points: float
    max_points: float | None = None


class Decay(_Strict):
    half_life_days: float = Field(gt=0)


class Cap(_Strict):
    min: float | None = None
    max: float | None = None


class ScoreDef(_Strict):
    name: Identifier
    description: str = ""
    window_days: int | None = Field(None, ge=1, description="only events of the last N days count")
    decay: Decay | None = None
    cap: Cap | None = None
    rules: list[ScoreRule] = Field(min_length=1)
    thresholds: list[Threshold] = []


class StageDef(_Strict):
    name: Identifier
    description: str = ""
    rule: dict[str, Any]
