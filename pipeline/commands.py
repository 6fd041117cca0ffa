"""What each CLI command does, once its arguments are parsed."""

from __future__ import annotations

import csv
import io
import json
import logging
import sys
from datetime import datetime, timedelta, timezone

from pipeline import errors
from pipeline.cli import emit, load
from pipeline.redact import REDACTOR
from pipeline.ledger import Ledger, iso_utc, utcnow

log = logging.getLogger("rtk_archive")


def dispatch(args) -> int:
    handler = {
        "run": cmd_run, "backfill": cmd_run, "status": cmd_status, "list": cmd_list, "verify": cmd_verify,
        "report": cmd_report, "audit": cmd_audit, "simulate": cmd_simulate, "demo": cmd_demo,
        "check": cmd_check,
    }[args.command]
    return handler(args)


# --------------------------------------------------------------------------- run / backfill


def _progress(args):
    from pipeline.progress import PlainProgress, RichProgress

    if not getattr(args, "json", False) and sys.stderr.isatty() and not getattr(args, "quiet", False):
        from rich.console import Console

        return RichProgress(Console(stderr=True))
    return PlainProgress()


def cmd_run(args) -> int:
    from pipeline.runner import run_archive

    config = load(args)
    if args.since and args.until and args.since >= args.until:
        raise errors.ConfigError("--since must be earlier than --until")
    since = args.since
    if since is None and args.command == "run" and config.archive.lookback_days:
        since = datetime.now(timezone.utc) - timedelta(days=config.archive.lookback_days)
    progress = None if args.dry_run else _progress(args)
    try:
        result = run_archive(config, command=args.command, since=since,
                             until=args.until, meeting_id=args.meeting_id, dry_run=args.dry_run,
                             concurrency=args.concurrency, progress=progress, redact=REDACTOR)
    finally:
        if progress:
            progress.close()
    if args.dry_run:
        return _print_plan(args, result.planned)
    summary = result.summary
    payload = {"run_id": summary.run_id, **summary.counts(), "bytes_downloaded": summary.bytes_downloaded,
               "interrupted": summary.interrupted, "problems": summary.problems,
               "at_risk_recordings": summary.at_risk_ids, "exit_code": result.exit_code}
    lines = [f"run {summary.run_id}: {summary.archived} archived, {summary.failed} failed, "
             f"{summary.skipped} skipped, {summary.lost} lost, {summary.at_risk} at risk "
             f"({summary.bytes_downloaded / 1e6:.1f} MB downloaded)"]
    if summary.at_risk_ids:
        lines.append(f"at risk (RealtimeKit deletes them within {config.archive.deadline_margin_hours:g} h): "
                     + ", ".join(summary.at_risk_ids))
    lines += [f"  {problem}" for problem in summary.problems]
    if summary.interrupted:
        lines.append("interrupted: run the same command again to finish")
    emit(args, payload, "\n".join(lines))
    return result.exit_code


def _print_plan(args, plans) -> int:
    actions = []
    for plan in plans:
        for file in plan.files:
            actions.append({"recording_id": plan.id, "kind": file.kind, "file_name": file.file_name,
                            "size": file.expected_size, "to": file.needed,
                            "keys": {t: file.keys[t] for t in file.needed},
                            "deadline": plan.deadline.isoformat() if plan.deadline else None,
                            "at_risk": plan.at_risk})
    todo = [a for a in actions if a["to"]]
    text = [f"dry run: {len(todo)} file(s) would be archived, {len(actions) - len(todo)} already archived"]
    for action in todo:
        size = f"{action['size'] / 1e6:.1f} MB" if action["size"] else "size unknown"
        risk = " [AT RISK]" if action["at_risk"] else ""
        text.append(f"  {action['recording_id']} {action['kind']} ({size}){risk} -> {', '.join(action['to'])}")
    emit(args, {"dry_run": True, "would_archive": todo, "already_archived": len(actions) - len(todo),
                "archived": 0, "failed": 0, "skipped": len(actions) - len(todo)}, "\n".join(text))
    return errors.EXIT_OK


# --------------------------------------------------------------------------- check


def cmd_check(args) -> int:
    from pipeline.preflight import run_checks

    report = run_checks(args.config, on_secrets=REDACTOR.add)
    emit(args, report.as_dict(), report.text())
    return report.exit_code


# --------------------------------------------------------------------------- status / list


def cmd_status(args) -> int:
    config = load(args)
    ledger = Ledger(config.ledger.path, read_only=True)
    try:
        margin = timedelta(hours=config.archive.deadline_margin_hours)
        soon = (datetime.now(timezone.utc) + margin).isoformat().replace("+00:00", "Z")
        counts = ledger.state_counts()
        failures = ledger.failures()
        at_risk = ledger.at_risk(soon)
        runs = ledger.last_runs(5)
    finally:
        ledger.close()
    payload = {"counts": counts, "failures": failures, "at_risk": at_risk, "last_runs": runs,
               "archived": counts["files"].get("archived", 0), "failed": counts["files"].get("failed", 0),
               "skipped": counts["recordings"].get("skipped", 0)}
    lines = [f"ledger {config.ledger.path}"]
    for table in ("recordings", "files", "copies"):
        parts = ", ".join(f"{n} {state}" for state, n in sorted(counts[table].items())) or "none"
        lines.append(f"  {table}: {parts}")
    if runs:
        last = runs[0]
        lines.append(f"  last run: {last['started_at']} exit {last['exit_code']} ({last['archived']} archived, "
                     f"{last['failed']} failed){' - ' + last['note'] if last['note'] else ''}")
    if at_risk:
        lines.append(f"at risk: {len(at_risk)} recording(s) not archived and deleted by RealtimeKit within "
                     f"{config.archive.deadline_margin_hours:g} h:")
        lines += [f"  {r['id']} deadline {r['deadline']} ({r['meeting_title'] or 'untitled'})" for r in at_risk]
    if failures:
        lines.append("problems:")
        lines += [f"  {f['recording_id']} {f['kind'] or ''} {('-> ' + f['target']) if f['target'] else ''} "
                  f"{f['state']}: {f['reason']}" for f in failures]
    emit(args, payload, "\n".join(lines))
    # Lost and skipped recordings are final: listed, but they don't keep a monitor red forever.
    actionable = [f for f in failures if f["state"] in ("failed", "missing", "mismatch")]
    return errors.EXIT_FAILURES if (actionable or at_risk) else errors.EXIT_OK


def cmd_list(args) -> int:
    from pipeline.runner import make_client

    config = load(args)
    ledger = Ledger(config.ledger.path, read_only=True)
    rows = []
    try:
        with make_client(config) as api:
            status = ("INVOKED", "RECORDING", "UPLOADING", "UPLOADED") if args.all_statuses else ("UPLOADED",)
            for rec in api.iter_recordings(status=status, start_time=args.since, end_time=args.until,
                                           meeting_id=args.meeting_id):
                known = ledger.recording(rec.id)
                rows.append({"id": rec.id, "status": rec.status, "meeting_id": rec.meeting_id,
                             "title": rec.meeting.title if rec.meeting else None,
                             "invoked_time": rec.invoked_time.isoformat() if rec.invoked_time else None,
                             "file_size": rec.file_size, "audio": bool(rec.audio_download_url),
                             "archive_state": known["state"] if known else "new"})
    finally:
        ledger.close()
    text = [f"{'id':36}  {'status':9}  {'invoked':20}  {'size':>10}  {'state':9}  title"]
    for r in rows:
        size = f"{r['file_size'] / 1e6:.1f}MB" if r["file_size"] else "-"
        text.append(f"{r['id']:36}  {r['status']:9}  {(r['invoked_time'] or '-')[:19]:20}  {size:>10}  "
                    f"{r['archive_state']:9}  {r['title'] or ''}")
    emit(args, {"recordings": rows, "count": len(rows)}, "\n".join(text))
    return errors.EXIT_OK


# --------------------------------------------------------------------------- compliance


def cmd_verify(args) -> int:
    from pipeline.verify import verify_archive

    config = load(args)
    outcome = verify_archive(config, target=args.target, since=args.since, until=args.until, deep=args.deep,
                             redact=REDACTOR)
    lines = [f"verified {outcome.checked} cop{'y' if outcome.checked == 1 else 'ies'}"
             f"{' (deep: bytes re-hashed)' if args.deep else ''}: {outcome.ok} ok, {len(outcome.problems)} problem(s)"]
    lines += [f"  {p['state'].upper()} {p['target']} {p['key']}: {p['detail']}" for p in outcome.problems]
    emit(args, {"checked": outcome.checked, "ok": outcome.ok, "problems": outcome.problems, "deep": args.deep,
                "recorded": outcome.recorded,
                "archived": outcome.ok, "failed": len(outcome.problems), "skipped": 0}, "\n".join(lines))
    return errors.EXIT_FAILURES if outcome.problems else errors.EXIT_OK


def cmd_report(args) -> int:
    from pipeline.report import report_rows

    config = load(args)
    ledger = Ledger(config.ledger.path, read_only=True)
    try:
        rows = report_rows(ledger, since=iso_utc(args.since), until=iso_utc(args.until))
    finally:
        ledger.close()
    if args.format == "json":
        print(json.dumps({"generated_at": utcnow(), "ledger": str(config.ledger.path), "rows": rows},
                         indent=2, sort_keys=True))
    elif args.format == "csv":
        buffer = io.StringIO()
        fields = list(rows[0]) if rows else ["recording_id"]
        writer = csv.DictWriter(buffer, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
        sys.stdout.write(buffer.getvalue())
    else:
        print(f"{'recording':36}  {'kind':5}  {'target':12}  {'state':8}  {'sha256':16}  {'retention':22}  last check")
        for r in rows:
            retention = (r["retention_mode"] or "-") + (f" until {r['retention_until'][:10]}" if r["retention_until"] else "")
            print(f"{r['recording_id']:36}  {r['kind']:5}  {r['target']:12}  {r['state']:8}  "
                  f"{(r['sha256'] or '-')[:16]:16}  {retention:22}  {r['verified_at'] or '-'} {r['verify_result'] or ''}")
    return errors.EXIT_OK


def cmd_audit(args) -> int:
    from pipeline.audit import verify_chain

    config = load(args)
    path = config.audit.path
    ledger = Ledger(config.ledger.path, read_only=True)
    try:
        heads = ledger.audit_heads(path)
        for other in ledger.audit_logs_elsewhere(path):
            log.warning("the ledger also recorded where the audit log %s ended; it is not checked here", other)
    finally:
        ledger.close()
    if not path.exists() and not heads:
        emit(args, {"path": str(path), "lines": 0, "ok": True, "broken_line": None, "reason": None,
                    "heads_checked": 0}, f"no audit log at {path}: nothing recorded yet")
        return errors.EXIT_OK
    report = verify_chain(path, heads)
    if report.ok:
        text = (f"audit log {path}: {report.lines} lines, chain intact, and each of the {len(heads)} ends the "
                f"ledger recorded is there (head {report.head[:16]})")
    else:
        text = f"audit log {path}: BROKEN at line {report.broken_line}: {report.reason}"
    emit(args, {"path": str(path), "lines": report.lines, "ok": report.ok, "broken_line": report.broken_line,
                "reason": report.reason, "heads_checked": len(heads)}, text)
    return errors.EXIT_OK if report.ok else errors.EXIT_FAILURES


# --------------------------------------------------------------------------- simulator / demo


def cmd_simulate(args) -> int:
    from pipeline import simulator

    return simulator.run(args)


def cmd_demo(args) -> int:
    from pipeline.demo import run_demo

    return run_demo(args)

