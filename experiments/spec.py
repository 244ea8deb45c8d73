"""The experiment file, version 1: pydantic models that forbid unknown fields and check across fields.

Loading a file (with line numbers for every error) lives in :mod:`experiments.loader`.
"""

from __future__ import annotations

import difflib
import math
import re
import sys
from datetime import datetime, time, timedelta
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from pydantic import (
    AfterValidator,
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
from experiments.limits import (
    MAX_ARMS,
    MAX_COUNT,
    MAX_DURATION,
    MAX_METRICS,
    MAX_MONEY,
    MAX_STEPS,
    MAX_TEXT_CHARS,
    MAX_WEIGHT,
    MIN_WEIGHT,
)
from experiments.metrics import CATALOGUE
from experiments.rules import FIELDS, RuleError, parse_rule

SLUG = r"^[a-z0-9][a-z0-9_-]{0,62}$"


def _duration(value: object) -> timedelta:
    if isinstance(value, timedelta):
        if not timedelta(0) <= value <= MAX_DURATION:
            raise ValueError(f"durations are between 0d and {MAX_DURATION.days}d")
        return value
    if not isinstance(value, str | int):
        raise ValueError(f"a duration is written like 3d or 12h, not {type(value).__name__}")
    return parse_duration(str(value))


Duration = Annotated[
    timedelta,
    BeforeValidator(_duration),
    PlainSerializer(format_duration, return_type=str),
]
Channel = Literal["email", "sms"]
# Conditions a step can be skipped on, checked against the database when the step is due.
Condition = Literal[
    "payment_method_updated",
    "onboarding_completed",
    "offer_accepted",
    "unsubscribed",
    "invoice_paid",
]


class FieldProblem(ValueError):
    """A cross-field problem that belongs to one place below the model raising it: ``loc`` (e.g.
    ``("arms", 2, "name")``) lets the loader point at that line instead of the model's."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc


class StrictModel(BaseModel):
    # No inf/NaN in any number, and no text longer than MAX_TEXT_CHARS (see experiments.limits).
    model_config = ConfigDict(
        extra="forbid", frozen=True, allow_inf_nan=False, str_max_length=MAX_TEXT_CHARS
    )


class Step(StrictModel):
    at: Duration = Field(description="when, after assignment: 0d, 3d, 12h")
    channel: Channel
    template: str = Field(pattern=r"^[a-z0-9_]+$")
    unless: Condition | None = Field(
        default=None, description="skip this step if the condition holds when it is due"
    )
    fallback: Literal["email"] | None = Field(
        default=None,
        description="send by this channel instead when the step's own channel cannot reach the "
        "customer (no or invalid address, no consent, suppressed)",
    )
    fallback_template: str | None = Field(
        default=None, pattern=r"^[a-z0-9_]+$", description="default: the step's template"
    )

    @model_validator(mode="after")
    def _fallback_differs(self) -> Step:
        if self.fallback == self.channel:
            raise ValueError(f"fallback {self.fallback!r} is the step's own channel; remove it")
        if self.fallback_template is not None and self.fallback is None:
            raise ValueError("fallback_template needs a fallback channel, e.g. fallback: email")
        return self

    def fallback_target(self) -> tuple[str, str] | None:
        """(channel, template) used when the step's own channel cannot reach the customer."""
        if self.fallback is None:
            return None
        return self.fallback, self.fallback_template or self.template


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


ArmStatus = Literal["running", "stopped"]


class Arm(StrictModel):
    name: str = Field(pattern=SLUG)
    weight: float = Field(default=1.0, description="relative share of customers; positive")
    steps: list[Step] = Field(default_factory=list, max_length=MAX_STEPS)
    offer: Offer | None = None
    status: ArmStatus | None = Field(
        default=None,
        description="a person's override of auto-stop: stopped (no new customer, no further "
        "message) or running (resumes an automatically stopped arm and keeps auto-stop off it); "
        "absent: the arm follows auto-stop's recorded decisions",
    )

    @field_validator("weight", mode="before")
    @classmethod
    def _weight_is_number(cls, value: object) -> object:
        number: float | None = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an integer of hundreds of digits
                number = sys.float_info.max
        if number is not None and math.isfinite(number) and MIN_WEIGHT <= number <= MAX_WEIGHT:
            return number
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "..."
        if number is not None and math.isfinite(number) and number > 0:
            raise ValueError(
                f"weight must be between {MIN_WEIGHT:g} and {MAX_WEIGHT:g} (weights are "
                f"relative shares; scale them all down or up), not {shown}"
            )
        raise ValueError(f"weight must be a positive number such as 1 or 0.5, not {shown}")


class Segment(StrictModel):
    # A rule has its own limits (conditions, list values, nesting; experiments.rule_tokens),
    # bounded in length by the file's, so the general text cap does not apply to it.
    model_config = ConfigDict(str_max_length=None)

    where: str = Field(min_length=1, description="a rule over customer fields")
    exclude_if_in_other_experiments: bool = True

    @field_validator("where")
    @classmethod
    def _rule_parses(cls, value: str) -> str:
        try:
            parse_rule(value)
        except RuleError as error:
            raise error from None  # a ValueError; the loader shows its pointer under the line
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
        default=None, description="share of the layer's customers, e.g. 0.3"
    )

    @field_validator("share", mode="before")
    @classmethod
    def _share_is_fraction(cls, value: object) -> object:
        if value is None:
            return None
        if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value <= 1:
            return float(value)  # NaN and huge integers fail the comparison
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "..."
        raise ValueError(
            f"share is a fraction of the layer's customers above 0 and at most 1 (0.3 takes 30%;"
            f" the shares of one layer add up to at most 1), not {shown}"
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
    secondary: list[str] = Field(default_factory=list, max_length=MAX_METRICS)
    guardrails: list[str] = Field(default_factory=list, max_length=MAX_METRICS)

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
    alpha: float = Field(default=1.0, gt=0, le=MAX_COUNT)
    beta: float = Field(default=1.0, gt=0, le=MAX_COUNT)


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

    email: float = Field(default=0.001, ge=0, le=MAX_MONEY)
    sms: float = Field(default=0.0079, ge=0, le=MAX_MONEY)
    offer: dict[Literal["discount", "pause"], Annotated[float, Field(ge=0, le=MAX_MONEY)]] = Field(
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
        le=MAX_COUNT,
        description="units per arm at which the confidence sequence is tightest",
    )
    correction: Literal["holm", "bh", "none"] = "holm"
    cuped: bool = True
    cuped_lookback_days: int | None = Field(
        default=None,
        ge=1,
        le=MAX_DURATION.days,
        description="pre-period length; default: the metric's own window",
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
    max: int = Field(ge=1, le=MAX_COUNT)
    per: Duration


class MessagingSettings(StrictModel):
    quiet_hours: str | None = Field(
        default=None, description="customer-local window with no sends, e.g. 21:00-08:00"
    )
    frequency_cap: FrequencyCap | None = None
    default_locale: str | None = Field(
        default=None,
        pattern=r"^[a-z]{2,3}([-_][A-Za-z0-9]{2,8})*$",
        description="templates for customers whose own locale has none (before English), e.g. sv",
    )
    sms_max_segments: int = Field(
        default=1,
        ge=1,
        le=10,
        description="SMS parts a message may take; `retain validate` warns if a template can exceed it",
    )

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


class AutoStop(StrictModel):
    """When the evaluate flow stops an arm by itself, judged by the always-valid (sequential) test
    whatever ``analysis.method`` is, so that looking at every evaluation is safe.

    Harm is acted on by default (a guardrail that moves significantly the wrong way stops that arm
    at once, as GrowthBook's safe rollouts roll back); a winner is a product decision, so stopping
    the other arms for it is opted into with ``on_winner``. See :mod:`experiments.autostop`."""

    enabled: bool = Field(default=True, description="false: no new automatic decision")
    on_guardrail_harm: bool = Field(
        default=True, description="stop an arm at once when a guardrail shows significant harm"
    )
    on_winner: bool = Field(
        default=False,
        description="when the primary metric's boundary is crossed: an arm that beats the "
        "baseline is kept and every other arm stopped; an arm worse than the baseline is stopped",
    )
    min_days: int = Field(
        default=7,
        ge=0,
        le=MAX_DURATION.days,
        description="days since the first assignment before a winner stop (one weekly cycle)",
    )
    min_n_per_arm: int = Field(
        default=150,
        ge=2,
        le=MAX_COUNT,
        description="customers counted in both the arm and the baseline before any stop",
    )


DEFAULT_ENROL_CRON = "0 9 * * *"
DEFAULT_DISPATCH_CRON = "*/15 * * * *"
DEFAULT_EVALUATE_CRON = "0 6 * * *"
ExperimentStatus = Literal["running", "paused", "stopped"]


def _check_cron(value: str) -> str:
    """``value`` if it is a five-field cron expression (minute hour day month weekday)."""
    text = " ".join(value.split())
    if len(text.split(" ")) != 5:
        raise ValueError(
            f"cron {value!r} needs five fields (minute hour day-of-month month day-of-week), "
            "e.g. '0 9 * * *' for 09:00 every day"
        )
    try:
        CronSim(text, datetime(2026, 1, 1))
    except CronSimError as error:
        raise ValueError(
            f"cron {value!r} does not parse ({error}); e.g. '0 9 * * *' or '*/15 * * * *'"
        ) from None
    return text


Cron = Annotated[str, AfterValidator(_check_cron)]


class Schedule(StrictModel):
    """When the experiment's deployments run, each a cron in ``timezone``: ``cron`` enrols (select,
    assign, schedule messages), ``dispatch`` sends what is due, ``evaluate`` writes the report."""

    cron: Cron = DEFAULT_ENROL_CRON
    timezone: str = "UTC"
    dispatch: Cron = DEFAULT_DISPATCH_CRON
    evaluate: Cron = DEFAULT_EVALUATE_CRON

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
    arms: list[Arm] = Field(min_length=2, max_length=MAX_ARMS)
    metrics: Metrics
    analysis: Analysis = Field(default_factory=Analysis)
    messaging: MessagingSettings = Field(default_factory=MessagingSettings)
    status: ExperimentStatus = Field(
        default="running",
        description="running: scheduled; paused or stopped: deployments keep no active schedule",
    )
    schedule: Schedule = Field(default_factory=Schedule)
    auto_stop: AutoStop = Field(default_factory=AutoStop)

    @model_validator(mode="after")
    def _arms_consistent(self) -> ExperimentSpec:
        names = [arm.name for arm in self.arms]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise FieldProblem(
                    ("arms", i, "name"),
                    f"arm name {name!r} is already used by arms[{names.index(name)}]; "
                    "give each arm its own name",
                )
        if HOLDOUT_ARM in names:
            raise ValueError(
                f"arm name {HOLDOUT_ARM!r} is reserved for the global holdout; rename that arm"
            )
        if self.assignment.stratify_by:
            try:
                arm_block([(arm.name, arm.weight) for arm in self.arms])
            except ValueError as error:
                raise ValueError(f"assignment.stratify_by: {error}") from None
        if all(arm.status == "stopped" for arm in self.arms):
            raise FieldProblem(
                ("arms", len(self.arms) - 1, "status"),
                "every arm is stopped; to stop the whole experiment set status: stopped at the "
                "top level, else keep at least one arm running",
            )
        if self.analysis.baseline is not None and self.analysis.baseline not in names:
            raise FieldProblem(
                ("analysis", "baseline"),
                f"{self.analysis.baseline!r} is not an arm; use one of {names}",
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
        """Every (channel, template) the arms use, fallbacks included."""
        used = {(step.channel, step.template) for arm in self.arms for step in arm.steps}
        fallbacks = {step.fallback_target() for arm in self.arms for step in arm.steps}
        return used | {target for target in fallbacks if target is not None}

    def shadow_steps(self) -> list[Step]:
        """The touch points a customer of an arm without steps (a control) is judged at: every
        distinct (when, channel, unless, fallback) of the other arms, in time order. The policy
        decides these as it would for a real message, and the result is recorded as "would have
        sent" (intent-to-treat), never sent."""
        seen: dict[tuple[object, ...], Step] = {}
        for arm in self.arms:
            for step in arm.steps:
                seen.setdefault((step.at, step.channel, step.unless, step.fallback), step)
        return sorted(seen.values(), key=lambda s: (s.at, s.channel, s.unless or ""))

    def step_for(self, arm: str, index: int, shadow: bool) -> Step | None:
        """The step an outbox row was scheduled from (None if the spec no longer has it)."""
        steps = self.shadow_steps() if shadow else self.arm(arm).steps
        return steps[index] if 0 <= index < len(steps) else None
