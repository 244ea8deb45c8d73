"""Settings of the webhook receiver, from the environment (never logged, never printed).

| variable | meaning |
| --- | --- |
| ``RETAIN_SENDGRID_WEBHOOK_PUBLIC_KEY`` | the Event Webhook's verification key (base64, as SendGrid shows it) |
| ``RETAIN_TWILIO_AUTH_TOKEN`` (or ``TWILIO_AUTH_TOKEN``) | the auth token Twilio signs callbacks with |
| ``RETAIN_WEBHOOK_PUBLIC_URL`` | the base URL the providers call, e.g. ``https://hooks.example.com`` (Twilio signs the full URL) |
| ``RETAIN_WEBHOOK_MAX_BODY`` | largest request body accepted, bytes (default 1 MiB) |
| ``RETAIN_WEBHOOK_TOLERANCE`` | how old a signed SendGrid timestamp may be, seconds (default 300) |

An endpoint whose key is not configured answers 503 (and changes nothing): it cannot verify, so it
accepts nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

DEFAULT_MAX_BODY = 1024 * 1024
DEFAULT_TOLERANCE = 300


class WebhookSettingsError(ValueError):
    """A webhook setting does not parse; the message names the variable."""


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise WebhookSettingsError(f"{name} must be a whole number, not {raw!r}") from None
    if value <= 0:
        raise WebhookSettingsError(f"{name} must be positive, not {value}")
    return value


@dataclass(frozen=True)
class WebhookSettings:
    sendgrid_public_key: str | None = field(default=None, repr=False)
    twilio_auth_token: str | None = field(default=None, repr=False)
    public_url: str | None = None
    max_body: int = DEFAULT_MAX_BODY
    tolerance_seconds: int = DEFAULT_TOLERANCE

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WebhookSettings:
        values = os.environ if env is None else env
        public_url = (values.get("RETAIN_WEBHOOK_PUBLIC_URL") or "").strip().rstrip("/") or None
        if public_url and not public_url.startswith(("https://", "http://")):
            raise WebhookSettingsError(
                f"RETAIN_WEBHOOK_PUBLIC_URL must start with https://, not {public_url!r}"
            )
        return cls(
            sendgrid_public_key=(values.get("RETAIN_SENDGRID_WEBHOOK_PUBLIC_KEY") or "").strip()
            or None,
            twilio_auth_token=(
                values.get("RETAIN_TWILIO_AUTH_TOKEN") or values.get("TWILIO_AUTH_TOKEN") or ""
            ).strip()
            or None,
            public_url=public_url,
            max_body=_int(values, "RETAIN_WEBHOOK_MAX_BODY", DEFAULT_MAX_BODY),
            tolerance_seconds=_int(values, "RETAIN_WEBHOOK_TOLERANCE", DEFAULT_TOLERANCE),
        )

    def describe(self) -> list[tuple[str, str]]:
        """What is configured, for ``retain webhooks serve`` (never the secrets themselves)."""
        return [
            ("SendGrid event verification key", "set" if self.sendgrid_public_key else "missing"),
            ("Twilio auth token", "set" if self.twilio_auth_token else "missing"),
            ("public URL (Twilio signatures)", self.public_url or "missing"),
            ("largest body", f"{self.max_body:,} bytes"),
            ("SendGrid replay window", f"{self.tolerance_seconds} s"),
        ]
