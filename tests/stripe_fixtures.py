"""Stripe API objects shaped as the API returns them (current API version: a subscription's
period on its items, an invoice's subscription under ``parent``)."""

from __future__ import annotations

from typing import Any

T0 = 1_780_000_000
DAY = 86_400


def customer(i: int, created: int) -> dict[str, Any]:
    return {
        "id": f"cus_{i}",
        "object": "customer",
        "created": created,
        "name": ["Åsa Öberg", "山田 太郎", "Smith, John", "Дмитрий Иванов"][i % 4],
        "email": f"user{i}@example.com",
        "phone": "+46701234567" if i % 2 == 0 else None,
        "address": {"country": "SE" if i % 2 == 0 else "US"},
        "currency": "sek" if i % 2 == 0 else "usd",
    }


def subscription(
    i: int, created: int, status: str = "active", interval: str = "month"
) -> dict[str, Any]:
    return {
        "id": f"sub_{i}",
        "object": "subscription",
        "customer": f"cus_{i}",
        "created": created,
        "start_date": created,
        "status": status,
        "canceled_at": None,
        "cancellation_details": {"reason": None},
        "items": {
            "object": "list",
            "data": [
                {
                    "id": f"si_{i}",
                    "quantity": 2,
                    "current_period_end": created + 30 * DAY,
                    "price": {
                        "id": f"price_team_{interval}",
                        "nickname": "team",
                        "unit_amount": 2_450 if interval == "month" else 29_400,
                        "recurring": {"interval": interval, "interval_count": 1},
                    },
                }
            ],
        },
    }


def invoice(i: int, created: int, status: str = "open", attempts: int = 0) -> dict[str, Any]:
    return {
        "id": f"in_{i}",
        "object": "invoice",
        "customer": f"cus_{i}",
        "created": created,
        "due_date": None,
        "amount_due": 4_900,
        "attempt_count": attempts,
        "attempted": attempts > 0,
        "status": status,
        "status_transitions": {"paid_at": created + 60 if status == "paid" else None},
        "parent": {
            "type": "subscription_details",
            "subscription_details": {"subscription": f"sub_{i}"},
        },
    }


def card(i: int, created: int, exp_year: int = 2027) -> dict[str, Any]:
    return {
        "id": f"pm_{i}",
        "object": "payment_method",
        "customer": f"cus_{i}",
        "created": created,
        "type": "card",
        "card": {"brand": "visa", "last4": f"{4240 + i}", "exp_month": 8, "exp_year": exp_year},
    }


def event(event_id: str, kind: str, created: int, obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": event_id,
        "object": "event",
        "type": kind,
        "created": created,
        "api_version": "2026-11-20",
        "livemode": False,
        "data": {"object": obj},
    }
