"""Whether an experiment's SMS templates can exceed its segment budget (``messaging.sms_max_segments``).

A template is rendered, in every locale it has, for a deliberately long customer: a 15-letter name
(4 characters in Chinese), an ``American Express`` card expiring in December, an amount due of
99,999.99 US dollars, and links for an 18-character customer id (as long as Stripe's) at the
configured ``RETAIN_APP_BASE_URL``. If that worst case takes more parts than the budget, the
template *can* exceed it: `retain validate` says so as a warning (the experiment still runs).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from experiments.spec import ExperimentSpec
from messaging.render import (
    MessageContext,
    OfferContext,
    TemplateError,
    available_templates,
    build_links,
    message_token,
    render,
    sms_encoding,
)

LONG_NAMES = {"zh": "欧阳明月", "th": "ประเสริฐศักดิ์ดี"}
LONG_NAME = "Maximilianusson"
LONG_CUSTOMER_ID = "cus_" + "W" * 14


@dataclass(frozen=True)
class SegmentCheck:
    template: str
    locale: str
    segments: int
    encoding: str
    text: str


def worst_case_context(locale: str) -> MessageContext:
    """The long customer of the module docstring."""
    name = LONG_NAMES.get(locale.split("-", 1)[0], LONG_NAME)
    ref = message_token(f"x:{LONG_CUSTOMER_ID}:arm:0")
    return MessageContext(
        links=build_links(LONG_CUSTOMER_ID, ref),
        first_name=name,
        name=f"{name} {name}",
        plan="Business",
        card_brand="amex",
        card_last4="0000",
        card_exp_month=12,
        card_exp_year=2099,
        offer=OfferContext("discount", 100, 12, "WWWW-WWWW-WWWW"),
        currency="USD",
        amount_due_minor=9_999_999,
        due_date=date(2099, 12, 28),
        cancel_date=date(2099, 12, 28),
    )


def worst_cases(template: str) -> list[SegmentCheck]:
    """The worst case of SMS ``template`` in each locale it has."""
    locales = next((ls for t, c, ls in available_templates() if (t, c) == (template, "sms")), [])
    out = []
    for locale in locales:
        message = render("sms", template, locale, worst_case_context(locale))
        assert message.sms_segments is not None
        out.append(
            SegmentCheck(
                template, locale, message.sms_segments, sms_encoding(message.text), message.text
            )
        )
    return out


def budget_warnings(spec: ExperimentSpec) -> list[str]:
    """One line per SMS template (and locale) of ``spec`` that can exceed its segment budget."""
    budget = spec.messaging.sms_max_segments
    warnings = []
    for channel, template in sorted(spec.templates()):
        if channel != "sms":
            continue
        try:
            checks = worst_cases(template)
        except TemplateError as error:
            warnings.append(f"experiment {spec.key!r}: SMS template {template!r}: {error}")
            continue
        for check in checks:
            if check.segments > budget:
                warnings.append(
                    f"experiment {spec.key!r}: SMS template {template!r} ({check.locale}) can take "
                    f"{check.segments} segments ({check.encoding}) for a long name, amount or "
                    f"link, over messaging.sms_max_segments: {budget}; shorten the template or "
                    "raise the budget"
                )
    return warnings
