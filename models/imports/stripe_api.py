"""The one module that imports the ``stripe`` SDK: a client on a configurable base address,
auto-paginated lists, and webhook signature checks. Callers get plain dicts and this module's
errors, never SDK types, and the API key never appears in a message.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import stripe

PAGE = 100
WEBHOOK_TOLERANCE_SECONDS = 300
LISTED = ("customers", "subscriptions", "invoices", "events")


class StripeApiError(Exception):
    """Stripe refused or failed a request; the message is one line without the key."""


class WebhookRejected(Exception):
    """A webhook whose signature is wrong or whose timestamp is outside the tolerance."""


def make_client(api_key: str, api_base: str) -> stripe.StripeClient:
    """A client for ``api_base`` (Stripe's, or a local stand-in), retrying network errors twice."""
    return stripe.StripeClient(api_key, base_addresses={"api": api_base}, max_network_retries=2)


def list_objects(
    client: stripe.StripeClient,
    resource: str,
    created_after: int | None = None,
    extra: dict[str, Any] | None = None,
    page_size: int = PAGE,
) -> Iterator[dict[str, Any]]:
    """Every object of ``resource`` (created after ``created_after``, Unix seconds), page by page."""
    services: dict[str, Any] = {
        "customers": client.v1.customers,
        "subscriptions": client.v1.subscriptions,
        "invoices": client.v1.invoices,
        "events": client.v1.events,
    }
    params: dict[str, Any] = {"limit": page_size, **(extra or {})}
    if created_after is not None:
        params["created"] = {"gt": created_after}
    with _errors(resource):
        for item in services[resource].list(params=params).auto_paging_iter():
            yield item.to_dict()


def list_payment_methods(
    client: stripe.StripeClient, customer: str, page_size: int = PAGE
) -> Iterator[dict[str, Any]]:
    """A customer's cards."""
    with _errors("payment methods"):
        listing = client.v1.customers.payment_methods.list(
            customer, params={"limit": page_size, "type": "card"}
        )
        for item in listing.auto_paging_iter():
            yield item.to_dict()


def retrieve_customer(client: stripe.StripeClient, customer: str) -> dict[str, Any]:
    """One customer (its default payment method and source are what Retain reads)."""
    with _errors("a customer"):
        return dict(client.v1.customers.retrieve(customer).to_dict())


def verify_event(payload: bytes, signature: str | None, secret: str) -> dict[str, Any]:
    """The event in ``payload`` if ``signature`` (the ``Stripe-Signature`` header) is Stripe's
    HMAC of it with ``secret``, made within the last five minutes; else :class:`WebhookRejected`."""
    if not signature:
        raise WebhookRejected("no Stripe-Signature header")
    try:
        event = stripe.Webhook.construct_event(
            payload, signature, secret, tolerance=WEBHOOK_TOLERANCE_SECONDS
        )
    except stripe.SignatureVerificationError as error:
        raise WebhookRejected(str(error.user_message or error).split("\n")[0]) from None
    except ValueError:
        raise WebhookRejected("the body is not a JSON event") from None
    return dict(event.to_dict())


@contextmanager
def _errors(what: str) -> Iterator[None]:
    """Turn SDK errors into :class:`StripeApiError` with a one-line, key-free message."""
    try:
        yield
    except stripe.StripeError as error:
        status = f" {error.http_status}" if error.http_status else ""
        code = f" ({error.code})" if error.code else ""
        detail = "check the key's permissions and RETAIN_STRIPE_API_BASE"
        if isinstance(error, stripe.AuthenticationError):
            detail = "the API key was refused; set a valid restricted key"
        elif isinstance(error, stripe.RateLimitError):
            detail = "rate limited; the next sync resumes from the stored cursor"
        elif isinstance(error, stripe.APIConnectionError):
            detail = "could not reach the API; check RETAIN_STRIPE_API_BASE and the network"
        raise StripeApiError(
            f"Stripe answered{status}{code} while listing {what}: {detail}"
        ) from None
