"""``retain preview`` (what a customer would receive), ``retain webhooks serve`` (the delivery
webhook receiver) and the SMS-budget warnings of ``retain validate``. None of them imports
Prefect."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from flows.console import console, fail, safe, warning

if TYPE_CHECKING:
    from messaging.context import CustomerView

webhooks_app = typer.Typer(
    help="Delivery webhooks (SendGrid events, Twilio callbacks).", no_args_is_help=True
)


SAMPLE_NAMES = {
    "en": "Alex Morgan",
    "sv": "Anna Lindqvist",
    "nl": "Sanne de Vries",
    "zh": "王芳",
    "th": "สมชาย ใจดี",
}
SAMPLE_MONEY = {
    "USD": 4_900,
    "SEK": 49_900,
    "EUR": 4_900,
    "CNY": 34_900,
    "THB": 169_900,
    "GBP": 3_900,
}
SAMPLE_CURRENCY = {"en": "USD", "sv": "SEK", "nl": "EUR", "zh": "CNY", "th": "THB"}


def warn_default_link_secret() -> None:
    """Say so (stderr) when links are signed with the demo's per-install key."""
    from messaging.links import LinkSecretError, default_secret_warning

    try:
        text = default_secret_warning()
    except LinkSecretError as error:
        fail("links", str(error), "fix RETAIN_LINK_SECRET_BLOCK")
    if text:
        warning(text)


def sms_budget_warnings(paths: list[Path]) -> list[str]:
    """``file: warning`` lines for SMS templates that can exceed their experiment's budget
    (files that do not load are reported by validation itself)."""
    from experiments.loader import SpecError, load_spec
    from messaging.sms_budget import budget_warnings

    lines: list[str] = []
    for path in paths:
        try:
            spec = load_spec(path).spec
        except (SpecError, OSError):
            continue
        lines.extend(f"{path}: {warning}" for warning in budget_warnings(spec))
    return lines


def _sample_view(locale: str, now: datetime) -> CustomerView:
    from messaging.context import CustomerView
    from messaging.formatting import babel_locale

    language = babel_locale(locale).language
    currency = SAMPLE_CURRENCY.get(language, "USD")
    territory = babel_locale(locale).territory
    if territory:  # sv-FI pays in euros
        from babel.numbers import get_territory_currencies

        currency = (get_territory_currencies(territory) or [currency])[0]
    due = now.date() - timedelta(days=3)
    next_month = date(now.year + now.month // 12, now.month % 12 + 1, 1)
    return CustomerView(
        external_id="cus_PREVIEW",
        name=SAMPLE_NAMES.get(language, SAMPLE_NAMES["en"]),
        plan="Team",
        card_brand="visa",
        card_last4="4242",
        card_exp_month=next_month.month,
        card_exp_year=next_month.year,
        currency=currency,
        amount_due_minor=SAMPLE_MONEY.get(currency, 4_900),
        due_date=due,
        cancel_date=due + timedelta(days=27),
    )


def _customer_view(
    external_id: str, now: datetime, experiment_key: str
) -> tuple[CustomerView, str, str | None]:
    """(view, locale, offer code or None) of a customer in the database."""
    from sqlalchemy import select
    from sqlmodel import col

    from messaging.decisions import customer_view
    from models.billing_facts import load_billing_facts
    from models.customer_data import Customer
    from models.db import database_url, engine_for, redact
    from models.migrate import is_up_to_date
    from models.outbox_facts import load_customers
    from models.records import Experiment, OfferGrant

    engine = engine_for()
    try:
        if not is_up_to_date(engine):
            fail(
                "preview",
                f"database {redact(database_url())} is not up to date",
                "run `retain db upgrade`",
            )
        with engine.connect() as conn:
            found = conn.execute(
                select(col(Customer.id)).where(col(Customer.external_id) == external_id)
            ).first()
            if found is None:
                fail(
                    "preview",
                    f"no customer {external_id!r} in {redact(database_url())}",
                    "give the customer's external id, or use --locale for a sample customer",
                )
            cid = int(found[0])
            facts = load_customers(conn, [cid])[cid]
            billing = load_billing_facts(conn, [cid], now)[cid]
            code = conn.execute(
                select(col(OfferGrant.code))
                .join(Experiment, col(Experiment.id) == col(OfferGrant.experiment_id))
                .where(col(Experiment.key) == experiment_key, col(OfferGrant.customer_id) == cid)
            ).scalar()
    finally:
        engine.dispose()
    view = customer_view(facts, billing)
    return view, facts.locale, code


def preview(
    path: Annotated[Path, typer.Argument(help="Experiment YAML file.")],
    arm: Annotated[str, typer.Option(help="The arm whose messages to show.")],
    customer: Annotated[
        str | None, typer.Option(help="A customer's external id (from RETAIN_DATABASE_URL).")
    ] = None,
    locale: Annotated[
        str | None, typer.Option(help="Show a sample customer in this locale, e.g. sv-SE, zh-CN.")
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder for the HTML parts.")] = Path("preview"),
    default_locale: Annotated[
        str | None,
        typer.Option(help="Fallback locale before English; default: messaging.default_locale."),
    ] = None,
) -> None:
    """Render exactly what a customer of ARM would receive, step by step: subject, text and HTML
    (written to a file) of each email, and each SMS with its segments and encoding."""
    from experiments.loader import SpecError, load_spec
    from messaging.context import idempotency_key, message_context
    from messaging.render import TemplateError, render, resolve_locale, template_exists

    if customer and locale:
        fail("preview", "--customer and --locale exclude each other", "give one of them")
    try:
        spec = load_spec(path, template_exists).spec
    except SpecError as error:
        fail(str(path), str(error.problems[0]) if error.problems else str(error), "fix the file")
    except OSError as error:
        fail(str(path), error.strerror or "cannot read", "check the path")
    try:
        chosen_arm = spec.arm(arm)
    except KeyError:
        names = ", ".join(a.name for a in spec.arms)
        fail("preview", f"experiment {spec.key!r} has no arm {arm!r}", f"use one of: {names}")
    warn_default_link_secret()
    default_locale = default_locale or spec.messaging.default_locale
    now = datetime.now(UTC)
    if customer:
        view, customer_locale, code = _customer_view(customer, now, spec.key)
    else:
        customer_locale = locale or "en"
        view, code = _sample_view(customer_locale, now), None
    if not chosen_arm.steps:
        console.print(f"arm {safe(arm)!s} sends nothing (a control arm)")
        return
    out.mkdir(parents=True, exist_ok=True)
    console.print(
        f"[bold]{safe(spec.key)}[/bold] arm [bold]{safe(arm)}[/bold] for "
        f"{safe(view.name or view.external_id)} ({safe(customer_locale)}, "
        f"{safe(view.currency or '-')})"
    )
    for index, step in sorted(enumerate(chosen_arm.steps), key=lambda s: s[1].at):
        key = idempotency_key(spec.key, view.external_id, arm, index)
        context = message_context(key, spec.key, view, chosen_arm.offer, code)
        try:
            chosen = resolve_locale(step.channel, step.template, customer_locale, default_locale)
            message = render(step.channel, step.template, customer_locale, context, default_locale)
        except TemplateError as error:
            fail("preview", str(error), "fix the template")
        console.rule(
            f"step {index} · at {step.at.days}d{'' if not step.at.seconds else f' {step.at.seconds // 3600}h'}"
            f" · {step.channel} · {safe(step.template)} ({chosen})"
            + (f" · unless {step.unless}" if step.unless else "")
        )
        if message.channel == "email":
            console.print(f"Subject: {safe(message.subject or '')}\n")
            console.print(safe(message.text))
            name = re.sub(
                r"[^a-z0-9_.-]+", "-", f"{spec.key}.{arm}.{index}.{step.template}.{chosen}"
            )
            html_path = out / f"{name}.html"
            html_path.write_text(message.html or "", encoding="utf-8")
            console.print(f"HTML: {safe(str(html_path))}")
        else:
            from messaging.render import sms_encoding

            units = len(message.text.encode("utf-16-le")) // 2
            console.print(safe(message.text) + "\n")
            console.print(
                f"Segments: {message.sms_segments} ({sms_encoding(message.text)}, {units} characters)"
            )


@webhooks_app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8787,
) -> None:
    """Receive SendGrid Event Webhook batches, Twilio status callbacks and inbound messages, and
    one-click unsubscribes; every request is signature-checked. Settings come from the
    environment (RETAIN_SENDGRID_WEBHOOK_PUBLIC_KEY, RETAIN_TWILIO_AUTH_TOKEN,
    RETAIN_WEBHOOK_PUBLIC_URL; see README)."""
    import uvicorn

    from messaging.webhooks import WebhookSettings, create_app
    from messaging.webhooks.settings import WebhookSettingsError
    from messaging.webhooks.verify import VerificationKeyError
    from models.db import database_url, engine_for, redact
    from models.migrate import is_up_to_date

    try:
        settings = WebhookSettings.from_env()
    except WebhookSettingsError as error:
        fail("webhooks", str(error), "fix the variable")
    engine = engine_for()
    if not is_up_to_date(engine):
        fail(
            "webhooks",
            f"database {redact(database_url())} is not up to date",
            "run `retain db upgrade`",
        )
    warn_default_link_secret()
    from models.imports.stripe_webhook import stripe_webhook_route

    try:
        # Stripe's events arrive at /webhooks/stripe (verified with RETAIN_STRIPE_WEBHOOK_SECRET).
        app = create_app(engine, settings, routes=[stripe_webhook_route(lambda: engine)])
    except VerificationKeyError as error:
        fail("webhooks", str(error), "set RETAIN_SENDGRID_WEBHOOK_PUBLIC_KEY again")
    for label, value in settings.describe():
        console.print(f"{label:34} {safe(value)}")
    console.print(f"listening on http://{host}:{port} (database {safe(redact(database_url()))})")
    uvicorn.run(app, host=host, port=port, log_level="warning")
