"""The webhook receiver: a FastAPI app that providers (and customers' mail clients) call.

| route | who calls it |
| --- | --- |
| ``POST /webhooks/sendgrid/events`` | SendGrid's signed Event Webhook (a JSON batch) |
| ``POST /webhooks/twilio/status`` | Twilio status callbacks (``?retain_message_id=N`` in the URL) |
| ``POST /webhooks/twilio/inbound`` | Twilio inbound messages (STOP, START, HELP) |
| ``GET/POST /unsubscribe/{customer}/{token}`` | the unsubscribe link; POST is RFC 8058 one-click |
| ``GET /healthz`` | load balancers |

Every request is checked before anything changes: body size (413), signature (403; an endpoint
whose key is not configured answers 503), then the payload (400). Further routers (Stripe, say)
are mounted with ``create_app(..., routers=[...])``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import col
from starlette.datastructures import ImmutableMultiDict
from starlette.routing import BaseRoute

from messaging.links import link_secret, message_ref, verify_link_token
from messaging.webhooks.events import (
    PayloadError,
    sendgrid_events,
    twilio_inbound,
    twilio_status,
)
from messaging.webhooks.settings import WebhookSettings
from messaging.webhooks.verify import check_sendgrid_key, verify_sendgrid, verify_twilio
from models.customer_data import Customer
from models.delivery import IncomingEvent, SuppressionChange, record_events
from models.records import Message

SENDGRID_SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
SENDGRID_TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"
TWILIO_SIGNATURE = "X-Twilio-Signature"
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'

Clock = Callable[[], float]


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, or 413 as soon as it is larger than ``limit`` bytes (never read whole)."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise HTTPException(413, f"request body larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"request body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _form(body: bytes) -> ImmutableMultiDict[str, str]:
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body))
    except (UnicodeDecodeError, ValueError):
        raise HTTPException(400, "the body is not a URL-encoded form") from None
    return ImmutableMultiDict(pairs)


def _outcome_json(outcome: Any) -> dict[str, Any]:
    return {
        "stored": outcome.stored,
        "duplicates": outcome.duplicates,
        "suppressed": outcome.suppressed,
        "lifted": outcome.lifted,
        "unmatched": outcome.unmatched,
    }


def provider_router(engine: Engine, settings: WebhookSettings, clock: Clock) -> APIRouter:
    router = APIRouter(prefix="/webhooks")

    def now() -> datetime:
        return datetime.fromtimestamp(clock(), UTC)

    @router.post("/sendgrid/events")
    async def sendgrid(request: Request) -> JSONResponse:
        body = await read_body(request, settings.max_body)
        if not settings.sendgrid_public_key:
            raise HTTPException(503, "SendGrid verification key not configured")
        if not verify_sendgrid(
            settings.sendgrid_public_key,
            body,
            request.headers.get(SENDGRID_SIGNATURE),
            request.headers.get(SENDGRID_TIMESTAMP),
            clock(),
            settings.tolerance_seconds,
        ):
            raise HTTPException(403, "bad or missing SendGrid signature")
        try:
            events = sendgrid_events(body)
        except PayloadError as error:
            raise HTTPException(400, str(error)) from None
        return JSONResponse(_outcome_json(record_events(engine, events)))

    def _verified_form(request: Request, body: bytes) -> ImmutableMultiDict[str, str]:
        if not settings.twilio_auth_token or not settings.public_url:
            raise HTTPException(503, "Twilio auth token or public URL not configured")
        form = _form(body)
        url = settings.public_url + request.url.path
        if request.url.query:
            url += "?" + request.url.query
        if not verify_twilio(
            settings.twilio_auth_token, url, form, request.headers.get(TWILIO_SIGNATURE)
        ):
            raise HTTPException(403, "bad or missing X-Twilio-Signature")
        return form

    @router.post("/twilio/status")
    async def status(request: Request) -> Response:
        body = await read_body(request, settings.max_body)
        form = _verified_form(request, body)
        try:
            event = twilio_status(form, request.query_params, now())
        except PayloadError as error:
            raise HTTPException(400, str(error)) from None
        record_events(engine, [event])
        return Response(status_code=204)

    @router.post("/twilio/inbound")
    async def inbound(request: Request) -> Response:
        body = await read_body(request, settings.max_body)
        form = _verified_form(request, body)
        try:
            event = twilio_inbound(form, now())
        except PayloadError as error:
            raise HTTPException(400, str(error)) from None
        record_events(engine, [event])
        # Twilio answers STOP/START/HELP itself (and blocks sends after STOP); nothing to add.
        return Response(EMPTY_TWIML, media_type="text/xml")

    return router


_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{title}</title></head>
<body style="font-family:sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem">{body}</body></html>"""


def unsubscribe_router(engine: Engine, clock: Clock) -> APIRouter:
    """The unsubscribe link of every email; POST is the one-click unsubscribe of RFC 8058 (the
    ``List-Unsubscribe-Post: List-Unsubscribe=One-Click`` header points here)."""
    router = APIRouter()

    def customer_of(customer: str, token: str) -> tuple[int, str]:
        verified = verify_link_token("unsubscribe", customer, token)
        if verified is None:
            raise HTTPException(403, "this unsubscribe link is not valid")
        with engine.connect() as conn:
            found = conn.execute(
                select(col(Customer.id)).where(col(Customer.external_id) == customer)
            ).first()
        if found is None:
            raise HTTPException(404, "unknown customer")
        return int(found[0]), verified.ref

    @router.get("/unsubscribe/{customer}/{token}", response_class=HTMLResponse)
    def confirm(customer: str, token: str) -> HTMLResponse:
        # A GET never unsubscribes: mail scanners follow links. It asks for a click instead.
        customer_of(customer, token)
        form = (
            "<h1>Unsubscribe</h1><p>Stop receiving these emails?</p>"
            '<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">'
            '<button type="submit">Unsubscribe</button></form>'
        )
        return HTMLResponse(_PAGE.format(title="Unsubscribe", body=form))

    @router.post("/unsubscribe/{customer}/{token}", response_class=HTMLResponse)
    async def one_click(customer: str, token: str, request: Request) -> HTMLResponse:
        await read_body(request, 4096)
        customer_id, ref = customer_of(customer, token)
        with engine.connect() as conn:
            keys = conn.execute(
                select(col(Message.id), col(Message.idempotency_key)).where(
                    col(Message.customer_id) == customer_id, col(Message.channel) == "email"
                )
            ).all()
        message_id = next((int(i) for i, key in keys if message_ref(key) == ref), None)
        event = IncomingEvent(
            provider="link",
            event_id=f"link:unsubscribe:{customer}:{ref}",
            event="unsubscribe",
            occurred_at=datetime.fromtimestamp(clock(), UTC),
            payload={"customer": customer, "ref": ref},
            message_id=message_id,
            customer_id=customer_id,
            suppression=SuppressionChange("email", "unsubscribe"),
        )
        record_events(engine, [event])
        body = f"<h1>You're unsubscribed</h1><p>{escape('You will not get these emails any more.')}</p>"
        return HTMLResponse(_PAGE.format(title="Unsubscribed", body=body))

    return router


def create_app(
    engine: Engine,
    settings: WebhookSettings | None = None,
    *,
    clock: Clock = time.time,
    routers: Sequence[APIRouter] = (),
    routes: Sequence[BaseRoute] = (),
) -> FastAPI:
    """The webhook app over ``engine``. ``settings`` default to the environment
    (:meth:`WebhookSettings.from_env`); ``routers`` and plain Starlette ``routes`` are mounted as
    well (Stripe's receiver is one: ``models.imports.stripe_webhook.stripe_webhook_route``)."""
    settings = settings or WebhookSettings.from_env()
    if settings.sendgrid_public_key:
        check_sendgrid_key(settings.sendgrid_public_key)
    link_secret()  # load (or create) the link key now, not on a customer's click
    app = FastAPI(title="Retain webhooks", docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(provider_router(engine, settings, clock))
    app.include_router(unsubscribe_router(engine, clock))
    for router in routers:
        app.include_router(router)
    app.router.routes.extend(routes)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
