"""A local HTTP server on 127.0.0.1 that answers as Stripe's API does for the list endpoints
Retain reads: list objects newest first, ``limit``, ``starting_after``, ``has_more``, ``created[gt]``,
``types[]`` on events, a customer by id, Bearer authentication and Stripe's error bodies. It records every request.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit


@dataclass
class FakeStripe:
    api_key: str
    objects: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {
            "customers": [],
            "subscriptions": [],
            "invoices": [],
            "events": [],
            "payment_methods": [],
        }
    )
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    authorizations: list[str | None] = field(default_factory=list)
    base: str = ""

    def add(self, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
        self.objects[resource].append(obj)
        return obj

    def answer(
        self, method: str, target: str, authorization: str | None
    ) -> tuple[int, dict[str, Any]]:
        parts = urlsplit(target)
        query = dict(parse_qsl(parts.query))
        self.requests.append((method, parts.path, query))
        self.authorizations.append(authorization)
        if authorization != f"Bearer {self.api_key}":
            return 401, _error("invalid_request_error", "Invalid API Key provided: rk_****", None)
        segments = parts.path.strip("/").split("/")
        if method != "GET" or segments[0] != "v1":
            return 404, _error(
                "invalid_request_error", f"Unrecognized request URL ({method}: {parts.path}).", None
            )
        if len(segments) == 2 and segments[1] in (
            "customers",
            "subscriptions",
            "invoices",
            "events",
        ):
            items = list(self.objects[segments[1]])
        elif len(segments) == 3 and segments[1] == "customers":
            found = [c for c in self.objects["customers"] if c["id"] == segments[2]]
            if not found:
                return 404, _error(
                    "invalid_request_error",
                    f"No such customer: '{segments[2]}'",
                    "resource_missing",
                )
            return 200, found[-1]
        elif len(segments) == 4 and segments[1] == "customers" and segments[3] == "payment_methods":
            items = [pm for pm in self.objects["payment_methods"] if pm["customer"] == segments[2]]
        else:
            return 404, _error(
                "invalid_request_error", f"Unrecognized request URL ({method}: {parts.path}).", None
            )
        if "created[gt]" in query:
            items = [o for o in items if o["created"] > int(query["created[gt]"])]
        types = [v for k, v in query.items() if k.startswith("types[")]
        if types:
            items = [o for o in items if o["type"] in types]
        items.sort(key=lambda o: (o["created"], o["id"]), reverse=True)
        if "starting_after" in query:
            ids = [o["id"] for o in items]
            if query["starting_after"] not in ids:
                return 400, _error("invalid_request_error", "No such object", "resource_missing")
            items = items[ids.index(query["starting_after"]) + 1 :]
        limit = int(query.get("limit", 10))
        page = items[:limit]
        return 200, {
            "object": "list",
            "url": parts.path,
            "has_more": len(items) > limit,
            "data": page,
        }


def _error(kind: str, message: str, code: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"type": kind, "message": message}
    if code:
        body["code"] = code
    return {"error": body}


@contextmanager
def running(fake: FakeStripe) -> Iterator[FakeStripe]:
    """Serve ``fake`` on a free port of 127.0.0.1 for the duration of the block."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = fake.answer("GET", self.path, self.headers.get("Authorization"))
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Request-Id", f"req_{len(fake.requests)}")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    fake.base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
