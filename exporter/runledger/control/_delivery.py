"""Owner notifications: email (SMTP from the environment) and Slack, retried with backoff.

Deliveries run on a small thread pool so the webhook (and a refused lease) answers at once.
Each delivery is retried with exponential backoff (tenacity); one that still fails is
recorded in ``alert_deliveries`` and counted in ``runledger_control_webhook_failures_total``.
Addresses and webhook URLs are never logged or stored in an error.
"""

from __future__ import annotations

import logging
import os
import smtplib
import ssl
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import requests
from tenacity import RetryError, Retrying, stop_after_attempt, wait_exponential

from runledger import _env
from runledger.store import Database
from runledger.store.alerting import NotificationSettings, record_delivery

__all__ = ["Message", "Notifier", "RetryPolicy", "SmtpSettings"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SmtpSettings:
    """Where alert emails are sent from (``RUNLEDGER_SMTP_*``)."""

    host: str
    port: int = 25
    sender: str = "runledger@localhost"
    user: str | None = None
    password: str | None = None
    starttls: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> SmtpSettings | None:
        """Return the settings in ``environ``, or None when no SMTP host is set."""
        host = environ.get(_env.SMTP_HOST)
        if not host:
            return None
        return cls(
            host=host,
            port=int(environ.get(_env.SMTP_PORT) or 25),
            sender=environ.get(_env.SMTP_FROM) or "runledger@localhost",
            user=environ.get(_env.SMTP_USER) or None,
            password=environ.get(_env.SMTP_PASSWORD) or None,
            starttls=(environ.get(_env.SMTP_STARTTLS) or "").lower() in ("1", "true", "yes"),
        )


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a failed delivery is tried again."""

    attempts: int = 4
    first_wait_s: float = 0.5
    max_wait_s: float = 8.0


@dataclass(frozen=True)
class Message:
    """One notification to a tenant's owners."""

    notification_id: int | None
    tenant_id: str
    subject: str
    text: str


class DeliveryFailed(RuntimeError):
    """One attempt failed; the message names the cause, never the address or URL."""


class Notifier:
    """Send owner notifications by email and Slack in the background.

    Args:
        db: the ledger (deliveries are recorded there).
        smtp: SMTP settings; None sends no email.
        retry: retry policy of each delivery.
        on_failure: called once per delivery that failed after its retries (the metric).
    """

    def __init__(
        self,
        db: Database,
        *,
        smtp: SmtpSettings | None,
        retry: RetryPolicy,
        on_failure: Callable[[], None],
        workers: int = 4,
    ) -> None:
        self.db = db
        self.smtp = smtp
        self.retry = retry
        self.on_failure = on_failure
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="notify")

    def notify(self, settings: NotificationSettings, message: Message) -> list[Future[bool]]:
        """Queue the email to the tenant's owners and, when opted in, the Slack post."""
        futures = []
        if settings.owner_emails and self.smtp is not None:
            to = list(settings.owner_emails)
            futures.append(self._pool.submit(self._deliver, "email", message,
                                             lambda: self._send_email(to, message)))  # fmt: skip
        slack = settings.slack_url
        if slack:
            futures.append(self._pool.submit(self._deliver, "slack", message,
                                             lambda: self._post_slack(slack, message)))  # fmt: skip
        return futures

    def close(self) -> None:
        """Wait for queued deliveries and stop the pool."""
        self._pool.shutdown(wait=True)

    def _deliver(self, channel: str, message: Message, send: Callable[[], None]) -> bool:
        attempts = 0
        error: str | None = None
        retrying = Retrying(
            stop=stop_after_attempt(self.retry.attempts),
            wait=wait_exponential(multiplier=self.retry.first_wait_s, max=self.retry.max_wait_s),
            reraise=False,
        )
        try:
            for attempt in retrying:
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    send()
        except RetryError as exc:
            cause = exc.last_attempt.exception()
            error = str(cause) if isinstance(cause, DeliveryFailed) else type(cause).__name__
        delivered = error is None
        try:
            with self.db.connection() as conn:
                record_delivery(
                    conn, notification_id=message.notification_id, tenant_id=message.tenant_id,
                    channel=channel, delivered=delivered, attempts=attempts, error=error,
                )  # fmt: skip
        except Exception:  # the delivery itself is done; its record is best effort
            log.exception("could not record a %s delivery", channel)
        if not delivered:
            # Counted once recorded: whoever sees the count can read why it failed.
            self.on_failure()
            log.warning(
                "%s notification for tenant %s failed after %d attempts: %s",
                channel, message.tenant_id, attempts, error,
            )  # fmt: skip
        return delivered

    def _send_email(self, to: list[str], message: Message) -> None:
        smtp = self.smtp
        assert smtp is not None
        mail = EmailMessage()
        mail["From"] = smtp.sender
        mail["To"] = ", ".join(to)
        mail["Subject"] = message.subject
        mail.set_content(message.text)
        try:
            with smtplib.SMTP(smtp.host, smtp.port, timeout=10) as client:
                if smtp.starttls:
                    client.starttls(context=ssl.create_default_context())
                if smtp.user:
                    client.login(smtp.user, smtp.password or "")
                client.send_message(mail)
        except smtplib.SMTPResponseException as exc:
            raise DeliveryFailed(f"SMTP server answered {exc.smtp_code}") from None
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryFailed(f"SMTP {type(exc).__name__}") from None

    def _post_slack(self, url: str, message: Message) -> None:
        body: dict[str, Any] = {"text": f"*{message.subject}*\n{message.text}"}
        try:
            resp = requests.post(url, json=body, timeout=10)
        except requests.RequestException as exc:
            raise DeliveryFailed(f"Slack {type(exc).__name__}") from None
        if resp.status_code >= 300:
            raise DeliveryFailed(f"Slack answered {resp.status_code}")
