"""Webhook receivers: SendGrid events, Twilio status callbacks and inbound messages, and the
one-click unsubscribe link. See :mod:`messaging.webhooks.app`."""

from messaging.webhooks.app import create_app
from messaging.webhooks.settings import WebhookSettings

__all__ = ["WebhookSettings", "create_app"]
