"""Signed link tokens: the links in a message (update payment details, accept the offer,
unsubscribe) carry a token that only this install can make, so knowing a customer id is not
enough to forge one.

A link is ``<base>/<action>/<customer external id>/<token>``. The token is ``<ref><mac>``:

- ``ref`` (:data:`REF_LENGTH` characters): the first bits of ``sha256(idempotency key)`` in
  base64url. It names the message (to attribute a click or an unsubscribe) without revealing it.
- ``mac`` (:data:`MAC_LENGTH` characters): ``HMAC-SHA256(secret, "<action>\\n<external id>\\n<ref>")``
  in base64url, truncated. 72 bits: far beyond what an online guesser can try, short enough that
  an SMS with a link stays in one GSM-7 segment.

The secret comes from ``RETAIN_LINK_SECRET``, else from the Prefect Secret block named by
``RETAIN_LINK_SECRET_BLOCK``, else (demo only) from a random per-install key created on first use
in ``$RETAIN_STATE_DIR/link-secret`` (default ``~/.retain/link-secret``, mode 0600); the ``retain``
commands that make or check links warn when that default is in use.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

Action = Literal["pay", "offer", "unsubscribe"]
ACTIONS: tuple[Action, ...] = ("pay", "offer", "unsubscribe")
REF_LENGTH = 6
MAC_LENGTH = 12
TOKEN_LENGTH = REF_LENGTH + MAC_LENGTH
_B64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")

SecretSource = Literal["env", "prefect", "default"]


class LinkSecretError(Exception):
    """The link secret could not be loaded (e.g. the named Prefect Secret block is missing)."""


@dataclass(frozen=True)
class LinkSecret:
    """The key links are signed with, and where it came from (never printed)."""

    key: bytes = field(repr=False)
    source: SecretSource
    where: str
    """The variable, block name or file the key came from (not the key)."""

    @property
    def is_default(self) -> bool:
        return self.source == "default"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def state_dir() -> Path:
    """Where Retain keeps per-install state: ``RETAIN_STATE_DIR`` or ``~/.retain``."""
    configured = os.environ.get("RETAIN_STATE_DIR")
    return Path(configured) if configured else Path.home() / ".retain"


def _default_key(path: Path) -> bytes:
    """The per-install demo key: read it, or create it once (race-safe: O_EXCL)."""
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as handle:
        handle.write(key + b"\n")
    return key


@cache
def _load(env_secret: str | None, block: str | None, folder: str) -> LinkSecret:
    if env_secret:
        return LinkSecret(env_secret.encode(), "env", "RETAIN_LINK_SECRET")
    if block:
        try:
            from prefect.blocks.system import Secret

            loaded: Any = Secret.load(block)  # synchronous outside an event loop
            value = loaded.get()
        except Exception as error:
            raise LinkSecretError(
                f"cannot load the Prefect Secret block {block!r} named by "
                f"RETAIN_LINK_SECRET_BLOCK ({type(error).__name__}); create it or unset the variable"
            ) from None
        return LinkSecret(str(value).encode(), "prefect", f"Prefect Secret block {block!r}")
    path = Path(folder) / "link-secret"
    return LinkSecret(_default_key(path), "default", str(path))


def link_secret() -> LinkSecret:
    """The install's link secret (see the module docstring for the order of sources)."""
    env_secret = os.environ.get("RETAIN_LINK_SECRET") or None
    block = os.environ.get("RETAIN_LINK_SECRET_BLOCK") or None
    # Only the demo default needs the state folder (Path.home() is not free per message).
    return _load(env_secret, block, "" if env_secret or block else str(state_dir()))


def default_secret_warning() -> str | None:
    """A one-line warning if links are signed with the demo's per-install default key."""
    secret = link_secret()
    if not secret.is_default:
        return None
    return (
        f"links are signed with this install's demo key ({secret.where}); set RETAIN_LINK_SECRET "
        "(or RETAIN_LINK_SECRET_BLOCK) to the same secret on every machine before real customers "
        "get messages"
    )


def message_ref(idempotency_key: str) -> str:
    """The short, stable, non-secret name of one message in its links."""
    return _b64(hashlib.sha256(idempotency_key.encode()).digest())[:REF_LENGTH]


def _mac(key: bytes, action: str, external_id: str, ref: str) -> str:
    digest = hmac.new(key, f"{action}\n{external_id}\n{ref}".encode(), hashlib.sha256).digest()
    return _b64(digest)[:MAC_LENGTH]


def sign(action: Action, external_id: str, ref: str, secret: LinkSecret | None = None) -> str:
    """The token of ``action`` for message ``ref`` of customer ``external_id``."""
    key = (secret or link_secret()).key
    return ref + _mac(key, action, external_id, ref)


@dataclass(frozen=True)
class VerifiedLink:
    action: Action
    external_id: str
    ref: str


def verify_link_token(
    action: Action, external_id: str, token: str, secret: LinkSecret | None = None
) -> VerifiedLink | None:
    """The link's facts if ``token`` was signed by this install for ``action`` and customer
    ``external_id``; ``None`` otherwise (compared in constant time)."""
    if len(token) != TOKEN_LENGTH or not set(token) <= _B64URL or action not in ACTIONS:
        return None
    ref, mac = token[:REF_LENGTH], token[REF_LENGTH:]
    expected = _mac((secret or link_secret()).key, action, external_id, ref)
    if not hmac.compare_digest(mac, expected):
        return None
    return VerifiedLink(action, external_id, ref)


def offer_code(
    experiment_key: str, external_id: str, kind: str, secret: LinkSecret | None = None
) -> str:
    """A customer's code for an experiment's offer, ``XXXX-XXXX-XXXX`` (60 bits of
    ``HMAC(secret, experiment, customer, kind)`` in Crockford-style base32 without look-alikes):
    unguessable, stable (re-rendering gives the same code) and unique in practice; the database's
    unique constraint on offer grants makes it certain."""
    key = (secret or link_secret()).key
    digest = hmac.new(
        key, f"offer\n{experiment_key}\n{external_id}\n{kind}".encode(), hashlib.sha256
    ).digest()
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    number = int.from_bytes(digest[:8], "big") >> 4
    chars = "".join(alphabet[(number >> (5 * i)) & 31] for i in range(12))
    return f"{chars[:4]}-{chars[4:8]}-{chars[8:]}"
