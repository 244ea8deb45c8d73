"""Signature checks for provider webhooks, with the providers' own helpers.

* SendGrid: ECDSA P-256 / SHA-256 over ``timestamp + raw body``
  (``sendgrid.helpers.eventwebhook.EventWebhook``), and the timestamp must be within the replay
  window of now (the helper has none).
* Twilio: base64 HMAC-SHA1 over the full public URL plus the sorted form fields
  (``twilio.request_validator.RequestValidator``).
"""

from __future__ import annotations

import binascii
from collections.abc import Mapping
from functools import cache
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from sendgrid.helpers.eventwebhook import EventWebhook
from twilio.request_validator import RequestValidator


class VerificationKeyError(ValueError):
    """The configured SendGrid verification key does not load."""


@cache
def _sendgrid_key(public_key: str) -> ec.EllipticCurvePublicKey:
    try:
        key = EventWebhook().convert_public_key_to_ecdsa(public_key)
    except (ValueError, TypeError) as error:
        raise VerificationKeyError(
            "RETAIN_SENDGRID_WEBHOOK_PUBLIC_KEY is not a valid EC public key (paste the "
            f"verification key exactly as SendGrid shows it): {type(error).__name__}"
        ) from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise VerificationKeyError(
            "RETAIN_SENDGRID_WEBHOOK_PUBLIC_KEY is not an elliptic-curve key"
        )
    return key


def check_sendgrid_key(public_key: str) -> None:
    """Raise :class:`VerificationKeyError` if the key does not load (checked when the app starts)."""
    _sendgrid_key(public_key)


def verify_sendgrid(
    public_key: str,
    body: bytes,
    signature: str | None,
    timestamp: str | None,
    now: float,
    tolerance_seconds: int,
) -> bool:
    """True if ``signature`` signs ``timestamp + body`` with the key and the timestamp is within
    ``tolerance_seconds`` of ``now`` (both directions: a clock may run ahead)."""
    if not signature or not timestamp or not timestamp.isdigit():
        return False
    if abs(now - int(timestamp)) > tolerance_seconds:
        return False
    try:
        payload = body.decode("utf-8")
        return bool(
            EventWebhook().verify_signature(
                payload, signature, timestamp, _sendgrid_key(public_key)
            )
        )
    except (UnicodeDecodeError, binascii.Error, ValueError):
        return False


def verify_twilio(token: str, url: str, form: Mapping[str, Any], signature: str | None) -> bool:
    """True if ``signature`` is Twilio's signature of ``url`` and ``form`` with ``token``."""
    if not signature:
        return False
    return bool(RequestValidator(token).validate(url, form, signature))
