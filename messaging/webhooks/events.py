"""Provider webhook payloads -> :class:`models.delivery.IncomingEvent`: validated at the boundary
(pydantic), so a malformed batch is rejected whole before anything is stored.

SendGrid Event Webhook (a JSON array):

| event | message state | suppression (email) |
| --- | --- | --- |
| processed / deferred / delivered | accepted / deferred / delivered | |
| open / click | opened / clicked | |
| bounce | bounced | ``bounce`` when hard (``type: bounce``; ``blocked`` is soft) |
| dropped | dropped | by reason: bounced address, unsubscribed address, spam reporting address |
| spamreport | | ``spamreport`` |
| unsubscribe / group_unsubscribe | | ``unsubscribe`` |

Twilio status callbacks (form posts): ``MessageStatus`` queued/accepted/scheduled -> accepted,
sending/sent -> sent, delivered, undelivered, failed, read -> opened; error 21610 (the recipient
replied STOP to the sender) suppresses SMS, as do 21211/21614/30005/30006 (not a reachable mobile
number). Twilio inbound messages: STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT suppress SMS
(``stop``); START, YES, UNSTOP lift that stop; HELP, INFO are recorded (Twilio answers them).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from models.delivery import DeliveryStatus, IncomingEvent, SuppressionChange

MESSAGE_ID_ARG = "retain_message_id"
"""The key of Retain's message id in SendGrid ``custom_args`` and in Twilio's status callback URL."""

STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
START_WORDS = frozenset({"START", "YES", "UNSTOP"})
HELP_WORDS = frozenset({"HELP", "INFO"})


class PayloadError(ValueError):
    """The webhook body is not what the provider sends; the message says what is wrong."""


class SendGridEvent(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    event: str = Field(min_length=1, max_length=32)
    timestamp: StrictInt
    email: str | None = None
    sg_event_id: str | None = None
    sg_message_id: str | None = None
    type: str | None = None
    reason: str | None = None


_SENDGRID_STATUS: dict[str, DeliveryStatus] = {
    "processed": "accepted",
    "deferred": "deferred",
    "delivered": "delivered",
    "open": "opened",
    "click": "clicked",
    "bounce": "bounced",
    "dropped": "dropped",
}
_DROPPED = {
    "bounced address": "bounce",
    "unsubscribed address": "unsubscribe",
    "spam reporting address": "spamreport",
}


def _message_id(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _sendgrid_suppression(event: SendGridEvent) -> SuppressionChange | None:
    if event.event in ("unsubscribe", "group_unsubscribe"):
        return SuppressionChange("email", "unsubscribe")
    if event.event == "spamreport":
        return SuppressionChange("email", "spamreport")
    if event.event == "bounce" and (event.type or "bounce") == "bounce":
        return SuppressionChange("email", "bounce")
    if event.event == "dropped":
        reason = _DROPPED.get((event.reason or "").strip().lower())
        return SuppressionChange("email", reason) if reason else None
    return None


def sendgrid_events(body: bytes) -> list[IncomingEvent]:
    """The events of one SendGrid Event Webhook request; :class:`PayloadError` if it is not a
    JSON array of events."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PayloadError(f"the body is not JSON: {error}") from None
    if not isinstance(data, list):
        raise PayloadError("expected a JSON array of events")
    out = []
    for index, item in enumerate(data):
        if not isinstance(item, dict):
            raise PayloadError(f"event {index} is not a JSON object")
        try:
            event = SendGridEvent.model_validate(item)
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise PayloadError(f"event {index}: {where}: {first['msg']}") from None
        event_id = (
            event.sg_event_id
            or "sha256:" + hashlib.sha256(json.dumps(item, sort_keys=True).encode()).hexdigest()
        )
        out.append(
            IncomingEvent(
                provider="sendgrid",
                event_id=event_id,
                event=event.event,
                occurred_at=datetime.fromtimestamp(event.timestamp, UTC),
                payload=item,
                message_id=_message_id(item.get(MESSAGE_ID_ARG)),
                provider_message_id=event.sg_message_id,
                status=_SENDGRID_STATUS.get(event.event),
                error_code=(event.reason or None) and str(event.reason)[:32]
                if event.event in ("bounce", "dropped")
                else None,
                email=event.email,
                suppression=_sendgrid_suppression(event),
            )
        )
    return out


_TWILIO_STATUS: dict[str, DeliveryStatus] = {
    "queued": "accepted",
    "accepted": "accepted",
    "scheduled": "accepted",
    "sending": "sent",
    "sent": "sent",
    "delivered": "delivered",
    "undelivered": "undelivered",
    "failed": "failed",
    "read": "opened",
}
_UNREACHABLE = {"21211", "21614", "30005", "30006"}
_SID = re.compile(r"^(SM|MM)[0-9a-fA-F]{32}$")


def _required(form: Mapping[str, str], name: str) -> str:
    value = (form.get(name) or "").strip()
    if not value:
        raise PayloadError(f"missing form field {name}")
    return value


def twilio_status(
    form: Mapping[str, str], query: Mapping[str, str], now: datetime
) -> IncomingEvent:
    """A Twilio status callback (form fields, and the callback URL's query)."""
    sid = _required(form, "MessageSid")
    status = _required(form, "MessageStatus").lower()
    if not _SID.match(sid):
        raise PayloadError(f"MessageSid {sid[:40]!r} is not a Twilio message SID")
    error = (form.get("ErrorCode") or "").strip() or None
    suppression = None
    if error == "21610":
        suppression = SuppressionChange("sms", "stop")
    elif error in _UNREACHABLE:
        suppression = SuppressionChange("sms", "invalid_number")
    return IncomingEvent(
        provider="twilio",
        event_id=f"{sid}:{status}",
        event=status,
        occurred_at=now,
        payload=dict(form),
        message_id=_message_id(query.get(MESSAGE_ID_ARG)),
        provider_message_id=sid,
        status=_TWILIO_STATUS.get(status),
        error_code=error,
        phone=(form.get("To") or "").strip() or None,
        suppression=suppression,
    )


def keyword(body: str, opt_out_type: str | None = None) -> str | None:
    """``stop``, ``start``, ``help`` or None for an inbound SMS body (the whole message is the
    keyword, any case, surrounding spaces and punctuation ignored; Twilio's ``OptOutType`` wins)."""
    if opt_out_type:
        kind = opt_out_type.strip().lower()
        if kind in ("stop", "start", "help"):
            return kind
    word = re.sub(r"[\s.!?,;:]+", "", body).upper()
    if word in STOP_WORDS:
        return "stop"
    if word in START_WORDS:
        return "start"
    if word in HELP_WORDS:
        return "help"
    return None


def twilio_inbound(form: Mapping[str, str], now: datetime) -> IncomingEvent:
    """An inbound SMS: STOP/START/HELP and their synonyms (see the module docstring)."""
    sid = _required(form, "MessageSid")
    sender = _required(form, "From")
    kind = keyword(form.get("Body") or "", form.get("OptOutType"))
    suppression = None
    if kind == "stop":
        suppression = SuppressionChange("sms", "stop")
    elif kind == "start":
        suppression = SuppressionChange("sms", "stop", lift=True)
    return IncomingEvent(
        provider="twilio",
        event_id=f"{sid}:inbound",
        event=f"inbound_{kind}" if kind else "inbound",
        occurred_at=now,
        payload=dict(form),
        provider_message_id=None,
        phone=sender,
        suppression=suppression,
    )
