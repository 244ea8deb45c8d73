"""The template context of one message, from what the database knows about its customer: the
single place that turns customer, billing and offer facts into :class:`MessageContext`, used by
``retain preview`` (and meant for the dispatcher, so both render the same message)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from experiments.spec import Offer
from messaging.links import offer_code
from messaging.render import MessageContext, OfferContext, build_links, message_token


@dataclass(frozen=True)
class CustomerView:
    """What a message may say about its customer (all optional but the external id)."""

    external_id: str
    name: str = ""
    plan: str | None = None
    card_brand: str | None = None
    card_last4: str | None = None
    card_exp_month: int | None = None
    card_exp_year: int | None = None
    currency: str | None = None
    amount_due_minor: int | None = None
    due_date: date | None = None
    cancel_date: date | None = None


def idempotency_key(experiment_key: str, external_id: str, arm: str, step_index: int) -> str:
    """The outbox key of a step (as :func:`models.experiments.schedule_messages` writes it)."""
    return f"{experiment_key}:{external_id}:{arm}:{step_index}"


def message_context(
    key: str,
    experiment_key: str,
    customer: CustomerView,
    offer: Offer | None,
    code: str | None = None,
    base_url: str | None = None,
) -> MessageContext:
    """The context of the message with outbox key ``key``; an offer's code defaults to the one
    :func:`messaging.links.offer_code` gives (what the offer grant records)."""
    offer_context = None
    if offer is not None:
        offer_code_ = code or offer_code(experiment_key, customer.external_id, offer.kind)
        offer_context = OfferContext(offer.kind, offer.percent, offer.months, offer_code_)
    name = customer.name.strip()
    return MessageContext(
        links=build_links(customer.external_id, message_token(key), base_url),
        first_name=name.split()[0] if name else None,
        name=name or None,
        plan=customer.plan,
        card_brand=customer.card_brand,
        card_last4=customer.card_last4,
        card_exp_month=customer.card_exp_month,
        card_exp_year=customer.card_exp_year,
        offer=offer_context,
        currency=customer.currency,
        amount_due_minor=customer.amount_due_minor,
        due_date=customer.due_date,
        cancel_date=customer.cancel_date,
    )
