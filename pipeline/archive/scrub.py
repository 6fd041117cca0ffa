"""`rtk-archive verify --scrub`: the nightly re-check that keeps every copy's last verification
recent. It checks the copies whose last verification is oldest first (never verified ones
before all others), re-hashing the bytes where a check reads them anyway (a folder, local or
over SFTP: `stat_rereads`) and by the stored and backend checksums at the clouds, and starts no
new check once its time budget is spent. Each check records when it ran, so the next scrub
continues where this one stopped; run nightly with a budget large enough, every copy is
re-verified at least once per `max_age`. What is still overdue after it is reported."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from pipeline.archive.context import Context
from pipeline.archive.reverify import VerifyOutcome, check_copies
from pipeline.clock import iso_utc
from pipeline.ledger import CopyRow, Ledger


@dataclass
class ScrubOutcome:
    verify: VerifyOutcome
    overdue: list[CopyRow]  # still last verified before now - max_age, after the scrub
    max_age: timedelta
    budget: timedelta | None


def overdue_copies(ledger: Ledger, max_age: timedelta, *, target: str | None = None) -> list[CopyRow]:
    """Copies whose last verification is older than `max_age` (or that were never verified)."""
    return ledger.copies_verified_before(iso_utc(datetime.now(timezone.utc) - max_age), target=target)


def scrub_archive(context: Context, *, target: str | None, budget: timedelta | None, max_age: timedelta,
                  deep: bool = False) -> ScrubOutcome:
    """Re-check copies oldest verification first, within `budget` (every copy when None); deep
    everywhere with `deep`, else where a check reads the bytes anyway."""
    deadline = time.monotonic() + budget.total_seconds() if budget is not None else None
    outcome = check_copies(
        context, lambda: context.ledger.copies_verified_before(None, target=target),
        deep_at=lambda t: deep or t.capabilities.stat_rereads, deadline=deadline,
        started={"scrub": True, "deep": deep, "target": target,
                 "budget_seconds": budget.total_seconds() if budget is not None else None,
                 "max_age_seconds": max_age.total_seconds()})
    return ScrubOutcome(verify=outcome, overdue=overdue_copies(context.ledger, max_age, target=target),
                        max_age=max_age, budget=budget)


def describe_age(age: timedelta) -> str:
    """30d, 2h, 90m, 45s: the largest whole unit."""
    seconds = int(age.total_seconds())
    for unit, size in (("w", 604_800), ("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
