"""Dispatch throughput: messages per second through Retain next to a bare loop of the same SDK calls.

Retain's path is the whole of `retain dispatch` minus Prefect: claim a batch, judge the policy for
every message (consent, suppressions, caps, quiet hours, ``unless``), render, record the batch in
flight, send through the official ``sendgrid`` / ``twilio`` clients, record the results. The bare
loop makes the same client calls (the same request bodies) at the same concurrency and records
nothing. Both talk to the local fake providers, served from a separate process.

    .venv/bin/python bench/dispatch.py [--messages 2000] [--senders 4] [--database-url URL]

The figure is the ratio Retain / bare (target: at least 0.5).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000, help="per channel")
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--database-url")
    args = parser.parse_args()

    import crash_dispatch

    from messaging.dispatcher import DispatchOptions, dispatch_due
    from messaging.sendgrid_channel import SendGridChannel
    from messaging.twilio_channel import TwilioChannel
    from models.db import make_engine
    from tests.providers import SENDGRID_KEY, TWILIO_SID, TWILIO_TOKEN

    url = args.database_url
    if url is None:
        out = ROOT / "bench" / "out"
        out.mkdir(parents=True, exist_ok=True)
        path = out / "dispatch.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        url = f"sqlite:///{path}"
    crash_dispatch.prepare(url, 2 * args.messages)
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.providers"], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        base = server.stdout.readline().strip()
        sendgrid = SendGridChannel(
            SENDGRID_KEY, from_email="hi@retain.example", base_url=base, timeout=10
        )
        twilio = TwilioChannel(
            TWILIO_SID,
            TWILIO_TOKEN,
            from_number="+15005550006",
            base_url=base,
            status_callback_base_url="https://hooks.example/twilio",
            timeout=10,
        )
        engine = make_engine(url)
        options = DispatchOptions(batch_size=200, senders=args.senders, lease=timedelta(minutes=5))
        results = {}
        for kind, channel in (("email", sendgrid), ("sms", twilio)):
            started = time.perf_counter()
            summary = dispatch_due(engine, None, {kind: channel}, options=options)
            retain_seconds = time.perf_counter() - started
            assert summary.sent == args.messages and summary.complete, summary
            bodies = [_sample(kind, channel, i) for i in range(args.messages)]
            with ThreadPoolExecutor(max_workers=args.senders) as pool:
                started = time.perf_counter()
                list(pool.map(_bare(kind, base), bodies))
                bare_seconds = time.perf_counter() - started
            results[kind] = (args.messages / retain_seconds, args.messages / bare_seconds)
        engine.dispose()
    finally:
        server.kill()
        server.wait()
    for kind, (retain, bare) in results.items():
        print(
            f"{kind}: Retain {retain:,.0f} msg/s, bare {kind} client loop {bare:,.0f} msg/s "
            f"({args.senders} senders): ratio {retain / bare:.2f}"
        )


def _sample(kind: str, channel: object, i: int) -> dict[str, object]:
    """The request a bare loop sends: the same shape and size Retain sends."""
    from messaging.channels import OutgoingMessage
    from messaging.render import RenderedMessage
    from messaging.sendgrid_channel import SendGridChannel

    text = "Hi Customer, your Visa card ending in 4242 expires at the end of November 2026.\n" * 6
    message = OutgoingMessage(
        idempotency_key=f"bare:{i}",
        channel=kind,
        to=f"c{i}@example.com" if kind == "email" else f"+4670{i:07d}",
        rendered=RenderedMessage(kind, "Your card expires", text, f"<p>{text}</p>", None),
        customer_id=i,
        experiment_key="bare",
        arm="a",
        message_id=i,
        unsubscribe_url=f"https://app.example.com/unsubscribe/cus_{i}/t",
    )
    if isinstance(channel, SendGridChannel):
        return channel.body(message)
    return {
        "to": message.to,
        "body": "Retain: your Visa ending 4242 expires 11/2026. Update: https://app.example.com/pay/c/t",
        "from_": "+15005550006",
        "status_callback": f"https://hooks.example/twilio?retain_message_id={i}",
    }


def _bare(kind: str, base: str):  # type: ignore[no-untyped-def]
    import threading

    from sendgrid import SendGridAPIClient
    from twilio.http.http_client import TwilioHttpClient
    from twilio.rest import Client

    from tests.providers import SENDGRID_KEY, TWILIO_SID, TWILIO_TOKEN

    local = threading.local()
    if kind == "email":
        client = SendGridAPIClient(api_key=SENDGRID_KEY, host=base)
        client.client.timeout = 10

        def send_email(body: dict[str, object]) -> None:
            client.send(body)

        return send_email

    def send_sms(body: dict[str, object]) -> None:
        twilio = getattr(local, "client", None)
        if twilio is None:
            twilio = local.client = Client(
                TWILIO_SID, TWILIO_TOKEN, http_client=TwilioHttpClient(timeout=10)
            )
            twilio.api.base_url = base
        twilio.messages.create(**body)

    return send_sms


if __name__ == "__main__":
    main()
