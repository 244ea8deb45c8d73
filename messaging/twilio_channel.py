"""SMS through Twilio's Messages API, with the official ``twilio`` client. The only module that
imports it.

Each message is sent from a messaging service (``MessagingServiceSid``) or a from-number, with a
``StatusCallback`` URL that carries Retain's message id (``?retain_message_id=...``), so the
delivery webhook names the message even before its SID is recorded.

Errors: Twilio raises ``TwilioRestException`` (legacy bodies) or ``TwilioServiceException``
(RFC 9457 bodies), both :class:`TwilioException`; ``requests`` raises its own for timeouts and
refused connections. 429 and 5xx are transient (the 429's ``Retry-After`` is honoured), 401/403 stop
the run, other 4xx are permanent; 21610 (the recipient replied STOP) also suppresses the customer's
SMS. A read timeout or an answer without a SID is an unknown outcome, reconciled through the
Messages list (recipient, date and body) rather than resent.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from messaging.channels import ChannelError, OutgoingMessage, Receipt, SendRecord, body_digest

SUPPRESSING_CODES = {21610: "sms_stop"}
"""Twilio error codes that mean the customer must not get SMS from us any more."""


class _HttpClient(TwilioHttpClient):
    """Twilio's transport, remembering the last response's headers (for ``Retry-After``)."""

    last_headers: dict[str, str]

    def request(self, *args: Any, **kwargs: Any) -> Response:
        self.last_headers = {}
        response = super().request(*args, **kwargs)
        self.last_headers = {k.lower(): v for k, v in dict(response.headers or {}).items()}
        return response


class TwilioChannel:
    """Sends SMS through Twilio (``send``) and finds sent ones again (``find_sent``). One client
    per thread: the dispatcher's senders call ``send`` concurrently."""

    provider: str = "twilio"

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        messaging_service_sid: str | None = None,
        from_number: str | None = None,
        base_url: str = "https://api.twilio.com",
        status_callback_base_url: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        if not (messaging_service_sid or from_number):
            raise ValueError("Twilio needs a messaging service SID or a from-number")
        self.account_sid = account_sid
        self._token = auth_token
        self.messaging_service_sid = messaging_service_sid
        self.from_number = from_number
        self.base_url = base_url.rstrip("/")
        self.status_callback_base_url = status_callback_base_url
        self.timeout = timeout
        self._local = threading.local()

    def _client(self) -> tuple[Client, _HttpClient]:
        client = getattr(self._local, "client", None)
        if client is None:
            http = _HttpClient(timeout=self.timeout)
            client = Client(self.account_sid, self._token, http_client=http)
            client.api.base_url = self.base_url
            self._local.client, self._local.http = client, http
        return client, self._local.http

    def status_callback(self, message: OutgoingMessage) -> str | None:
        """The status-callback URL for ``message``, or None without a configured base URL."""
        if not self.status_callback_base_url:
            return None
        joiner = "&" if "?" in self.status_callback_base_url else "?"
        query = urlencode({"retain_message_id": message.message_id})
        return f"{self.status_callback_base_url}{joiner}{query}"

    def send(self, message: OutgoingMessage) -> Receipt:
        """POST .../Messages.json; the receipt holds the message SID."""
        if message.channel != "sms":
            raise ChannelError(f"Twilio sends SMS, not {message.channel!r}", permanent=True)
        client, http = self._client()
        sender: dict[str, str] = (
            {"messaging_service_sid": self.messaging_service_sid}
            if self.messaging_service_sid
            else {"from_": self.from_number or ""}
        )
        callback = self.status_callback(message)
        extra: dict[str, str] = {"status_callback": callback} if callback else {}
        try:
            created = client.messages.create(
                to=message.to, body=message.rendered.text, **sender, **extra
            )
        except TwilioException as error:
            raise _twilio_error(
                error, http, f"Twilio refused message {message.idempotency_key}"
            ) from None
        except requests.exceptions.ConnectTimeout as error:
            raise ChannelError(f"cannot connect to Twilio at {self.base_url}: {error}") from None
        except requests.exceptions.Timeout:
            raise ChannelError(
                f"Twilio did not answer within {self.timeout:g} s for message "
                f"{message.idempotency_key}; it may have been accepted, so it is reconciled",
                unknown_outcome=True,
            ) from None
        except requests.exceptions.ConnectionError as error:
            raise ChannelError(f"cannot reach Twilio at {self.base_url}: {error}") from None
        except ValueError as error:  # the 2xx body was not JSON
            raise ChannelError(
                f"Twilio answered message {message.idempotency_key} with a malformed body "
                f"({error}); it is reconciled before any resend",
                unknown_outcome=True,
            ) from None
        if not created.sid:
            raise ChannelError(
                f"Twilio answered message {message.idempotency_key} without a message SID "
                "(malformed answer); it is reconciled before any resend",
                unknown_outcome=True,
            )
        return Receipt(self.provider, str(created.sid))

    def find_sent(self, record: SendRecord) -> Receipt | None:
        """A message to the same number, created since the attempt began, with the same body."""
        client, http = self._client()
        since = record.started_at - timedelta(minutes=5)
        try:
            listed = client.messages.list(to=record.to, date_sent_after=since, limit=200)
        except TwilioException as error:
            raise _twilio_error(error, http, "Twilio's Messages list refused a lookup") from None
        except (requests.exceptions.RequestException, ValueError) as error:
            raise ChannelError(f"cannot ask Twilio's Messages list: {error}") from None
        for item in listed:
            if item.body is not None and body_digest(item.body) == record.body_sha256 and item.sid:
                return Receipt(self.provider, str(item.sid))
        return None


def _retry_after(headers: dict[str, str]) -> float | None:
    try:
        return max(float(headers["retry-after"]), 0.0) if "retry-after" in headers else None
    except ValueError:
        return None


def _twilio_error(error: TwilioException, http: _HttpClient, what: str) -> ChannelError:
    if isinstance(error, TwilioRestException):
        status, code, text = int(error.status), error.code, error.msg
    elif isinstance(error, TwilioServiceException):
        status, code, text = int(error.status), error.code, f"{error.title}: {error.detail or ''}"
    else:
        return ChannelError(f"{what}: {error}; retried later")
    label = f"HTTP {status}, Twilio error {code}" if code else f"HTTP {status}"
    if status == 429 or status >= 500:
        retry = _retry_after(getattr(http, "last_headers", {})) if status == 429 else None
        return ChannelError(
            f"{what}: {label}: {text}; retried later", code=str(code or status), retry_after=retry
        )
    if status in (401, 403):
        return ChannelError(
            f"{what}: {label}: {text}; check RETAIN_TWILIO_ACCOUNT_SID and the auth token",
            code=str(code or status),
            fatal=True,
        )
    suppress = SUPPRESSING_CODES.get(int(code)) if isinstance(code, int) else None
    return ChannelError(
        f"{what}: {label}: {text}", permanent=True, code=str(code or status), suppress=suppress
    )
