"""Channels: where a rendered message goes. Each is one object with a single ``send`` method (like an
httpx transport), so the dispatcher never knows which provider it talks to and tests swap channels
instead of patching.

This module holds the protocol and the local :class:`OutboxChannel`; provider channels (SendGrid,
Twilio) live in their own modules, each importing its SDK and nothing else, and translate the SDK's
errors into :class:`ChannelError` with ``permanent`` set (e.g. an invalid number is permanent, a 429
or a 5xx is transient).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from messaging.render import RenderedMessage


@dataclass(frozen=True)
class OutgoingMessage:
    """One message ready to send: the rendered content, the address and what it belongs to."""

    idempotency_key: str
    channel: str
    to: str
    rendered: RenderedMessage
    customer_id: int
    experiment_key: str
    arm: str
    message_id: int = 0
    """The outbox row id, carried to the provider (``custom_args``, status callback URL)."""
    unsubscribe_url: str | None = None


@dataclass(frozen=True)
class SendRecord:
    """What a dispatcher wrote down before handing a message to a provider: enough to ask the
    provider later whether it accepted it (reconciliation after a crash or a timeout)."""

    message_id: int
    idempotency_key: str
    channel: str
    experiment_key: str
    to: str
    body_sha256: str
    started_at: datetime


def body_digest(text: str) -> str:
    """sha256 of a message body, as recorded before sending and compared when reconciling."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Receipt:
    """What the provider answered: its name and its id for the message (for delivery webhooks)."""

    provider: str
    provider_message_id: str


class ChannelError(Exception):
    """A send that did not go through. ``permanent`` errors (bad address, rejected content) mark
    the message failed; transient ones (rate limit, outage) are retried later, not before
    ``retry_after`` seconds when the provider said so. ``unknown_outcome`` means the provider may
    have accepted it (a timeout after the request left): the message is reconciled, never blindly
    resent. ``code`` is the provider's error code or HTTP status; ``suppress`` names a suppression
    reason when the error means the customer must not be contacted on this channel again.
    ``fatal`` errors (bad credentials) would fail every message alike: the message goes back to
    pending and the dispatch stops, saying why."""

    def __init__(
        self,
        message: str,
        *,
        permanent: bool = False,
        code: str | None = None,
        retry_after: float | None = None,
        suppress: str | None = None,
        unknown_outcome: bool = False,
        fatal: bool = False,
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.code = code
        self.retry_after = retry_after
        self.suppress = suppress
        self.unknown_outcome = unknown_outcome
        self.fatal = fatal


class Channel(Protocol):
    """Sends one message; raises :class:`ChannelError` when it could not. ``find_sent`` asks the
    provider whether it accepted a message recorded as in flight (None: it did not, so it is safe
    to send again); it raises :class:`ChannelError` when the provider cannot tell right now."""

    provider: str

    def send(self, message: OutgoingMessage) -> Receipt: ...

    def find_sent(self, record: SendRecord) -> Receipt | None: ...


def _safe_name(value: str) -> str:
    """A file-system-safe name for ``value``; when characters had to be replaced, a short hash of
    the original keeps distinct values apart (``a:b`` and ``a_b``)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", value)[:150].lstrip(".") or "_"
    if cleaned != value:
        cleaned += "-" + hashlib.sha1(value.encode("utf-8")).hexdigest()[:8]
    return cleaned


def _write_atomic(path: Path, content: str) -> None:
    """Write ``content`` to ``path`` so a reader sees the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class OutboxChannel:
    """Writes each message as a readable file, for local runs without provider credentials:
    ``<directory>/<experiment_key>/<channel>/<idempotency key>.txt`` (and ``.html`` next to it
    when the email has an HTML body). Sending the same key again overwrites the same file."""

    provider: str = "outbox"

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def path_for(self, message: OutgoingMessage) -> Path:
        """The file a message is written to."""
        return (
            self.directory
            / _safe_name(message.experiment_key)
            / _safe_name(message.channel)
            / f"{_safe_name(message.idempotency_key)}.txt"
        )

    def send(self, message: OutgoingMessage) -> Receipt:
        """Write the message file; an OS error (disk full, permissions) is a transient failure."""
        path = self.path_for(message)
        rendered = message.rendered
        if message.channel == "email":
            head = [f"To: {message.to}", f"Subject: {rendered.subject or ''}"]
        elif message.channel == "sms":
            head = [f"To: {message.to}", f"Segments: {rendered.sms_segments}"]
        else:
            raise ChannelError(
                f"the outbox channel writes email and sms, not {message.channel!r}", permanent=True
            )
        head += [
            f"X-Retain-Key: {message.idempotency_key}",
            f"X-Retain-Experiment: {message.experiment_key}",
            f"X-Retain-Arm: {message.arm}",
        ]
        try:
            _write_atomic(path, "\n".join(head) + "\n\n" + rendered.text.rstrip("\n") + "\n")
            if rendered.html is not None:
                _write_atomic(path.with_suffix(".html"), rendered.html)
        except OSError as error:
            raise ChannelError(f"cannot write the outbox file {path}: {error}") from error
        return Receipt(
            provider=self.provider, provider_message_id=self._id(message.idempotency_key)
        )

    @staticmethod
    def _id(idempotency_key: str) -> str:
        return "outbox-" + hashlib.sha1(idempotency_key.encode("utf-8")).hexdigest()[:16]

    def find_sent(self, record: SendRecord) -> Receipt | None:
        """The file is written atomically, so it exists exactly when the message was sent."""
        path = (
            self.directory
            / _safe_name(record.experiment_key)
            / _safe_name(record.channel)
            / f"{_safe_name(record.idempotency_key)}.txt"
        )
        if path.is_file():
            return Receipt(self.provider, self._id(record.idempotency_key))
        return None
