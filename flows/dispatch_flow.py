"""The dispatch flow: send what is due, each message exactly once, paced per channel.

In its own module so that ``retain dispatch`` imports only what sending needs (not the statistics
behind enrolment checks and evaluation); :mod:`flows.pipeline` re-exports it, so deployments may
name either ``flows/pipeline.py:dispatch_messages`` or ``flows/dispatch_flow.py:dispatch_messages``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE
from prefect.states import Failed

from messaging.dispatcher import DispatchOptions, DispatchSummary, dispatch_due
from messaging.sending import LimiterError
from messaging.settings import build_channels, call_budget, load_settings
from models.db import engine_for
from models.offers import grant_sent_offers


@task(cache_policy=NONE)
def dispatch(as_of: datetime | None, outbox_dir: str) -> DispatchSummary:
    # No task retries: a dispatch that stops says why in its summary, and the next run resumes
    # (expired claims are taken over, messages in flight are reconciled with the provider).
    from flows.throttle import shared_limiters

    settings = load_settings()
    channels = build_channels(settings, Path(outbox_dir))
    try:
        limiters = shared_limiters(settings)  # Prefect's rate limits where they exist
    except LimiterError as error:
        return DispatchSummary(0, {}, 0, 0, 0, error=str(error))
    if limiters:
        get_run_logger().info("paced by Prefect rate limits for %s", ", ".join(sorted(limiters)))
    options = DispatchOptions(
        senders=settings.senders,
        rates={"email": settings.email_rate_per_second, "sms": settings.sms_rate_per_second},
        limiters=limiters,
        lease=timedelta(seconds=settings.lease_seconds),
        call_budget=call_budget(settings),
    )
    return dispatch_due(engine_for(), as_of, channels, options=options)


class DispatchIncomplete(RuntimeError):
    """A dispatch that could not finish; its flow run ends Failed (a state to alert on) and
    ``summary`` says what it did and why it stopped (nothing is sent twice by the next run)."""

    def __init__(self, summary: DispatchSummary) -> None:
        super().__init__(f"dispatch incomplete: {summary.error}")
        self.summary = summary


@flow(name="dispatch-messages")
def dispatch_messages(outbox_dir: str = "outbox", as_of: datetime | None = None) -> DispatchSummary:
    """Send every due message in the outbox through its channel, once. Without ``as_of`` each
    batch is judged by the clock when it is sent; with it, the whole run acts at that time.

    A dispatch that stops early (a provider refusing the credentials, a missing rate limit, the
    database going away) ends the flow run Failed with the reason as its message, and calling
    the flow raises :class:`DispatchIncomplete` carrying the summary."""
    summary = dispatch(as_of, outbox_dir)
    grant_sent_offers(engine_for(), as_of or datetime.now(UTC))  # offer codes of what was sent
    logger = get_run_logger()
    logger.info("dispatched: %s", summary.counts())
    if summary.error:
        logger.error("dispatch incomplete: %s", summary.error)
        # A returned Failed state: the run is Failed without a traceback in its log.
        return Failed(  # type: ignore[return-value]
            message=f"dispatch incomplete: {summary.error}", data=DispatchIncomplete(summary)
        )
    return summary
