"""Email through SendGrid's v3 mail send, with the official ``sendgrid`` client. The only module that
imports it.

Each message carries Retain's ids in ``custom_args`` (``retain_message_id``, ``retain_key``), so
delivery webhooks and the Email Activity API can name it; categories per experiment and per arm;
``List-Unsubscribe`` with ``List-Unsubscribe-Post: List-Unsubscribe=One-Click`` (RFC 8058) built
from the message's own unsubscribe link; an optional ASM group; sandbox mode. The client has no
default timeout, so one is always set.

Errors (python_http_client raises an ``HTTPError`` per status; urllib raises ``URLError`` and
``TimeoutError``) become :class:`ChannelError`: 429 and 5xx are transient (``Retry-After`` or
``X-RateLimit-Reset`` tells when to come back), other 4xx are permanent, 401/403 stop the run
(a bad key fails every message alike), a timeout or an answer without a message id is an unknown
outcome that is reconciled through the Email Activity API rather than resent.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.error import URLError

from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient

from messaging.channels import ChannelError, OutgoingMessage, Receipt, SendRecord


class SendGridChannel:
    """Sends email through SendGrid (``send``) and finds sent ones again (``find_sent``)."""

    provider: str = "sendgrid"

    def __init__(
        self,
        api_key: str,
        *,
        from_email: str,
        from_name: str | None = None,
        reply_to: str | None = None,
        base_url: str = "https://api.sendgrid.com",
        asm_group_id: int | None = None,
        sandbox: bool = False,
        timeout: float = 10.0,
    ) -> None:
        self.client = SendGridAPIClient(api_key=api_key, host=base_url.rstrip("/"))
        self.client.client.timeout = timeout
        self.from_email = from_email
        self.from_name = from_name
        self.reply_to = reply_to
        self.asm_group_id = asm_group_id
        self.sandbox = sandbox

    def body(self, message: OutgoingMessage) -> dict[str, Any]:
        """The v3 mail send request body for ``message``."""
        rendered = message.rendered
        sender: dict[str, str] = {"email": self.from_email}
        if self.from_name:
            sender["name"] = self.from_name
        content = [{"type": "text/plain", "value": rendered.text}]
        if rendered.html is not None:
            content.append({"type": "text/html", "value": rendered.html})
        body: dict[str, Any] = {
            "personalizations": [{"to": [{"email": message.to}]}],
            "from": sender,
            "subject": rendered.subject or "",
            "content": content,
            "custom_args": {
                "retain_message_id": str(message.message_id),
                "retain_key": message.idempotency_key,
            },
            "categories": [
                f"retain:{message.experiment_key}"[:255],
                f"retain:{message.experiment_key}:{message.arm}"[:255],
            ],
        }
        if self.reply_to:
            body["reply_to"] = {"email": self.reply_to}
        if message.unsubscribe_url:
            body["headers"] = {
                "List-Unsubscribe": f"<{message.unsubscribe_url}>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            }
        if self.asm_group_id is not None:
            body["asm"] = {"group_id": self.asm_group_id}
        if self.sandbox:
            body["mail_settings"] = {"sandbox_mode": {"enable": True}}
        return body

    def send(self, message: OutgoingMessage) -> Receipt:
        """POST /v3/mail/send; the receipt holds SendGrid's ``X-Message-Id``."""
        if message.channel != "email":
            raise ChannelError(f"SendGrid sends email, not {message.channel!r}", permanent=True)
        try:
            response = self.client.send(self.body(message))
        except HTTPError as error:
            raise _http_error(
                error, f"SendGrid refused message {message.idempotency_key}"
            ) from None
        except TimeoutError as error:
            raise ChannelError(
                f"SendGrid did not answer within the timeout for message "
                f"{message.idempotency_key}: {error}; it may have been accepted, so it is reconciled",
                unknown_outcome=True,
            ) from None
        except URLError as error:
            raise ChannelError(
                f"cannot reach SendGrid at {self.client.host}: {error.reason}; retried later"
            ) from None
        headers = {k.lower(): v for k, v in (response.headers or {}).items()}
        message_id = headers.get("x-message-id")
        if response.status_code not in (200, 202) or not message_id:
            raise ChannelError(
                f"SendGrid answered {response.status_code} without an X-Message-Id for message "
                f"{message.idempotency_key} (malformed answer); it is reconciled before any resend",
                unknown_outcome=True,
            )
        return Receipt(self.provider, str(message_id))

    def find_sent(self, record: SendRecord) -> Receipt | None:
        """Ask the Email Activity API for a message carrying ``retain_message_id``."""
        query = f"unique_args['retain_message_id']=\"{record.message_id}\""
        try:
            response = self.client.client.messages.get(query_params={"query": query, "limit": 10})
        except HTTPError as error:
            raise _http_error(error, "SendGrid's Email Activity API refused a lookup") from None
        except (TimeoutError, URLError) as error:
            raise ChannelError(f"cannot ask SendGrid's Email Activity API: {error}") from None
        try:
            found = json.loads(response.body)["messages"]
            ids = [str(item["msg_id"]) for item in found]
        except (ValueError, KeyError, TypeError):
            raise ChannelError(
                "SendGrid's Email Activity API answered with a malformed body (no messages list); "
                "the message stays in flight until it can tell"
            ) from None
        if not ids:
            return None
        # Activity ids look like "<X-Message-Id>.filter...": keep the part mail send returned.
        return Receipt(self.provider, ids[0].split(".", 1)[0])


def _retry_after(headers: Any) -> float | None:
    values = {k.lower(): v for k, v in dict(headers or {}).items()}
    try:
        if "retry-after" in values:
            return max(float(values["retry-after"]), 0.0)
        if "x-ratelimit-reset" in values:
            return max(float(values["x-ratelimit-reset"]) - time.time(), 0.0)
    except ValueError:
        return None
    return None


def _error_text(body: Any) -> tuple[str, str | None]:
    """The provider's error messages and the first error's field, from ``{"errors": [...]}``."""
    raw = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body or "")
    try:
        errors = json.loads(raw)["errors"]
        texts = [str(e.get("message", "")) for e in errors]
        field = errors[0].get("field") if errors else None
        return "; ".join(t for t in texts if t) or raw[:200], field
    except (ValueError, KeyError, TypeError, AttributeError):
        return raw[:200] or "no error body", None


def _http_error(error: HTTPError, what: str) -> ChannelError:
    status = int(error.status_code)
    text, field = _error_text(error.body)
    where = f" (field {field})" if field else ""
    if status == 429 or status >= 500:
        return ChannelError(
            f"{what}: HTTP {status}: {text}; retried later",
            code=str(status),
            retry_after=_retry_after(error.headers) if status == 429 else None,
        )
    if status in (401, 403):
        return ChannelError(
            f"{what}: HTTP {status}: {text}; check RETAIN_SENDGRID_API_KEY and its permissions",
            code=str(status),
            fatal=True,
        )
    return ChannelError(f"{what}: HTTP {status}{where}: {text}", permanent=True, code=str(status))
