"""Budgets for a nightly window: how long a run may start new files (`max_duration`), how many
bytes it may download before it stops starting new ones (`max_transfer`), both soft cutoffs
like rclone's `--cutoff-mode soft` (files in flight finish); and a limit on the total download
rate across every concurrent transfer (`bwlimit`), a token bucket, optionally on a schedule
like rclone's (`"08:00,10M 19:00,off"`).

How they are written (sizes, rates, schedules) is read in pipeline.quantities."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime

from pipeline.quantities import BandwidthSchedule, parse_bwlimit, parse_duration, parse_size, size_text

__all__ = ["BURST_SECONDS", "BandwidthSchedule", "RateLimiter", "RunBudget", "parse_bwlimit", "parse_duration",
           "parse_size", "run_budget"]

# The bucket holds at most this many seconds of the rate: a pause is never made up by a burst.
BURST_SECONDS = 0.25


class RateLimiter:
    """A token bucket shared by every download of a run: each chunk received takes its size in
    tokens; a thread that takes more than the bucket holds waits until the rate has paid for
    it (reservations, so concurrent downloads share the rate fairly and the total never
    exceeds it by more than one bucket: BURST_SECONDS of the rate). `stop` cuts a wait short."""

    def __init__(self, schedule: BandwidthSchedule, *, stop: threading.Event | None = None,
                 clock: Callable[[], float] = time.monotonic, now: Callable[[], datetime] = datetime.now):
        self.schedule = schedule
        self.stop = stop or threading.Event()
        self._clock = clock
        self._now = now
        self._lock = threading.Lock()
        self._tokens = 0.0
        self._stamp = clock()
        self._rate: int | None = None

    def take(self, amount: int) -> None:
        rate = self.schedule.rate_at(self._now())
        if rate is None:
            return
        with self._lock:
            now = self._clock()
            if rate != self._rate:  # a new slot of the schedule: start from an empty bucket
                self._rate, self._tokens, self._stamp = rate, 0.0, now
            self._tokens = min(rate * BURST_SECONDS, self._tokens + (now - self._stamp) * rate)
            self._stamp = now
            self._tokens -= amount
            wait = -self._tokens / rate if self._tokens < 0 else 0.0
        if wait > 0:
            self.stop.wait(wait)


class RunBudget:
    """The run's time and transfer budgets: `exhausted()` says why no new file may start, or
    None. Downloaded bytes are counted here (`received`), which also applies the rate limit."""

    def __init__(self, *, max_duration: float | None = None, max_transfer: int | None = None,
                 limiter: RateLimiter | None = None, clock: Callable[[], float] = time.monotonic):
        self.max_duration = max_duration
        self.max_transfer = max_transfer
        self.limiter = limiter
        self._clock = clock
        self._started = clock()
        self._lock = threading.Lock()
        self.transferred = 0
        self.reason: str | None = None  # set the first time a budget stops the run from starting files

    def received(self, amount: int) -> None:
        with self._lock:
            self.transferred += amount
        if self.limiter is not None:
            self.limiter.take(amount)

    def exhausted(self) -> str | None:
        if self.reason is None:
            reason = None
            if self.max_duration is not None and self._clock() - self._started >= self.max_duration:
                reason = f"stopped at the time budget ({_duration_text(self.max_duration)}), work remains"
            elif self.max_transfer is not None and self.transferred >= self.max_transfer:
                reason = f"stopped at the transfer budget ({size_text(self.max_transfer)}), work remains"
            with self._lock:
                self.reason = self.reason or reason
        return self.reason


def _duration_text(seconds: float) -> str:
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return "".join(f"{n}{u}" for n, u in ((hours, "h"), (minutes, "m"), (secs, "s")) if n) or f"{seconds:g}s"


def run_budget(settings, *, stop: threading.Event | None = None) -> RunBudget:
    """The budgets an [archive] section (with the command line's overrides) asks for."""
    limiter = RateLimiter(parse_bwlimit(settings.bwlimit), stop=stop) if settings.bwlimit else None
    return RunBudget(max_duration=settings.max_duration, max_transfer=settings.max_transfer, limiter=limiter)
