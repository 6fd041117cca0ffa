"""What the auditor's HTML report shows, computed from the ledger alone: coverage per day,
deadlines, verification recency and retention per target, signatures and timestamps, and one
row per recording file and target (pipeline.archive.report). Pure data: html_report renders it."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone

from pipeline.archive.object_keys import MANIFEST
from pipeline.archive.report import report_rows
from pipeline.clock import from_iso, utcnow

# How long ago a copy was last verified, in buckets a chart can show.
RECENCY = (("within 1 day", 1), ("1-7 days", 7), ("7-30 days", 30), ("over 30 days", None))
NEVER = "never"


@dataclass
class ReportData:
    generated_at: str
    ledger: str
    targets: list[str]
    rows: list[dict]
    days: list[tuple[str, int, int]] = field(default_factory=list)  # day, archived at every target, not
    missing: list[dict] = field(default_factory=list)  # recordings not archived at every target
    lost: list[dict] = field(default_factory=list)
    at_risk: list[dict] = field(default_factory=list)
    recency: dict[str, Counter] = field(default_factory=dict)  # target -> bucket -> copies
    retention: dict[str, dict] = field(default_factory=dict)  # target -> facts
    signatures: dict = field(default_factory=dict)
    timestamps: dict = field(default_factory=dict)


def gather(context, *, since: str | None, until: str | None) -> ReportData:
    ledger, config = context.ledger, context.config
    rows = report_rows(ledger, since=since, until=until)
    recordings = ledger.recordings(since=since, until=until)
    data = ReportData(generated_at=utcnow(), ledger=str(config.ledger.path),
                      targets=[t.name for t in config.targets], rows=rows)
    per_day: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for rec in recordings:
        complete = rec.state == "archived"
        per_day[(rec.invoked_time or "unknown")[:10]][0 if complete else 1] += 1
        if rec.state == "lost":
            data.lost.append({"id": rec.id, "meeting": rec.meeting_title or rec.meeting_id, "invoked": rec.invoked_time,
                              "deadline": rec.deadline, "reason": rec.reason})
        elif not complete:
            data.missing.append({"id": rec.id, "state": rec.state, "reason": rec.reason,
                                 "lacking": _lacking(rows, rec.id, data.targets)})
    data.days = [(day, ok, not_ok) for day, (ok, not_ok) in sorted(per_day.items())]
    data.at_risk = [{"id": r.id, "meeting": r.meeting_title, "deadline": r.deadline, "state": r.state}
                    for r in ledger.at_risk(utcnow())]
    now = datetime.now(timezone.utc)
    copies = [r for r in rows if r["target"] != "-"]
    for target in data.targets:
        mine = [r for r in copies if r["target"] == target]
        data.recency[target] = Counter(_recency(r["verified_at"] or r["archived_at"], now) for r in mine
                                       if r["state"] == "archived")
        data.recency[target]["problem"] = sum(1 for r in mine if r["state"] != "archived")
        data.retention[target] = _retention(mine)
    data.signatures = _signatures(copies)
    data.timestamps = _timestamps(ledger.timestamps(config.audit.path), config.timestamping.url)
    return data


def _lacking(rows: list[dict], rid: str, targets: list[str]) -> list[str]:
    """`kind at target` for each file of the recording not archived at a target."""
    kinds = {r["kind"] for r in rows if r["recording_id"] == rid and r["kind"] not in ("-", MANIFEST)}
    archived = {(r["kind"], r["target"]) for r in rows if r["recording_id"] == rid and r["state"] == "archived"}
    return [f"{kind} at {target}" for kind in sorted(kinds) for target in targets if (kind, target) not in archived]


def _recency(when: str | None, now: datetime) -> str:
    if not when:
        return NEVER
    age = (now - from_iso(when)).total_seconds() / 86_400
    return next(label for label, days in RECENCY if days is None or age <= days)


def _retention(copies: list[dict]) -> dict:
    modes = Counter((r["retention_mode"] or "none") for r in copies)
    until = sorted(r["retention_until"] for r in copies if r["retention_until"])
    return {"copies": len(copies), "modes": dict(modes), "legal_hold": sum(1 for r in copies if r["legal_hold"]),
            "earliest_until": until[0] if until else None, "latest_until": until[-1] if until else None}


def _signatures(copies: list[dict]) -> dict:
    manifests = [r for r in copies if r["kind"] == MANIFEST and r["state"] == "archived"]
    keys = Counter(r["signed_by"] for r in manifests if r.get("signed_by"))
    return {"manifests": len(manifests), "signed": sum(keys.values()), "keys": dict(keys)}


def _timestamps(rows, url: str | None) -> dict:
    tokens = [r for r in rows if r.token is not None]
    failed = [r for r in rows if r.token is None]
    latest = max(tokens, key=lambda r: (r.gen_time or "", r.lines), default=None)
    return {"configured": bool(url), "tokens": len(tokens), "failed": len(failed),
            "last_error": failed[-1].error if failed else None,
            "latest_time": latest.gen_time if latest else None, "latest_lines": latest.lines if latest else None}
