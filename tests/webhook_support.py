"""Shared helpers of the webhook tests: the real app served by uvicorn on 127.0.0.1, signing as
the providers do, and a small database of customers and sent messages."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import uvicorn
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import FastAPI
from sqlalchemy.engine import Engine
from sqlmodel import Session

from models.customer_data import Customer
from models.records import Experiment, Message

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
TWILIO_TOKEN = "12345"  # the token of twilio-python's own request-validator tests


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Run ``app`` with uvicorn on a free port of 127.0.0.1; yield its base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


class SendGridSigner:
    """A P-256 key pair like the one behind a SendGrid signed Event Webhook."""

    def __init__(self) -> None:
        self.private = ec.generate_private_key(ec.SECP256R1())
        der = self.private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.public_key = base64.b64encode(der).decode()  # as SendGrid's settings page shows it

    def headers(self, body: bytes, timestamp: int) -> dict[str, str]:
        signature = self.private.sign(str(timestamp).encode() + body, ec.ECDSA(hashes.SHA256()))
        return {
            "Content-Type": "application/json",
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": str(timestamp),
        }


def add_customer(engine: Engine, external_id: str, email: str | None, phone: str | None) -> int:
    with Session(engine) as session:
        customer = Customer(
            external_id=external_id,
            name="Anna Berg",
            email=email,
            phone=phone,
            locale="sv-SE",
            timezone="Europe/Stockholm",
            email_consent=True,
            sms_consent=True,
            created_at=T0,
        )
        session.add(customer)
        session.commit()
        assert customer.id is not None
        return customer.id


def add_sent_message(
    engine: Engine, customer_id: int, external_id: str, channel: str, provider_id: str
) -> int:
    with Session(engine) as session:
        experiment = session.get(Experiment, 1)
        if experiment is None:
            session.add(
                Experiment(
                    id=1,
                    key="dunning",
                    hypothesis="h",
                    spec_hash="0" * 64,
                    created_at=T0,
                    updated_at=T0,
                )
            )
            session.flush()
        message = Message(
            idempotency_key=f"dunning:{external_id}:email_sms:{0 if channel == 'email' else 1}",
            experiment_id=1,
            customer_id=customer_id,
            arm="email_sms",
            step_index=0 if channel == "email" else 1,
            channel=channel,
            template="dunning_failed" if channel == "email" else "dunning_sms",
            scheduled_at=T0,
            status="sent",
            provider="sendgrid" if channel == "email" else "twilio",
            provider_message_id=provider_id,
            attempts=1,
            sent_at=T0,
            created_at=T0,
            updated_at=T0,
        )
        session.add(message)
        session.commit()
        assert message.id is not None
        return message.id
