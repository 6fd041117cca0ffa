"""The commands that only look: `status` (counts per state, the last runs, problems with
their reasons, recordings at risk), `list` (what the API has, with each recording's archive
state) and `report` (per file and target: where, SHA-256, retention, last check). They read the
ledger read-only: no lock, nothing created."""

from __future__ import annotations

import csv
import io
from dataclasses import asdict
from datetime import datetime, timedelta, timezone

from pipeline import errors
from pipeline.cli.output import Outcome, check_window, load, plural
from pipeline.clock import iso_utc, utcnow
from pipeline.ledger import RunRow
from pipeline.archive.scrub import describe_age, overdue_copies
from pipeline.session import open_session

OVERDUE_SHOWN = 20  # overdue copies listed by `status` (all are counted)
ALL_STATUSES = ("INVOKED", "RECORDING", "UPLOADING", "UPLOADED", "ERRORED", "PAUSED")


def last_run_state(run: RunRow, holder: str | None) -> str:
    """finished (exit N), running, or killed: a run that never finished and whose lock is not
    held by its own process (free, or taken by a later `verify`) was killed (SIGKILL, power
    loss, OOM) before it could record its end. `holder`: the ledger's lock_holder()."""
    if run.finished_at:
        return f"exit {run.exit_code}"
    if holder is None:
        return "killed"
    if holder.startswith("unknown") or holder.startswith(f"pid {run.pid} on {run.host},"):
        return "running"  # (a lock file we cannot read: never claim a run was killed)
    return "killed"


def cmd_status(args) -> Outcome:
    config = load(args)
    soon = iso_utc(datetime.now(timezone.utc) + timedelta(hours=config.archive.deadline_margin_hours))
    with open_session(config, "status", record=False) as context:
        ledger = context.ledger
        counts, problems = ledger.state_counts(), ledger.problems()
        at_risk, runs, holder = ledger.at_risk(soon), ledger.last_runs(5), ledger.lock_holder()
        no_good_copy = [asdict(p) for p in ledger.copies_without_good_sibling()]
        overdue = overdue_copies(ledger, config.verify.max_age)
        workers = _workers(ledger) if config.ledger.shared else None
    runs = [{**asdict(run), "state": last_run_state(run, holder if index == 0 else None) if workers is None
             else _shared_run_state(run, workers)} for index, run in enumerate(runs)]
    failures = [asdict(problem) for problem in problems]
    files, recordings = counts["files"], counts["recordings"]
    # Lost and skipped recordings are final: listed, but they don't keep a monitor red forever.
    actionable = [f for f in failures if f["state"] in ("failed", "missing", "mismatch")]
    last = runs[0] if runs else None
    last_failed = last is not None and (last["state"] == "killed" or last["exit_code"] not in (None, errors.EXIT_OK))
    payload = {"counts": counts, "failures": failures, "at_risk": [asdict(r) for r in at_risk], "last_runs": runs,
               "last_run": last["state"] if last else None, "running": holder,
               "archived": files.get("archived", 0), "failed": files.get("failed", 0),
               "skipped": recordings.get("skipped", 0),
               "files_archived": files.get("archived", 0), "files_failed": files.get("failed", 0),
               "files_lost": files.get("lost", 0), "recordings_skipped": recordings.get("skipped", 0),
               "recordings_at_risk": len(at_risk),
               "copies_problems": sum(n for state, n in counts["copies"].items() if state != "archived"),
               "no_good_copy": no_good_copy, "copies_overdue": len(overdue),
               "overdue": [{"recording_id": c.recording_id, "kind": c.kind, "target": c.target, "key": c.key,
                            "verified_at": c.verified_at} for c in overdue[:OVERDUE_SHOWN]]}
    lines = [f"ledger {config.ledger.shown}"]
    for table in ("recordings", "files", "copies"):
        parts = ", ".join(f"{n} {state}" for state, n in sorted(counts[table].items())) or "none"
        lines.append(f"  {table}: {parts}")
    if no_good_copy:  # the most serious: the archive's own copies were all that was left
        lines.append(f"NO GOOD COPY ANYWHERE: {plural(len(no_good_copy), 'copy', 'copies')} missing or altered "
                     "with no intact copy at any target to repair from:")
        lines += [f"  {p['recording_id']} {p['kind']} -> {p['target']} {p['state']}: {p['reason']}"
                  for p in no_good_copy]
    if last:
        lines.append(_last_run_line(last, holder, last_failed))
    if overdue:
        lines.append(f"overdue: {plural(len(overdue), 'copy', 'copies')} last verified more than "
                     f"{describe_age(config.verify.max_age)} ago (run `verify --scrub` nightly):")
        lines += [f"  {c.recording_id} {c.kind} -> {c.target} last verified {c.verified_at or 'never'}"
                  for c in overdue[:OVERDUE_SHOWN]]
        if len(overdue) > OVERDUE_SHOWN:
            lines.append(f"  ... and {len(overdue) - OVERDUE_SHOWN} more")
    if workers is not None:
        alive = [w for w in workers if w.alive]
        payload["workers"] = [asdict(w) for w in alive]
        lines.append(f"workers alive: {len(alive)}")
        lines += [f"  {w.host} pid {w.pid} ({w.command}), last heartbeat {w.heartbeat_at}, "
                  f"working on: {', '.join(w.items) or 'nothing'}" for w in alive]
    if at_risk:
        lines.append(f"at risk: {plural(len(at_risk), 'recording')} not archived and deleted by RealtimeKit within "
                     f"{config.archive.deadline_margin_hours:g} h:")
        lines += [f"  {r.id} deadline {r.deadline} ({r.meeting_title or 'untitled'})" for r in at_risk]
    if failures:
        lines.append("problems:")
        lines += [f"  {f['recording_id']} {f['kind'] or ''} {('-> ' + f['target']) if f['target'] else ''} "
                  f"{f['state']}: {f['reason']}" for f in failures]
    reasons = []
    if no_good_copy:
        reasons.append(f"{plural(len(no_good_copy), 'copy', 'copies')} with no good copy anywhere")
    if last_failed:
        reasons.append("the last run " + {"killed": "was killed",
                                          "exit 130": "was interrupted"}.get(last["state"], f"ended with {last['state']}"))
    if actionable:
        reasons.append(f"{plural(len(actionable), 'problem')} to act on")
    if at_risk:
        reasons.append(f"{plural(len(at_risk), 'recording')} at risk")
    code = errors.EXIT_FAILURES if reasons else errors.EXIT_OK
    return Outcome(code, payload, "\n".join(lines), error="; ".join(reasons) or None)


def _workers(ledger):
    from pipeline.ledger.leases import workers

    return workers(ledger)


def _shared_run_state(run: RunRow, workers) -> str:
    """On a shared ledger: an unfinished run is running while its worker's heartbeat is recent."""
    if run.finished_at:
        return f"exit {run.exit_code}"
    return "running" if any(w.alive and (w.host, w.pid) == (run.host, run.pid) for w in workers) else "killed"


def _last_run_line(last: dict, holder: str | None, failed: bool) -> str:
    outcome = last["state"]
    if last["state"] == "killed":
        outcome = "KILLED (it never finished: its counts are unknown; run it again)"
    elif last["state"] == "running":
        outcome = f"RUNNING now ({holder})"
    elif last["exit_code"] == errors.EXIT_INTERRUPTED:
        outcome = "INTERRUPTED (exit 130): run it again to finish"
    elif last["exit_code"] == errors.EXIT_BUDGET:  # the note says how many files it left
        outcome = "STOPPED at its budget (exit 5): the next run does the rest"
    elif failed:
        outcome = f"FAILED with exit {last['exit_code']}"
    detail = "" if last["state"] in ("killed", "running") else \
        f" ({last['archived']} file(s) archived, {last['failed']} failed)"
    return (f"  last run: {last['command']} started {last['started_at']}: {outcome}{detail}"
            f"{' - ' + last['note'] if last['note'] else ''}")


def cmd_list(args) -> Outcome:
    config = load(args)
    check_window(args)
    rows = []
    with open_session(config, "list", record=False, api=True) as context:
        status = ALL_STATUSES if args.all_statuses else ("UPLOADED",)
        listed = list(context.api.iter_recordings(status=status, start_time=args.since, end_time=args.until,
                                                  meeting_id=args.meeting_id))
        known = context.ledger.known([rec.id for rec in listed])
    for rec in listed:
        row = known[rec.id].recording
        rows.append({"id": rec.id, "status": rec.status, "meeting_id": rec.meeting_id, "title": rec.meeting_title,
                     "invoked_time": iso_utc(rec.invoked_time),
                     "file_size": rec.file_size, "audio": bool(rec.audio_download_url),
                     "archive_state": row.state if row else "new"})
    text = [f"{'id':36}  {'status':9}  {'invoked':20}  {'size':>10}  {'state':9}  title"]
    for r in rows:
        size = f"{r['file_size'] / 1e6:.1f}MB" if r["file_size"] else "-"
        text.append(f"{r['id']:36}  {str(r['status']):9}  {(r['invoked_time'] or '-')[:19]:20}  {size:>10}  "
                    f"{r['archive_state']:9}  {r['title'] or ''}")
    states = [r["archive_state"] for r in rows]
    payload = {"recordings": rows, "count": len(rows), "recordings_listed": len(rows),
               "archived": states.count("archived"), "failed": states.count("failed"),
               "skipped": states.count("skipped")}
    return Outcome(errors.EXIT_OK, payload, "\n".join(text))


def cmd_report(args) -> Outcome:
    from pipeline.archive.report import report_rows

    if args.json and args.format not in (None, "json"):
        raise errors.ConfigError(f"--json and --format {args.format} ask for two formats: choose one")
    fmt = "json" if args.json else (args.format or "table")
    if (fmt == "html") != bool(args.output):
        raise errors.ConfigError("--format html writes one file: give it --output PATH (and --output only with html)")
    config = load(args)
    check_window(args)
    if fmt == "html":
        from pipeline.cli.evidence import write_html_report

        return write_html_report(config, args)
    with open_session(config, "report", record=False) as context:
        rows = report_rows(context.ledger, since=iso_utc(args.since), until=iso_utc(args.until))
        no_good_copy = [asdict(p) for p in context.ledger.copies_without_good_sibling()]
    states = [r["state"] for r in rows]
    payload = {"generated_at": utcnow(), "ledger": config.ledger.shown, "rows": rows, "rows_count": len(rows),
               "archived": states.count("archived"), "failed": states.count("failed"),
               "skipped": states.count("skipped"), "no_good_copy": no_good_copy}
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["recording_id"])
        writer.writeheader()
        writer.writerows(rows)
        text = buffer.getvalue().rstrip("\n")
    else:
        lines = [f"NO GOOD COPY ANYWHERE (nothing left to repair from): {p['recording_id']} {p['kind']} -> "
                 f"{p['target']} {p['state']}: {p['reason']}" for p in no_good_copy]
        lines += [f"{'recording':36}  {'kind':5}  {'target':12}  {'state':8}  {'sha256':16}  {'retention':22}  last check"]
        for r in rows:
            retention = (r["retention_mode"] or "-") + (f" until {r['retention_until'][:10]}" if r["retention_until"] else "")
            lines.append(f"{r['recording_id']:36}  {r['kind']:5}  {r['target']:12}  {r['state']:8}  "
                         f"{(r['sha256'] or '-')[:16]:16}  {retention:22}  {r['verified_at'] or '-'} {r['verify_result'] or ''}")
        text = "\n".join(lines)
    return Outcome(errors.EXIT_OK, payload, text)
