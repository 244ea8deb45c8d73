"""Messaging settings: provider credentials, sender identities, API base URLs and sending limits.

Everything comes from the environment (``RETAIN_*``, read with pydantic-settings) or, for the two
secrets, from a Prefect Secret block named in the environment (loaded lazily, only when named, so
commands that need no secret never import Prefect). Secrets are ``SecretStr``: they never appear in
a ``repr``, a log line or ``retain channels``.

With nothing set, both kinds of message go to the local outbox channel, so the demo and the tests
need no credentials. A provider is chosen for a channel as soon as any of its settings is set; if
its settings are then incomplete, :func:`channel_plans` says what is missing and building the
channels fails with that line rather than silently writing to the outbox.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from messaging.channels import Channel, OutboxChannel


class MessagingSettings(BaseSettings):
    """``RETAIN_*`` environment variables for sending (see the README's configuration table)."""

    model_config = SettingsConfigDict(env_prefix="RETAIN_", extra="ignore", frozen=True)

    sendgrid_api_key: SecretStr | None = None
    sendgrid_api_key_block: str | None = Field(
        default=None, description="name of a Prefect Secret block holding the SendGrid API key"
    )
    sendgrid_base_url: str = "https://api.sendgrid.com"
    sendgrid_from_email: str | None = None
    sendgrid_from_name: str | None = None
    sendgrid_reply_to: str | None = None
    sendgrid_asm_group_id: int | None = None
    sendgrid_sandbox: bool = False
    sendgrid_timeout_seconds: float = Field(default=10.0, gt=0, le=120)

    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_auth_token_block: str | None = Field(
        default=None, description="name of a Prefect Secret block holding the Twilio auth token"
    )
    twilio_base_url: str = "https://api.twilio.com"
    twilio_messaging_service_sid: str | None = None
    twilio_from_number: str | None = None
    twilio_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    status_callback_base_url: str | None = Field(
        default=None,
        description="public URL of the Twilio status-callback receiver; the message id is added",
    )

    email_rate_per_second: float = Field(default=50.0, gt=0)
    sms_rate_per_second: float = Field(default=10.0, gt=0)
    rate_limiter: Literal["auto", "prefect", "local"] = Field(
        default="auto",
        description="who paces the sends per channel: the Prefect global rate limits `retain "
        "deploy` creates (shared by every worker), this process's token bucket (local), or the "
        "Prefect limit when the API has it, else the bucket (auto); see flows.throttle",
    )
    senders: int = Field(default=4, ge=1, le=64, description="concurrent provider calls")
    lease_seconds: float = Field(default=300.0, gt=0)

    def sendgrid_configured(self) -> bool:
        """Whether any SendGrid setting is given (then SendGrid is meant to send email)."""
        return bool(
            self.sendgrid_api_key or self.sendgrid_api_key_block or self.sendgrid_from_email
        )

    def twilio_configured(self) -> bool:
        """Whether any Twilio setting is given (then Twilio is meant to send SMS)."""
        return bool(
            self.twilio_account_sid
            or self.twilio_auth_token
            or self.twilio_auth_token_block
            or self.twilio_messaging_service_sid
            or self.twilio_from_number
        )


def load_settings() -> MessagingSettings:
    """The settings from the environment, read now."""
    return MessagingSettings()


@dataclass(frozen=True)
class ChannelPlan:
    """Which channel a kind of message will use and whether its settings are complete."""

    kind: Literal["email", "sms"]
    provider: Literal["sendgrid", "twilio", "outbox"]
    missing: tuple[str, ...]
    details: tuple[tuple[str, str], ...]
    """Setting name and a printable value (secrets masked)."""

    @property
    def complete(self) -> bool:
        return not self.missing


def mask(secret: SecretStr | None) -> str:
    """Whether a secret is set, never any part of it."""
    if secret is None or not secret.get_secret_value():
        return "not set"
    return "set (hidden)"


def _email_plan(s: MessagingSettings) -> ChannelPlan:
    if not s.sendgrid_configured():
        return ChannelPlan("email", "outbox", (), (("folder", "the --outbox folder"),))
    missing = []
    if not (s.sendgrid_api_key or s.sendgrid_api_key_block):
        missing.append("RETAIN_SENDGRID_API_KEY (or RETAIN_SENDGRID_API_KEY_BLOCK)")
    if not s.sendgrid_from_email:
        missing.append("RETAIN_SENDGRID_FROM_EMAIL")
    key = (
        f"Prefect Secret block {s.sendgrid_api_key_block!r}"
        if s.sendgrid_api_key_block and not s.sendgrid_api_key
        else mask(s.sendgrid_api_key)
    )
    details = (
        ("api key", key),
        ("base url", s.sendgrid_base_url),
        ("from", s.sendgrid_from_email or "not set"),
        ("reply-to", s.sendgrid_reply_to or "not set"),
        ("asm group", str(s.sendgrid_asm_group_id) if s.sendgrid_asm_group_id else "not set"),
        ("sandbox", "on" if s.sendgrid_sandbox else "off"),
        ("timeout", f"{s.sendgrid_timeout_seconds:g} s"),
        ("rate", f"{s.email_rate_per_second:g}/s"),
    )
    return ChannelPlan("email", "sendgrid", tuple(missing), details)


def _sms_plan(s: MessagingSettings) -> ChannelPlan:
    if not s.twilio_configured():
        return ChannelPlan("sms", "outbox", (), (("folder", "the --outbox folder"),))
    missing = []
    if not s.twilio_account_sid:
        missing.append("RETAIN_TWILIO_ACCOUNT_SID")
    if not (s.twilio_auth_token or s.twilio_auth_token_block):
        missing.append("RETAIN_TWILIO_AUTH_TOKEN (or RETAIN_TWILIO_AUTH_TOKEN_BLOCK)")
    if not (s.twilio_messaging_service_sid or s.twilio_from_number):
        missing.append("RETAIN_TWILIO_MESSAGING_SERVICE_SID or RETAIN_TWILIO_FROM_NUMBER")
    token = (
        f"Prefect Secret block {s.twilio_auth_token_block!r}"
        if s.twilio_auth_token_block and not s.twilio_auth_token
        else mask(s.twilio_auth_token)
    )
    details = (
        ("account sid", s.twilio_account_sid or "not set"),
        ("auth token", token),
        ("base url", s.twilio_base_url),
        ("sender", s.twilio_messaging_service_sid or s.twilio_from_number or "not set"),
        ("status callback", s.status_callback_base_url or "not set"),
        ("timeout", f"{s.twilio_timeout_seconds:g} s"),
        ("rate", f"{s.sms_rate_per_second:g}/s"),
    )
    return ChannelPlan("sms", "twilio", tuple(missing), details)


def channel_plans(settings: MessagingSettings) -> list[ChannelPlan]:
    """For email and SMS: the provider that will send them and what its settings lack."""
    return [_email_plan(settings), _sms_plan(settings)]


class SettingsError(ValueError):
    """Messaging settings that cannot be used; the message says which variable to set."""


def resolve_secret(value: SecretStr | None, block: str | None, what: str) -> str:
    """The secret from the environment, else from the named Prefect Secret block (Prefect is
    imported only here, only when a block is named)."""
    if value is not None and value.get_secret_value():
        return value.get_secret_value()
    if not block:
        raise SettingsError(f"{what} is not set; set it in the environment or name a Secret block")
    from prefect.blocks.system import Secret

    try:
        secret = Secret.load(block, _sync=True)  # type: ignore[call-arg]
    except ValueError as error:
        raise SettingsError(
            f"cannot load the Prefect Secret block {block!r} for {what}: {error}; create it with "
            "`prefect block create secret` or fix the name"
        ) from None
    text = str(secret.get())  # type: ignore[union-attr]
    if not text:
        raise SettingsError(f"the Prefect Secret block {block!r} for {what} is empty")
    return text


def _sendgrid(settings: MessagingSettings) -> Channel:
    from messaging.sendgrid_channel import SendGridChannel

    key = resolve_secret(
        settings.sendgrid_api_key, settings.sendgrid_api_key_block, "RETAIN_SENDGRID_API_KEY"
    )
    return SendGridChannel(
        key,
        from_email=settings.sendgrid_from_email or "",
        from_name=settings.sendgrid_from_name,
        reply_to=settings.sendgrid_reply_to,
        base_url=settings.sendgrid_base_url,
        asm_group_id=settings.sendgrid_asm_group_id,
        sandbox=settings.sendgrid_sandbox,
        timeout=settings.sendgrid_timeout_seconds,
    )


def _twilio(settings: MessagingSettings) -> Channel:
    from messaging.twilio_channel import TwilioChannel

    token = resolve_secret(
        settings.twilio_auth_token, settings.twilio_auth_token_block, "RETAIN_TWILIO_AUTH_TOKEN"
    )
    return TwilioChannel(
        settings.twilio_account_sid or "",
        token,
        messaging_service_sid=settings.twilio_messaging_service_sid,
        from_number=settings.twilio_from_number,
        base_url=settings.twilio_base_url,
        status_callback_base_url=settings.status_callback_base_url,
        timeout=settings.twilio_timeout_seconds,
    )


def build_channels(settings: MessagingSettings, outbox_dir: Path) -> dict[str, Channel]:
    """The channel for each kind of message: SendGrid / Twilio when configured, else the local
    outbox folder. Raises :class:`SettingsError` naming what is missing when a provider's
    settings are incomplete (never a silent fallback to the outbox)."""
    problems = [
        f"{plan.provider} ({plan.kind}) lacks {', '.join(plan.missing)}"
        for plan in channel_plans(settings)
        if plan.missing
    ]
    if problems:
        raise SettingsError(
            "; ".join(problems) + "; set them, or unset that provider's variables to use the "
            "local outbox (`retain channels` shows the settings)"
        )
    outbox = OutboxChannel(outbox_dir)
    return {
        "email": _sendgrid(settings) if settings.sendgrid_configured() else outbox,
        "sms": _twilio(settings) if settings.twilio_configured() else outbox,
    }


def call_budget(settings: MessagingSettings) -> float:
    """The longest one provider call may take: the larger timeout plus a margin."""
    return max(settings.sendgrid_timeout_seconds, settings.twilio_timeout_seconds) + 5.0
