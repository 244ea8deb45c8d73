"""A local HTTP server on 127.0.0.1 that answers as SendGrid and Twilio do, for the official clients.

It records every request exactly (method, path, query, headers, raw body) and every message it
accepted, and can be told how to answer: 2xx with ids (the default), provider error bodies (400),
401, 429 with ``Retry-After`` / ``X-RateLimit-Reset``, 500, a slow answer (a client timeout), an
answer after accepting (the outcome is unknown to the client), or a malformed 2xx body. It also
serves SendGrid's Email Activity API (``GET /v3/messages?query=...``) and Twilio's Messages list
(``GET .../Messages.json?To=...``) from what it accepted, for reconciliation.

Endpoints:
- ``POST /v3/mail/send`` (Bearer auth): 202 with ``X-Message-Id``;
- ``GET /v3/messages?query=unique_args['retain_message_id']="N"&limit=10``;
- ``POST /2010-04-01/Accounts/{sid}/Messages.json`` (Basic auth, form): 201 with the message JSON;
- ``GET /2010-04-01/Accounts/{sid}/Messages.json?To=...`` (a page with ``messages``).

Used by the tests and by ``bench/`` (run it in the parent process so it outlives killed children).
"""

from __future__ import annotations

import base64
import itertools
import json
import random
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

SENDGRID_KEY = "SG.test-key"
TWILIO_SID = "AC" + "0" * 32
TWILIO_TOKEN = "twilio-test-token"


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, list[str]]:
        return parse_qs(self.body.decode("utf-8"), keep_blank_values=True)


@dataclass(frozen=True)
class Answer:
    """How to answer one send: ``status``, ``body``, ``headers``; ``delay`` seconds before
    answering; ``accept`` records the message as accepted (e.g. then answer slowly or malformed)."""

    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0
    accept: bool = False
    malformed: bool = False


def sendgrid_error(status: int, message: str, field_name: str | None = None) -> Answer:
    body = {"errors": [{"message": message, "field": field_name, "help": None}]}
    return Answer(status, json.dumps(body).encode(), (("Content-Type", "application/json"),))


def twilio_error(status: int, code: int, message: str) -> Answer:
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return Answer(status, json.dumps(body).encode(), (("Content-Type", "application/json"),))


def rate_limited(provider: str, retry_after: float = 2.0) -> Answer:
    if provider == "sendgrid":
        reset = str(int(time.time() + retry_after))
        answer = sendgrid_error(429, "too many requests")
        return Answer(429, answer.body, (*answer.headers, ("X-RateLimit-Reset", reset)))
    answer = twilio_error(429, 20429, "Too Many Requests")
    return Answer(429, answer.body, (*answer.headers, ("Retry-After", f"{retry_after:g}")))


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timeout) or was killed mid-request is part of the scenario.
        error = sys.exc_info()[1]
        if not isinstance(error, ConnectionError | TimeoutError):
            super().handle_error(request, client_address)


@dataclass
class FakeProviders:
    """The server; ``with FakeProviders() as fake:`` starts and stops it."""

    sendgrid_key: str = SENDGRID_KEY
    twilio_sid: str = TWILIO_SID
    twilio_token: str = TWILIO_TOKEN
    requests: list[Recorded] = field(default_factory=list)
    accepted: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {"sendgrid": [], "twilio": []}
    )
    planned: dict[str, list[Answer]] = field(default_factory=lambda: {"sendgrid": [], "twilio": []})
    transient_rate: float = 0.0
    latency: float = 0.0
    """Seconds each send waits before answering (a provider's processing time)."""
    permanent: Callable[[str, dict[str, Any]], Answer | None] | None = None
    seed: int = 1
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._ids = itertools.count(1)
        handler = _handler_for(self)
        self.server = _Server(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeProviders:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def plan(self, provider: str, *answers: Answer) -> None:
        """Answer the next sends to ``provider`` with ``answers``, in order."""
        with self.lock:
            self.planned[provider].extend(answers)

    def sends(self, provider: str) -> list[Recorded]:
        path = "/v3/mail/send" if provider == "sendgrid" else "/Messages.json"
        with self.lock:
            return [r for r in self.requests if r.method == "POST" and r.path.endswith(path)]

    def accepted_ids(self, provider: str) -> list[str]:
        """Retain message ids of the accepted messages, one entry per acceptance."""
        with self.lock:
            return [m["retain_message_id"] for m in self.accepted[provider]]

    # -- decisions (called under the lock) --

    def _next_answer(self, provider: str, message: dict[str, Any]) -> Answer | None:
        if self.planned[provider]:
            return self.planned[provider].pop(0)
        if self.permanent is not None:
            answer = self.permanent(provider, message)
            if answer is not None:
                return answer
        if self.transient_rate and self._rng.random() < self.transient_rate:
            kind = self._rng.choice(["429", "500", "503"])
            if kind == "429":
                return rate_limited(provider, 0.0)
            if provider == "sendgrid":
                return sendgrid_error(int(kind), "internal error")
            return twilio_error(int(kind), 20500, "Internal Server Error")
        return None

    def _accept(self, provider: str, message: dict[str, Any]) -> dict[str, Any]:
        number = next(self._ids)
        if provider == "sendgrid":
            message["id"] = f"sg{number:08d}{uuid.uuid4().hex[:8]}"
        else:
            message["id"] = "SM" + uuid.uuid4().hex
        message["created"] = datetime.now(UTC)
        self.accepted[provider].append(message)
        return message


def _handler_for(fake: FakeProviders) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # answer in one go, as real servers do

        def log_message(self, *args: object) -> None:  # keep test output clean
            pass

        def _record(self) -> Recorded:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            split = urlsplit(self.path)
            recorded = Recorded(
                self.command,
                split.path,
                parse_qs(split.query, keep_blank_values=True),
                {k: v for k, v in self.headers.items()},
                body,
            )
            with fake.lock:
                fake.requests.append(recorded)
            return recorded

        def _send(self, answer: Answer) -> None:
            if answer.delay:
                time.sleep(answer.delay)
            try:
                self.send_response(answer.status)
                for name, value in answer.headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                pass

        def _json(self, status: int, payload: Any, *headers: tuple[str, str]) -> Answer:
            return Answer(
                status,
                json.dumps(payload).encode(),
                (("Content-Type", "application/json"), *headers),
            )

        def do_POST(self) -> None:
            request = self._record()
            if fake.latency:
                time.sleep(fake.latency)
            if request.path == "/v3/mail/send":
                self._send(self._mail_send(request))
            elif re.fullmatch(r"/2010-04-01/Accounts/[^/]+/Messages\.json", request.path):
                self._send(self._twilio_create(request))
            else:
                self._send(self._json(404, {"errors": [{"message": "not found"}]}))

        def do_GET(self) -> None:
            request = self._record()
            if request.path == "/v3/messages":
                self._send(self._activity(request))
            elif re.fullmatch(r"/2010-04-01/Accounts/[^/]+/Messages\.json", request.path):
                self._send(self._twilio_list(request))
            else:
                self._send(self._json(404, {"errors": [{"message": "not found"}]}))

        # -- SendGrid --

        def _sendgrid_auth(self, request: Recorded) -> Answer | None:
            if request.headers.get("Authorization") != f"Bearer {fake.sendgrid_key}":
                return sendgrid_error(401, "The provided authorization grant is invalid")
            return None

        def _mail_send(self, request: Recorded) -> Answer:
            refused = self._sendgrid_auth(request)
            if refused:
                return refused
            try:
                body = request.json()
                to = body["personalizations"][0]["to"][0]["email"]
                retain_id = body.get("custom_args", {}).get("retain_message_id", "")
            except (ValueError, KeyError, IndexError, TypeError):
                return sendgrid_error(400, "Bad Request", None)
            message = {"to": to, "retain_message_id": retain_id, "body": body}
            with fake.lock:
                answer = fake._next_answer("sendgrid", message)
                if answer is not None and not answer.accept:
                    return answer
                accepted = fake._accept("sendgrid", message)
            status = (
                200 if body.get("mail_settings", {}).get("sandbox_mode", {}).get("enable") else 202
            )
            if answer is not None:  # accepted, then answered as planned (slow or malformed)
                return answer
            return Answer(status, b"", (("X-Message-Id", accepted["id"]),))

        def _activity(self, request: Recorded) -> Answer:
            refused = self._sendgrid_auth(request)
            if refused:
                return refused
            query = request.query.get("query", [""])[0]
            match = re.fullmatch(r"unique_args\['retain_message_id'\]=\"([^\"]*)\"", query)
            if not match:
                return sendgrid_error(400, f"invalid query {query!r}", "query")
            with fake.lock:
                found = [m for m in fake.accepted["sendgrid"] if m["retain_message_id"] == match[1]]
            messages = [
                {
                    "msg_id": f"{m['id']}.filterdrecv-1-1",
                    "to_email": m["to"],
                    "status": "delivered",
                    "last_event_time": m["created"].isoformat(),
                }
                for m in found
            ]
            return self._json(200, {"messages": messages})

        # -- Twilio --

        def _twilio_auth(self, request: Recorded) -> Answer | None:
            expected = base64.b64encode(f"{fake.twilio_sid}:{fake.twilio_token}".encode()).decode()
            if request.headers.get("Authorization") != f"Basic {expected}":
                return twilio_error(401, 20003, "Authenticate")
            return None

        def _resource(self, m: dict[str, Any]) -> dict[str, Any]:
            stamp = format_datetime(m["created"], usegmt=True)
            return {
                "sid": m["id"],
                "account_sid": fake.twilio_sid,
                "to": m["to"],
                "from": m.get("from"),
                "messaging_service_sid": m.get("service"),
                "body": m["text"],
                "status": "accepted" if m.get("service") else "queued",
                "num_segments": "1",
                "direction": "outbound-api",
                "date_created": stamp,
                "date_updated": stamp,
                "date_sent": stamp,
                "api_version": "2010-04-01",
                "uri": f"/2010-04-01/Accounts/{fake.twilio_sid}/Messages/{m['id']}.json",
            }

        def _twilio_create(self, request: Recorded) -> Answer:
            refused = self._twilio_auth(request)
            if refused:
                return refused
            form = {k: v[0] for k, v in request.form().items()}
            if "To" not in form or "Body" not in form:
                return twilio_error(400, 21604, "A 'To' phone number is required.")
            callback = form.get("StatusCallback", "")
            retain_id = parse_qs(urlsplit(callback).query).get("retain_message_id", [""])[0]
            message = {
                "to": form["To"],
                "text": form["Body"],
                "from": form.get("From"),
                "service": form.get("MessagingServiceSid"),
                "retain_message_id": retain_id,
            }
            with fake.lock:
                answer = fake._next_answer("twilio", message)
                if answer is not None and not answer.accept:
                    return answer
                accepted = fake._accept("twilio", message)
            if answer is not None:
                if answer.malformed:
                    return Answer(201, b"<html>not json", (("Content-Type", "text/html"),))
                return answer
            return self._json(201, self._resource(accepted))

        def _twilio_list(self, request: Recorded) -> Answer:
            refused = self._twilio_auth(request)
            if refused:
                return refused
            to = request.query.get("To", [None])[0]
            with fake.lock:
                found = [m for m in fake.accepted["twilio"] if to is None or m["to"] == to]
            page = {
                "messages": [self._resource(m) for m in found],
                "end": max(len(found) - 1, 0),
                "first_page_uri": request.path,
                "next_page_uri": None,
                "page": 0,
                "page_size": 200,
                "previous_page_uri": None,
                "start": 0,
                "uri": request.path,
            }
            return self._json(200, page)

    return Handler


def main() -> None:  # pragma: no cover - used by bench/ to serve from its own process
    """Serve until killed; print the base URL on the first line (``python -m tests.providers``)."""
    fake = FakeProviders()
    with fake:
        print(fake.url, flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
