"""Speed of rendering one message: Retain's ``render`` (locale fallback, strict variables, Babel
money and dates, the HTML part built from the text part and autoescaped, SMS encoding and
segments) and signed links, next to a bare Jinja2 render of the same text template with a plain
dict. Prints figures (best of ``--repeat`` runs) and the ratio; asserts nothing.

    .venv/bin/python bench/render.py [--messages 2000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import date
from pathlib import Path

os.environ.setdefault("RETAIN_LINK_SECRET", "bench-secret")

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from messaging.formatting import FILTERS
from messaging.render import (
    TEMPLATES_DIR,
    MessageContext,
    build_links,
    message_token,
    render,
)


def context(customer: int) -> MessageContext:
    external = f"cus_{customer:06d}"
    return MessageContext(
        links=build_links(external, message_token(f"dunning:{external}:email:0")),
        first_name="Anna",
        name="Anna Berg",
        plan="Team",
        card_brand="visa",
        card_last4="4242",
        card_exp_month=3,
        card_exp_year=2027,
        currency="SEK",
        amount_due_minor=49_900,
        due_date=date(2026, 12, 1),
        cancel_date=date(2026, 12, 28),
    )


def best(label: str, repeat: int, n: int, work: object) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        work()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    per = min(times) / n
    print(f"{label:52} {per * 1e6:8.0f} µs/message  {1 / per:10,.0f} messages/s")
    return per


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    n = args.messages
    contexts = [context(i) for i in range(n)]

    bare_env = Environment(
        loader=FileSystemLoader(Path(TEMPLATES_DIR)),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    bare_env.filters.update(FILTERS)
    bare_env.filters["brand"] = str.title
    template = bare_env.get_template("dunning_failed/sv.email.txt.j2")
    from babel import Locale

    swedish = Locale.parse("sv_SE")

    def bare() -> None:
        for ctx in contexts:
            template.render({**ctx.variables(), "locale": swedish})

    def email() -> None:
        for ctx in contexts:
            render("email", "dunning_failed", "sv-SE", ctx)

    def sms() -> None:
        for ctx in contexts:
            render("sms", "dunning_sms", "sv-SE", ctx)

    def links() -> None:
        for i in range(n):
            build_links(f"cus_{i:06d}", message_token(f"dunning:cus_{i:06d}:email:0"))

    base = best("bare Jinja2, text part only (baseline)", args.repeat, n, bare)
    full = best("Retain render: email (text + HTML part)", args.repeat, n, email)
    best("Retain render: SMS (encoding, segments)", args.repeat, n, sms)
    best("signed links (3 HMACs)", args.repeat, n, links)
    print(f"email render vs bare text render: {base / full:.2f} of the baseline's speed")


if __name__ == "__main__":
    main()
