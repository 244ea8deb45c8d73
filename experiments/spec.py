"""The experiment file, version 1: pydantic models that forbid unknown fields and check across fields.

Loading a file (with line numbers for every error) lives in :mod:`experiments.loader`.
"""

from __future__ import annotations

import difflib
import math
import re
from datetime import time, timedelta
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
    model_validator,
)
from pydantic.functional_validators import BeforeValidator

from experiments.assignment import HOLDOUT_ARM, arm_block
from experiments.durations import format_duration, parse_duration
from experiments.metrics import CATALOGUE
from experiments.rules import FIELDS, RuleError, parse_rule

SLUG = r"^[a-z0-9][a-z0-9_-]{0,62}$"

Duration = Annotated[
    timedelta,
    BeforeValidator(lambda v: v if isinstance(v, timedelta) else parse_duration(str(v))),
    PlainSerializer(format_duration, return_type=str),
]
Channel = Literal["email", "sms"]
# Conditions a step can be skipped on, checked against the database when the step is due.
Condition = Literal[
    "payment_method_updated", "onboarding_completed", "offer_accepted", "unsubscribed"
]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Step(StrictModel):
    at: Duration = Field(description="when, after assignment: 0d, 3d, 12h")
    channel: Channel
    template: str = Field(pattern=r"^[a-z0-9_]+$")
    unless: Condition | None = Field(
        default=None, description="skip this step if the condition holds when it is due"
    )


class Offer(StrictModel):
    kind: Literal["discount", "pause"]
    percent: int | None = Field(default=None, ge=1, le=100, description="discount only")
    months: int = Field(ge=1, le=12)

    @model_validator(mode="after")
    def _percent_matches_kind(self) -> Offer:
        if self.kind == "discount" and self.percent is None:
            raise ValueError("a discount offer needs 'percent' (1-100), e.g. percent: 30")
        if self.kind == "pause" and self.percent is not None:
            raise ValueError("a pause offer takes no 'percent'; remove it")
        return self


class Arm(StrictModel):
    name: str = Field(pattern=SLUG)
    weight: float = Field(default=1.0, description="relative share of customers; positive")
    steps: list[Step] = Field(default_factory=list)
    offer: Offer | None = None

    @field_validator("weight", mode="before")
    @classmethod
    def _weight_is_number(cls, value: object) -> object:
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        if numeric and math.isfinite(value) and value > 0:  # type: ignore[arg-type, operator]
            return value
        raise ValueError(f"weight must be a positive number such as 1 or 0.5, not {value!r}")


class Segment(StrictModel):
    where: str = Field(min_length=1, description="a rule over customer fields")
    exclude_if_in_other_experiments: bool = True

    @field_validator("where")
    @classmethod
    def _rule_parses(cls, value: str) -> str:
        try:
            parse_rule(value)
        except RuleError as error:
            raise ValueError(str(error)) from None
        return value


class AssignmentSettings(StrictModel):
    """How customers are split: the salt, strata, and the layer (mutual exclusion) with its share.

    ``stratify_by`` names fields of the rule vocabulary (:data:`experiments.rules.FIELDS`); arms
    are then balanced within each combination of their values (see
    :mod:`experiments.assignment`). Experiments in one ``layer`` never share a customer: each
    takes ``share`` of the layer's customers (a fixed range of a layer hash), and the shares of a
    layer's experiments may add up to at most 1.
    """

    salt: str | None = Field(default=None, min_length=1, description="default: the experiment key")
    stratify_by: list[str] = Field(
        default_factory=list, description="fields of the rule vocabulary, e.g. [subscription.plan]"
    )
    layer: str | None = Field(default=None, pattern=SLUG, description="mutual-exclusion layer")
    share: float | None = Field(
        default=None, gt=0, le=1, description="share of the layer's customers, e.g. 0.3"
    )

    @field_validator("stratify_by")
    @classmethod
    def _known_fields(cls, names: list[str]) -> list[str]:
        for name in names:
            if name not in FIELDS:
                close = [f for f in FIELDS if f.rsplit(".", 1)[-1] == name]
                close = close or difflib.get_close_matches(name, list(FIELDS), n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise ValueError(
                    f"unknown stratum field {name!r}; {hint}stratify by fields of the rule"
                    f" vocabulary (`retain fields`): {', '.join(sorted(FIELDS))}"
                )
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"stratify_by repeats {repeated}; list each field once")
        return names

    @model_validator(mode="after")
    def _share_needs_layer(self) -> AssignmentSettings:
        if self.layer is not None and self.share is None:
            raise ValueError(f"layer {self.layer!r} needs a share of it, e.g. share: 0.3")
        if self.share is not None and self.layer is None:
            raise ValueError("share is the share of a layer; add layer: NAME or remove share")
        return self


class Metrics(StrictModel):
    primary: str
    secondary: list[str] = Field(default_factory=list)
    guardrails: list[str] = Field(default_factory=list)

    @field_validator("primary")
    @classmethod
    def _known_primary(cls, value: str) -> str:
        return _known_metric(value)

    @field_validator("secondary", "guardrails")
    @classmethod
    def _known_list(cls, values: list[str]) -> list[str]:
        return [_known_metric(v) for v in values]

    def roles(self) -> list[tuple[str, Literal["primary", "secondary", "guardrail"]]]:
        """Each metric with its role, primary first, without duplicates."""
        seen: dict[str, Literal["primary", "secondary", "guardrail"]] = {self.primary: "primary"}
        for name in self.secondary:
            seen.setdefault(name, "secondary")
        for name in self.guardrails:
            seen.setdefault(name, "guardrail")
        return list(seen.items())


def _known_metric(name: str) -> str:
    if name not in CATALOGUE:
        raise ValueError(f"unknown metric {name!r}; choose one of: {', '.join(sorted(CATALOGUE))}")
    return name


class BetaPriorSettings(StrictModel):
    alpha: float = Field(default=1.0, gt=0)
    beta: float = Field(default=1.0, gt=0)


class Priors(StrictModel):
    """Priors of the Bayesian analysis: Beta(alpha, beta) on every binary arm's rate; a normal
    prior on the absolute difference of continuous means (variance None: flat)."""

    binary: BetaPriorSettings = Field(default_factory=BetaPriorSettings)
    continuous_mean: float = 0.0
    continuous_variance: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _mean_needs_variance(self) -> Priors:
        if self.continuous_mean != 0 and self.continuous_variance is None:
            raise ValueError(
                "priors.continuous_mean needs priors.continuous_variance (a flat prior has no mean)"
            )
        return self


class Costs(StrictModel):
    """What sending and offering cost, per message or accepted offer, in the revenue's currency."""

    email: float = Field(default=0.001, ge=0)
    sms: float = Field(default=0.0079, ge=0)
    offer: dict[Literal["discount", "pause"], float] = Field(
        default_factory=dict,
        description="a fixed cost per accepted offer (the revenue an offer forgoes is already in revenue)",
    )


class Analysis(StrictModel):
    alpha: float = Field(default=0.05, gt=0, lt=0.5)
    baseline: str | None = Field(default=None, description="arm name; default: the first arm")
    method: Literal["sequential", "fixed"] = Field(
        default="sequential",
        description="headline inference: always-valid (safe to look daily) or fixed-horizon",
    )
    sequential_tuning_n: int = Field(
        default=5_000,
        ge=10,
        description="units per arm at which the confidence sequence is tightest",
    )
    correction: Literal["holm", "bh", "none"] = "holm"
    cuped: bool = True
    cuped_lookback_days: int | None = Field(
        default=None, ge=1, description="pre-period length; default: the metric's own window"
    )
    mde: float | None = Field(
        default=None, gt=0, description="absolute, in the primary metric's units"
    )
    power: float = Field(default=0.8, gt=0.5, lt=1)
    survival_horizon_days: int = Field(default=90, ge=7, le=730)
    priors: Priors = Field(default_factory=Priors)
    costs: Costs = Field(default_factory=Costs)


_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")


class FrequencyCap(StrictModel):
    max: int = Field(ge=1)
    per: Duration


class MessagingSettings(StrictModel):
    quiet_hours: str | None = Field(
        default=None, description="customer-local window with no sends, e.g. 21:00-08:00"
    )
    frequency_cap: FrequencyCap | None = None

    @field_validator("quiet_hours")
    @classmethod
    def _clock_range(cls, value: str | None) -> str | None:
        if value is not None and not _CLOCK.match(value):
            raise ValueError(f"quiet_hours must look like 21:00-08:00, not {value!r}")
        return value

    def quiet_window(self) -> tuple[time, time] | None:
        if self.quiet_hours is None:
            return None
        start, end = self.quiet_hours.split("-")
        return time.fromisoformat(start), time.fromisoformat(end)


class Schedule(StrictModel):
    cron: str = Field(pattern=r"^\S+ \S+ \S+ \S+ \S+$", description="five-field cron")
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}; use an IANA name like Europe/Stockholm"
            ) from None
        return value


class ExperimentSpec(StrictModel):
    key: str = Field(pattern=SLUG, description="stable identifier: lowercase, digits, - and _")
    hypothesis: str = Field(min_length=1)
    owner: str | None = None
    segment: Segment
    assignment: AssignmentSettings = Field(default_factory=AssignmentSettings)
    arms: list[Arm] = Field(min_length=2)
    metrics: Metrics
    analysis: Analysis = Field(default_factory=Analysis)
    messaging: MessagingSettings = Field(default_factory=MessagingSettings)
    schedule: Schedule | None = None

    @model_validator(mode="after")
    def _arms_consistent(self) -> ExperimentSpec:
        names = [arm.name for arm in self.arms]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"arm names must be unique; rename the repeated {duplicates}")
        if HOLDOUT_ARM in names:
            raise ValueError(
                f"arm name {HOLDOUT_ARM!r} is reserved for the global holdout; rename that arm"
            )
        if self.assignment.stratify_by:
            try:
                arm_block([(arm.name, arm.weight) for arm in self.arms])
            except ValueError as error:
                raise ValueError(f"assignment.stratify_by: {error}") from None
        if self.analysis.baseline is not None and self.analysis.baseline not in names:
            raise ValueError(
                f"analysis.baseline {self.analysis.baseline!r} is not an arm; use one of {names}"
            )
        return self

    @property
    def salt(self) -> str:
        return self.assignment.salt or self.key

    @property
    def baseline(self) -> str:
        return self.analysis.baseline or self.arms[0].name

    def arm(self, name: str) -> Arm:
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise KeyError(name)

    def templates(self) -> set[tuple[str, str]]:
        """Every (channel, template) the arms use."""
        return {(step.channel, step.template) for arm in self.arms for step in arm.steps}
