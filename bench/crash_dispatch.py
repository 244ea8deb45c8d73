"""Crash test of exactly-once dispatch: kill the dispatcher with SIGKILL again and again.

Puts N due messages (half email, half SMS) in a fresh database, starts the local fake SendGrid and
Twilio in this process (so they outlive the children and count every acceptance), then runs the
dispatcher as a child process with the real ``sendgrid`` and ``twilio`` clients and kills it with
SIGKILL at a random moment while it is sending, K times, restarting it each time. Finally it runs
the dispatcher undisturbed until nothing is in an intermediate state and checks that every message
was accepted by a provider exactly once and is recorded ``sent`` with that provider's id.

    .venv/bin/python bench/crash_dispatch.py [--messages 2000] [--kills 20] [--database-url URL]

Default database: a fresh SQLite file under bench/out/. For PostgreSQL pass an empty database, e.g.
postgresql+psycopg://postgres@127.0.0.1:5432/crash (it is migrated).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SPEC = """\
key: crash
hypothesis: Nothing is sent twice, whatever happens to the dispatcher.
segment: {where: tenure_days >= 0}
arms:
  - {name: control}
  - name: both
    steps:
      - {at: 0d, channel: email, template: card_expiry}
      - {at: 0d, channel: sms, template: card_expiry_sms}
metrics: {primary: card_updated_14d}
"""

LEASE_SECONDS = 3.0
TIMEOUT_SECONDS = 0.5


@dataclass(frozen=True)
class CrashResult:
    messages: int
    kills: int
    accepted: dict[str, int]
    duplicates: int
    missing: int
    not_sent: dict[str, int]
    wrong_provider_id: int
    attempts: dict[str, int]
    seconds: float

    @property
    def ok(self) -> bool:
        return not (self.duplicates or self.missing or self.not_sent or self.wrong_provider_id)


def prepare(database_url: str, messages: int) -> None:
    """A migrated database with one experiment and ``messages`` due messages."""
    from models.customer_data import Customer
    from models.db import make_engine
    from models.migrate import upgrade
    from models.records import Experiment, ExperimentSnapshot, Message

    engine = make_engine(database_url)
    upgrade(engine)
    now = datetime.now(UTC)
    customers = messages // 2
    with engine.begin() as conn:
        eid = conn.execute(
            Experiment.__table__.insert().returning(Experiment.__table__.c.id),  # type: ignore[attr-defined]
            {
                "key": "crash",
                "hypothesis": "h",
                "status": "running",
                "spec_hash": "c" * 64,
                "created_at": now,
                "updated_at": now,
            },
        ).scalar_one()
        conn.execute(
            ExperimentSnapshot.__table__.insert(),  # type: ignore[attr-defined]
            {"experiment_id": eid, "spec_hash": "c" * 64, "spec_yaml": SPEC, "created_at": now},
        )
        conn.execute(
            Customer.__table__.insert(),  # type: ignore[attr-defined]
            [
                {
                    "external_id": f"cus_{i:06d}",
                    "name": f"Customer {i}",
                    "email": f"c{i}@example.com",
                    "phone": f"+4670{i:07d}",
                    "locale": "en",
                    "timezone": "Europe/Stockholm",
                    "country": "SE",
                    "email_consent": True,
                    "sms_consent": True,
                    "created_at": now - timedelta(days=100),
                }
                for i in range(customers)
            ],
        )
        ids = [r[0] for r in conn.execute(Customer.__table__.select().order_by("id")).all()]  # type: ignore[attr-defined]
        conn.execute(
            Message.__table__.insert(),  # type: ignore[attr-defined]
            [
                {
                    "idempotency_key": f"crash:{cid}:both:{step}",
                    "experiment_id": eid,
                    "customer_id": cid,
                    "arm": "both",
                    "step_index": step,
                    "channel": channel,
                    "template": template,
                    "scheduled_at": now - timedelta(minutes=5),
                    "status": "pending",
                    "attempts": 0,
                    "shadow": False,
                    "created_at": now,
                    "updated_at": now,
                }
                for cid in ids
                for step, (channel, template) in enumerate(
                    [("email", "card_expiry"), ("sms", "card_expiry_sms")]
                )
            ],
        )
    engine.dispose()


def child(database_url: str, provider_url: str) -> int:
    """One dispatcher run with the real clients against the fake providers; exit 3 if the
    dispatch reported itself incomplete."""
    from messaging.dispatcher import DispatchOptions, dispatch_due
    from messaging.sendgrid_channel import SendGridChannel
    from messaging.twilio_channel import TwilioChannel
    from models.db import make_engine
    from tests.providers import SENDGRID_KEY, TWILIO_SID, TWILIO_TOKEN

    channels = {
        "email": SendGridChannel(
            SENDGRID_KEY, from_email="hi@retain.example", base_url=provider_url,
            timeout=TIMEOUT_SECONDS,
        ),
        "sms": TwilioChannel(
            TWILIO_SID, TWILIO_TOKEN, from_number="+15005550006", base_url=provider_url,
            status_callback_base_url="https://hooks.example/twilio", timeout=TIMEOUT_SECONDS,
        ),
    }  # fmt: skip
    options = DispatchOptions(
        batch_size=50,
        senders=4,
        lease=timedelta(seconds=LEASE_SECONDS),
        call_budget=TIMEOUT_SECONDS + 0.5,
        recheck_after=timedelta(seconds=1),
        retry_base=timedelta(seconds=0.5),
    )
    engine = make_engine(database_url)
    summary = dispatch_due(engine, None, channels, options=options)
    engine.dispose()
    return 0 if summary.complete else 3


def _spawn(database_url: str, provider_url: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, str(Path(__file__).resolve()), "--child"]
    command += ["--database-url", database_url, "--provider-url", provider_url]
    return subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.DEVNULL)


def _posts(fake: Any) -> int:
    with fake.lock:
        return sum(1 for r in fake.requests if r.method == "POST")


def _intermediate(database_url: str) -> int:
    from sqlalchemy import func, select

    from models.db import make_engine
    from models.records import Message

    engine = make_engine(database_url)
    with engine.connect() as conn:
        left = conn.execute(
            select(func.count()).where(Message.status.in_(["pending", "sending"]))  # type: ignore[attr-defined]
        ).scalar_one()
    engine.dispose()
    return int(left)


def run(
    database_url: str,
    messages: int = 2000,
    kills: int = 20,
    seed: int = 1,
    log: Callable[[str], None] = print,
) -> CrashResult:
    """Prepare, kill ``kills`` dispatchers mid-send, finish, and check exactly-once."""
    from sqlalchemy import select

    from models.db import make_engine
    from models.dispatch_records import SendAttempt
    from models.records import Message
    from tests.providers import FakeProviders

    rng = random.Random(seed)
    prepare(database_url, messages)
    started = time.monotonic()
    done_kills = 0
    with FakeProviders(latency=0.003) as fake:
        while done_kills < kills:
            before, sends_before = len(fake.requests), _posts(fake)
            process = _spawn(database_url, fake.url)
            # Wait until this child talks to a provider (three times in four: until it sends;
            # else any request, e.g. a reconciliation lookup), then kill it at a random moment.
            wait_for_send = rng.random() < 0.75
            deadline = time.monotonic() + 30
            while process.poll() is None and (
                _posts(fake) == sends_before if wait_for_send else len(fake.requests) == before
            ):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.01)
            if process.poll() is not None:
                if _intermediate(database_url) == 0:
                    break  # everything went out before we could kill it again
                time.sleep(LEASE_SECONDS / 2)  # it was waiting for leases to expire
                continue
            time.sleep(rng.uniform(0.0, 0.5))
            process.send_signal(signal.SIGKILL)
            process.wait()
            done_kills += 1
            log(
                f"kill {done_kills}: {len(fake.requests) - before} requests, "
                f"{_posts(fake) - sends_before} sends in that run"
            )
        for _ in range(20):  # undisturbed runs until nothing is pending or in flight
            if _intermediate(database_url) == 0:
                break
            time.sleep(LEASE_SECONDS)
            code = _spawn(database_url, fake.url).wait()
            log(
                f"final run exited {code}; {_intermediate(database_url)} still pending or in flight"
            )
        accepted = {p: len(fake.accepted[p]) for p in ("sendgrid", "twilio")}
        by_message = Counter(fake.accepted_ids("sendgrid") + fake.accepted_ids("twilio"))
        provider_ids = {
            str(m["retain_message_id"]): m["id"]
            for p in ("sendgrid", "twilio")
            for m in fake.accepted[p]
        }
    engine = make_engine(database_url)
    with engine.connect() as conn:
        rows = conn.execute(
            select(Message.id, Message.status, Message.provider_message_id)  # type: ignore[call-overload]
        ).all()
        outcomes = Counter(
            str(o)
            for o in conn.execute(select(SendAttempt.outcome)).scalars()  # type: ignore[call-overload]
        )
    engine.dispose()
    ids = {str(r.id) for r in rows}
    return CrashResult(
        messages=len(rows),
        kills=done_kills,
        accepted=accepted,
        duplicates=sum(n - 1 for n in by_message.values() if n > 1),
        missing=len(ids - set(by_message)),
        not_sent=dict(Counter(r.status for r in rows if r.status != "sent")),
        wrong_provider_id=sum(
            1 for r in rows if provider_ids.get(str(r.id)) != r.provider_message_id
        ),
        attempts=dict(sorted(outcomes.items())),
        seconds=time.monotonic() - started,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--database-url")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--provider-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sys.exit(child(args.database_url, args.provider_url))
    url = args.database_url
    if url is None:
        out = ROOT / "bench" / "out"
        out.mkdir(parents=True, exist_ok=True)
        path = out / "crash.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        url = f"sqlite:///{path}"
    result = run(url, args.messages, args.kills, args.seed)
    print(
        f"{result.messages} messages, {result.kills} SIGKILLs in {result.seconds:.0f} s: accepted by "
        f"SendGrid {result.accepted['sendgrid']}, by Twilio {result.accepted['twilio']}; "
        f"duplicates {result.duplicates}, never accepted {result.missing}, "
        f"not 'sent' {result.not_sent or 0}, provider id mismatches {result.wrong_provider_id}; "
        f"attempt outcomes {result.attempts}"
    )
    sys.exit(0 if result.ok else 1)


if __name__ == "__main__":
    main()
