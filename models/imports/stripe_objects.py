"""Stripe API objects (plain dicts) as flat source rows, and the mappings that read them: the API
sync and the webhooks go through the same conversion, checks and merge as a file import.

Written against Stripe's current object shapes, with the older places of moved fields as
fallbacks (a subscription's period end on its items; an invoice's subscription under ``parent``).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from models.imports.mapping import Mapping

Row = dict[str, str | None]

_SUBSCRIPTION_STATUSES = {
    "trialing": "trialing",
    "active": "active",
    "past_due": "past_due",
    "unpaid": "past_due",
    "paused": "paused",
    "canceled": "canceled",
    "incomplete_expired": "canceled",
}

API_MAPPINGS: dict[str, Mapping] = {
    "customers": Mapping.model_validate(
        {
            "entity": "customers",
            "timestamps": "unix",
            "columns": {
                "external_id": "id",
                "name": "name",
                "email": "email",
                "phone": "phone",
                "country": "country",
                "currency": "currency",
                "created_at": "created",
            },
        }
    ),
    "subscriptions": Mapping.model_validate(
        {
            "entity": "subscriptions",
            "timestamps": "unix",
            "amounts": "stripe",
            "columns": {
                "external_id": "id",
                "customer": "customer",
                "currency": "currency",
                "plan": "plan",
                "billing_interval": "interval",
                "mrr_cents": {"column": "amount", "per_interval": True},
                "status": {"column": "status", "values": _SUBSCRIPTION_STATUSES},
                "started_at": "start_date",
                "current_period_end": "current_period_end",
                "canceled_at": "canceled_at",
                "cancel_reason": "cancel_reason",
            },
        }
    ),
    "invoices": Mapping.model_validate(
        {
            "entity": "invoices",
            "timestamps": "unix",
            "amounts": "stripe",
            "columns": {
                "external_id": "id",
                "customer": "customer",
                "currency": "currency",
                "subscription": "subscription",
                "amount_cents": "amount_due",
                "status": {
                    "column": "status",
                    "values": {"draft": "open", "uncollectible": "failed"},
                },
                "attempts": "attempt_count",
                "due_at": "due",
                "paid_at": "paid_at",
            },
        }
    ),
    "payment_methods": Mapping.model_validate(
        {
            "entity": "payment_methods",
            "timestamps": "unix",
            "columns": {
                "external_id": "id",
                "customer": "customer",
                "brand": "brand",
                "last4": "last4",
                "exp_month": "exp_month",
                "exp_year": "exp_year",
                "created_at": "created",
            },
        }
    ),
}
# A customer's full list of cards, read with its default: here ``is_default`` is known.
LISTED_CARDS = API_MAPPINGS["payment_methods"].model_copy(
    update={"columns": {**API_MAPPINGS["payment_methods"].columns, "is_default": "is_default"}}
)
PAUSED_SUBSCRIPTIONS = API_MAPPINGS["subscriptions"].model_copy(
    update={"columns": {**API_MAPPINGS["subscriptions"].columns, "paused_at": "paused_at"}}
)


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def customer_row(obj: dict[str, Any]) -> Row:
    address = obj.get("address") or {}
    return {
        "id": obj["id"],
        "name": _text(obj.get("name")) or "",
        "email": _text(obj.get("email")),
        "phone": _text(obj.get("phone")),
        "country": _text(address.get("country")),
        "currency": _text(obj.get("currency")),
        "created": _text(obj.get("created")),
    }


def _interval(price: dict[str, Any]) -> str | None:
    recurring = price.get("recurring") or price
    interval, count = recurring.get("interval"), recurring.get("interval_count") or 1
    named: dict[tuple[Any, Any], str] = {
        ("month", 1): "month",
        ("month", 3): "quarter",
        ("year", 1): "year",
    }
    if (interval, count) in named:
        return named[(interval, count)]
    return f"{count} {interval}" if interval else None


def subscription_row(obj: dict[str, Any], paused_at: int | None = None) -> Row:
    items = (obj.get("items") or {}).get("data") or []
    first = items[0] if items else {}
    price = first.get("price") or first.get("plan") or obj.get("plan") or {}
    amount = sum(
        ((item.get("price") or item.get("plan") or {}).get("unit_amount") or 0)
        * (item.get("quantity") or 1)
        for item in items
    )
    details = obj.get("cancellation_details") or {}
    return {
        "id": obj["id"],
        "customer": _text(obj.get("customer")),
        "currency": _text(obj.get("currency") or price.get("currency")),
        "plan": _text(price.get("nickname") or price.get("lookup_key") or price.get("id")),
        "interval": _interval(price),
        "amount": str(amount),
        "status": _text(obj.get("status")),
        "start_date": _text(obj.get("start_date") or obj.get("created")),
        "current_period_end": _text(
            obj.get("current_period_end") or first.get("current_period_end")
        ),
        "canceled_at": _text(obj.get("canceled_at")),
        "cancel_reason": _text(details.get("reason")),
        "paused_at": _text(paused_at) if obj.get("status") == "paused" else None,
    }


def invoice_row(obj: dict[str, Any], failed: bool = False) -> Row:
    """``failed``: the event said a payment attempt failed (the invoice itself stays ``open``)."""
    parent = (obj.get("parent") or {}).get("subscription_details") or {}
    status = obj.get("status")
    if status == "open" and (failed or (obj.get("attempted") and obj.get("attempt_count"))):
        status = "failed"
    transitions = obj.get("status_transitions") or {}
    return {
        "id": obj["id"],
        "customer": _text(obj.get("customer")),
        "subscription": _text(obj.get("subscription") or parent.get("subscription")),
        "currency": _text(obj.get("currency")),
        "amount_due": _text(obj.get("amount_due")),
        "status": _text(status),
        "attempt_count": _text(obj.get("attempt_count")),
        "due": _text(obj.get("due_date") or obj.get("created")),
        "paid_at": _text(transitions.get("paid_at")),
    }


def default_card(customer: dict[str, Any]) -> str | None:
    """The id of the card Stripe charges a customer's invoices to: the invoice settings' default
    payment method, else the legacy default source (either may be expanded to an object)."""
    settings = customer.get("invoice_settings") or {}
    for value in (settings.get("default_payment_method"), customer.get("default_source")):
        if isinstance(value, dict):
            value = value.get("id")
        if value:
            return str(value)
    return None


def listed_cards(cards: list[dict[str, Any]], customer: dict[str, Any] | None) -> list[Row]:
    """A customer's cards as rows with ``is_default``: its default card, or, when it has none
    set, its newest card (the one a team would call the card on file)."""
    default = default_card(customer) if customer else None
    if default not in {card["id"] for card in cards}:
        newest = max(cards, key=lambda card: (card.get("created") or 0, card["id"]), default=None)
        default = newest["id"] if newest else None
    return [
        {**payment_method_row(card), "is_default": "true" if card["id"] == default else "false"}
        for card in cards
    ]


def payment_method_row(obj: dict[str, Any], created: int | None = None) -> Row:
    """A PaymentMethod (``pm_``, card details under ``card``) or a legacy Card source (``card_``)."""
    card = obj.get("card") or obj
    return {
        "id": obj["id"],
        "customer": _text(obj.get("customer")),
        "brand": _text(str(card.get("brand") or "card").lower()),
        "last4": _text(card.get("last4")),
        "exp_month": _text(card.get("exp_month")),
        "exp_year": _text(card.get("exp_year")),
        "created": _text(obj.get("created") or created),
    }


def rows_table(rows: list[Row], mapping: Mapping) -> pa.Table:
    """Flat rows as the string table a mapping reads."""
    return pa.table(
        {
            name: pa.array([row.get(name) for row in rows], pa.string())
            for name in mapping.source_columns()
        }
    )
