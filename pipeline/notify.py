"""Heartbeats for a monitor that expects the nightly run (healthchecks.io's conventions):
`<ping_url>/start` when a run starts, `<ping_url>` when it exits 0, `<ping_url>/<exit code>`
otherwise, each a POST whose body is the run's one-line summary or reason of failure (redacted,
at most MAX_BODY bytes). A ping that fails is a warning: it never changes the run's outcome."""

from __future__ import annotations

import logging

import httpx

import pipeline
from pipeline import retry
from pipeline.redact import REDACTOR, printable

log = logging.getLogger("rtk_archive.notify")

MAX_BODY = 10_000  # bytes; healthchecks.io keeps the first 100 kB of a body


class Heartbeat:
    def __init__(self, url: str, *, timeout: float = 10.0, attempts: int = 3, redact=REDACTOR,
                 backoff_seconds: float = 1.0):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.attempts = attempts
        self.redact = redact
        self.backoff_seconds = backoff_seconds

    def start(self, message: str = "") -> bool:
        return self._ping("/start", message)

    def finish(self, exit_code: int, message: str = "") -> bool:
        return self._ping("" if exit_code == 0 else f"/{exit_code}", message)

    def _ping(self, suffix: str, message: str) -> bool:
        """POST the (redacted, bounded) message to the URL; True when the monitor took it."""
        body = printable(self.redact(message)).encode("utf-8")[:MAX_BODY]
        where = f"heartbeat {suffix or '/'}"
        attempts = retry.policy(
            retry=retry.on_exception(_worth_retrying), attempts=self.attempts, seconds=self.timeout * self.attempts,
            wait=retry.backoff(self.backoff_seconds, 10.0), log=log, what=where)
        try:
            with httpx.Client(timeout=self.timeout, follow_redirects=True,
                              headers={"User-Agent": f"rtk-archive/{pipeline.__version__}"}) as client:
                for attempt in attempts:
                    with attempt:
                        response = client.post(self.url + suffix, content=body)
                        response.raise_for_status()
            return True
        except httpx.HTTPError as exc:
            # The URL carries the check's secret: only the redacted reason is logged.
            log.warning("%s failed (the run's outcome is unchanged): %s", where, self.redact(_reason(exc)))
            return False


def _worth_retrying(exc: BaseException) -> bool:
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code >= 500 or exc.response.status_code == 429
    return isinstance(exc, httpx.TransportError)


def _reason(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    return f"{type(exc).__name__}: {exc}"


def heartbeat_for(config) -> Heartbeat | None:
    """The configured heartbeat, or None when [notify] ping_url is not set."""
    settings = config.notify
    if settings.ping_url is None:
        return None
    return Heartbeat(settings.ping_url.get_secret_value(), timeout=settings.timeout, attempts=settings.attempts)


def one_line(text: str | None) -> str:
    """The first line of a summary, for the ping's body."""
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""
