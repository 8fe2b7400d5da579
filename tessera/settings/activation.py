"""Settings of automations (``automations.yaml``) and journeys (``journeys.yaml``).

Why one module for both: a journey's action step takes any automation action, and both
share the sending settings (SMTP server, webhook destinations, quiet hours, daily cap),
which live in ``automations.yaml`` under ``activation:``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import Field, model_validator

from tessera.settings.base import Identifier, _Strict
from tessera.settings.feeds import HttpDestinationDef

_ADDRESS = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"


class SmtpSettings(_Strict):
    """The SMTP server e-mails are handed to; credentials come from the environment."""

    host: str = "127.0.0.1"
    port: int = Field(default=25, ge=1, le=65535)
    sender: str = Field(default="marketing@tessera.example", pattern=_ADDRESS)
    starttls: bool = False
    username_env: str | None = Field(None, pattern=r"^[A-Z_][A-Z0-9_]*$")
    password_env: str | None = Field(None, pattern=r"^[A-Z_][A-Z0-9_]*$")
    timeout_s: float = Field(default=10.0, gt=0, le=300)
    connections: int = Field(default=4, ge=1, le=64, description="concurrent SMTP sessions")


class QuietHours(_Strict):
    """Messages (e-mail, SMS, webhooks) are held while the local hour is in [start, end)."""

    start: int = Field(ge=0, le=23)
    end: int = Field(ge=0, le=23)

    def holds(self, hour: int) -> bool:
        if self.start <= self.end:
            return self.start <= hour < self.end
        return hour >= self.start or hour < self.end


class ActivationSettings(_Strict):
    # false: actions are decided and kept in the outbox (pending), nothing is sent
    send: bool = True
    smtp: SmtpSettings = SmtpSettings()
    # named HTTP receivers (webhooks, an SMS gateway, an e-mail sending platform)
    destinations: dict[Identifier, HttpDestinationDef] = {}
    quiet_hours: QuietHours | None = None
    daily_cap: int | None = Field(None, ge=1, description="messages per contact per day")
    max_attempts: int = Field(default=5, ge=1, le=50, description="sends of one action before 'failed'")
    # a journey contact whose action failed (outbox 'failed') is held at the step and the
    # action retried on the next runs, this many times; then the contact exits (gave_up)
    journey_retries: int = Field(default=2, ge=0, le=20)
    # the first day evaluated when nothing was evaluated before (default: the run's day)
    start_date: dt.date | None = None


class EventFilter(_Strict):
    """An event of a type, optionally on chosen nodes, with property filters in the
    segment rule language (``{property, op, value}``)."""

    event: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,62}$")
    where: list[dict[str, Any]] = []
    nodes: list[Identifier] = []


class EmailAction(_Strict):
    """To the contact (consent on e-mail needed), or to an internal address ``to``."""

    subject: str
    template: str = Field(description="a Jinja2 file under the config folder's templates/")
    to: str | None = Field(None, pattern=_ADDRESS)
    # handed to an e-mail sending platform over HTTP instead of SMTP
    destination: Identifier | None = None


class SmsAction(_Strict):
    template: str
    destination: Identifier  # the SMS gateway (an HTTP destination)


class TagAction(_Strict):
    tag: Identifier
    property: Identifier | None = None  # optionally also sets <property> = value
    value: str | None = None


class WebhookAction(_Strict):
    destination: Identifier
    body: Literal["json", "xml"] = "json"
    fields: list[Identifier] = ["customer_id"]  # card fields sent beside the event


class CouponAction(_Strict):
    campaign: Identifier
    discount: str = ""
    valid_days: int = Field(default=30, ge=1)


class Action(_Strict):
    email: EmailAction | None = None
    sms: SmsAction | None = None
    tag: TagAction | None = None
    webhook: WebhookAction | None = None
    coupon: CouponAction | None = None

    @model_validator(mode="after")
    def _one(self):
        if len(self.kinds()) != 1:
            raise ValueError("an action has exactly one of email, sms, tag, webhook, coupon")
        return self

    def kinds(self) -> list[str]:
        return [k for k in ("email", "sms", "tag", "webhook", "coupon") if getattr(self, k) is not None]

    @property
    def kind(self) -> str:
        return self.kinds()[0]

    @property
    def spec(self):
        return getattr(self, self.kind)

    @property
    def channel(self) -> str:
        """The consent channel the action needs ('none' for tags, coupons, notifications)."""
        if self.email is not None:
            return "none" if self.email.to else "email"
        return "sms" if self.sms is not None else "none"

    @property
    def is_message(self) -> bool:
        return self.kind in ("email", "sms", "webhook")


class AutomationDef(_Strict):
    name: Identifier
    description: str = ""
    trigger: EventFilter
    conditions: dict[str, Any] | None = None  # a segment rule over the contact
    action: Action


class JourneyTrigger(_Strict):
    event: EventFilter | None = None
    segment: Identifier | None = None  # entered the segment on the day
    date: dt.date | None = None        # everybody (matching the conditions) on that day
    conditions: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one(self):
        if sum(x is not None for x in (self.event, self.segment, self.date)) != 1:
            raise ValueError("a trigger has exactly one of event, segment, date")
        return self


class Branch(_Strict):
    """Taken when the event condition (an event since the contact entered the journey)
    AND the profile conditions hold; the first matching branch wins."""

    name: Identifier
    event: EventFilter | None = None
    conditions: dict[str, Any] | None = None
    next: Identifier


class StepDef(_Strict):
    name: Identifier
    wait: int | None = Field(None, ge=0, description="days to wait")
    until: dt.date | None = None
    check: EventFilter | None = None  # wait-then-check: an event within `within_days`
    within_days: int | None = Field(None, ge=1)
    then: Identifier | None = None
    otherwise: Identifier | None = None
    action: Action | None = None
    branches: list[Branch] = []
    end: bool = False
    next: Identifier | None = None

    @property
    def kind(self) -> str:
        if self.end:
            return "end"
        if self.check is not None:
            return "check"
        if self.branches:
            return "branch"
        if self.action is not None:
            return "action"
        return "wait"

    @model_validator(mode="after")
    def _shape(self):
        kinds = [self.end, self.check is not None, bool(self.branches), self.action is not None,
                 self.wait is not None or self.until is not None]
        if sum(kinds) != 1:
            raise ValueError("a step is exactly one of wait/until, check, branches, action, end")
        if self.check is not None and (self.within_days is None or not self.then or not self.otherwise):
            raise ValueError("a check needs within_days, then and otherwise")
        if self.kind in ("wait", "action") and not self.next:
            raise ValueError(f"a {self.kind} step needs next")
        if self.kind == "branch" and not self.otherwise:
            raise ValueError("branches need otherwise (the step when no branch matches)")
        return self

    def targets(self) -> list[str]:
        out = [self.next, self.then, self.otherwise] + [b.next for b in self.branches]
        return [t for t in out if t]


class JourneyDef(_Strict):
    name: Identifier
    description: str = ""
    trigger: JourneyTrigger
    steps: list[StepDef] = Field(min_length=1)
    # a contact may enter again once it finished (never: once in a lifetime)
    reentry: Literal["after_exit", "never"] = "after_exit"
    # contacts in the journey when it is edited: finish the version they started, or
    # move to the same-named step of the new version
    on_edit: Literal["finish", "migrate"] = "finish"

    @model_validator(mode="after")
    def _graph(self):
        names = [s.name for s in self.steps]
        if len(set(names)) != len(names):
            raise ValueError("duplicate step name")
        for s in self.steps:
            for t in s.targets():
                if t not in names:
                    raise ValueError(f"step '{s.name}' goes to unknown step '{t}'")
        return self


class AutomationsFile(_Strict):
    activation: ActivationSettings = ActivationSettings()
    automations: list[AutomationDef] = []


class JourneysFile(_Strict):
    journeys: list[JourneyDef] = []


def set_properties(automations, journeys) -> list[str]:
    """The contact properties a tag action sets (automations and journey steps), sorted:
    the card overlays their values (``tessera.card.marts``), so they are real fields."""
    actions = [a.action for a in automations]
    actions += [s.action for j in journeys for s in j.steps if s.action is not None]
    return sorted({a.tag.property for a in actions if a.tag is not None and a.tag.property})
