"""What each CLI command does, once its arguments are parsed. Each returns an `Outcome`
(exit code, JSON fields, text); cli.main prints it."""

from __future__ import annotations

import csv
import io
import logging
from datetime import datetime, timedelta, timezone

from pipeline import errors
from pipeline.cli.app import Outcome, load
from pipeline.ledger.sqlite import Ledger, iso_utc, utcnow
from pipeline.redact import REDACTOR

ALL_STATUSES = ("INVOKED", "RECORDING", "UPLOADING", "UPLOADED", "ERRORED", "PAUSED")

log = logging.getLogger("rtk_archive")


def dispatch(args) -> Outcome:
    handler = {
        "run": cmd_run, "backfill": cmd_run, "status": cmd_status, "list": cmd_list, "verify": cmd_verify,
        "report": cmd_report, "audit": cmd_audit, "simulate": cmd_simulate, "demo": cmd_demo,
        "check": cmd_check,
    }[args.command]
    return handler(args)


def check_window(args) -> None:
    if getattr(args, "since", None) and getattr(args, "until", None) and args.since >= args.until:
        raise errors.ConfigError(f"--since ({args.since.isoformat()}) must be earlier than "
                                 f"--until ({args.until.isoformat()})")


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else (plural or word + 's')}"


# --------------------------------------------------------------------------- run / backfill


def _progress(args):
    from pipeline.cli.progress import PlainProgress, RichProgress

    console = getattr(args, "console", None)
    if console is not None and not args.json and not args.quiet:
        return RichProgress(console)
    return PlainProgress()


def cmd_run(args) -> Outcome:
    from pipeline.archive.run import run_archive

    config = load(args)
    if args.command == "backfill" and args.until is None:
        args.until = datetime.now(timezone.utc)
    check_window(args)
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
        return _plan_outcome(result)
    summary = result.summary
    counts = summary.counts()
    payload = {"run_id": summary.run_id, **counts, "interrupted": summary.interrupted,
               "problems": summary.problems, "at_risk_recordings": summary.at_risk_ids}
    lines = [f"run {summary.run_id}: {run_counts_text(counts)}"]
    if summary.at_risk_ids:
        lines.append(f"at risk (RealtimeKit deletes them within {config.archive.deadline_margin_hours:g} h, and "
                     "they are not archived everywhere yet): " + ", ".join(summary.at_risk_ids))
    lines += [f"  {problem}" for problem in summary.problems]
    if summary.interrupted:
        lines.append("interrupted: run the same command again to finish")
    return Outcome(result.exit_code, payload, "\n".join(lines), error=_run_error(result.exit_code, counts),
                   summary=True)


def run_counts_text(counts: dict) -> str:
    """The run's counts in words, each with its unit."""
    text = (f"{_plural(counts['files_archived'], 'file')} archived, {counts['files_failed']} failed, "
            f"{counts['files_lost']} lost, {counts['files_skipped']} with nothing to do; "
            f"{_plural(counts['recordings_skipped'], 'recording')} skipped, {counts['recordings_lost']} lost, "
            f"{counts['recordings_at_risk']} at risk; "
            f"{_plural(counts['copies_stored'], 'copy', 'copies')} stored, {counts['copies_failed']} failed; "
            f"{counts['bytes_downloaded'] / 1e6:.1f} MB downloaded")
    return text


def _run_error(exit_code: int, counts: dict) -> str | None:
    if exit_code == errors.EXIT_OK:
        return None
    if exit_code == errors.EXIT_INTERRUPTED:
        return "interrupted; run the same command again to finish"
    parts = [f"{counts[key]} {label}" for key, label in (
        ("files_failed", "file(s) failed"), ("files_lost", "file(s) lost"),
        ("recordings_lost", "recording(s) lost"), ("copies_failed", "copy(ies) failed")) if counts[key]]
    return ", ".join(parts) or f"exit {exit_code}"


def _plan_outcome(result) -> Outcome:
    """--dry-run: the same counts as a run, in the same units, as what would happen."""
    summary, plans = result.summary, result.planned
    actions = []
    for plan in plans:
        for file in plan.work:
            actions.append({"recording_id": plan.id, "kind": file.kind, "file_name": file.file_name,
                            "size": file.expected_size, "to": file.needed,
                            "keys": {t: file.keys[t] for t in file.needed},
                            "deadline": plan.deadline.isoformat() if plan.deadline else None,
                            "at_risk": plan.at_risk})
    copies = sum(len(a["to"]) for a in actions)
    known = sum(a["size"] for a in actions if a["size"])
    unknown = sum(1 for a in actions if not a["size"])
    counts = {**summary.counts(), "files_to_archive": len(actions), "copies_to_store": copies,
              "bytes_to_download": known, "files_of_unknown_size": unknown}
    text = [f"dry run: {len(actions)} file(s) would be archived ({_plural(copies, 'copy', 'copies')}, "
            f"{known / 1e6:.1f} MB{f' + {unknown} of unknown size' if unknown else ''}); "
            f"{counts['files_skipped']} with nothing to do; "
            f"{_plural(counts['recordings_skipped'], 'recording')} skipped, {counts['recordings_at_risk']} at risk"]
    for action in actions:
        size = f"{action['size'] / 1e6:.1f} MB" if action["size"] else "size unknown"
        risk = " [AT RISK]" if action["at_risk"] else ""
        text.append(f"  {action['recording_id']} {action['kind']} ({size}){risk} -> {', '.join(action['to'])}")
    return Outcome(errors.EXIT_OK, {"dry_run": True, **counts, "would_archive": actions,
                                    "already_archived": counts["files_skipped"]}, "\n".join(text))


# --------------------------------------------------------------------------- check


def cmd_check(args) -> Outcome:
    from pipeline.archive.preflight import run_checks

    report = run_checks(args.config, on_secrets=REDACTOR.add)
    payload = report.as_dict()
    return Outcome(report.exit_code, payload, report.text(), error=payload["error"])


# --------------------------------------------------------------------------- status / list


def last_run_state(run: dict, holder: str | None) -> str:
    """finished (exit N), running, or killed: a run that never finished and whose lock is not
    held by its own process (free, or taken by a later `verify`) was killed (SIGKILL, power
    loss, OOM) before it could record its end. `holder`: RunLock.held_by()."""
    if run.get("finished_at"):
        return f"exit {run['exit_code']}"
    if holder is None:
        return "killed"
    if holder.startswith("unknown") or holder.startswith(f"pid {run.get('pid')} on {run.get('host')},"):
        return "running"  # (a lock file we cannot read: never claim a run was killed)
    return "killed"


def cmd_status(args) -> Outcome:
    from pipeline.ledger.lock import RunLock

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
    holder = RunLock(config.ledger.path).held_by()
    for index, run in enumerate(runs):
        run["state"] = last_run_state(run, holder if index == 0 else None)
    files, recordings = counts["files"], counts["recordings"]
    # Lost and skipped recordings are final: listed, but they don't keep a monitor red forever.
    actionable = [f for f in failures if f["state"] in ("failed", "missing", "mismatch")]
    last = runs[0] if runs else None
    last_failed = last is not None and (last["state"] == "killed" or
                                        last["exit_code"] not in (None, errors.EXIT_OK))
    payload = {"counts": counts, "failures": failures, "at_risk": at_risk, "last_runs": runs,
               "last_run": last["state"] if last else None,
               "running": holder,
               "archived": files.get("archived", 0), "failed": files.get("failed", 0),
               "skipped": recordings.get("skipped", 0),
               "files_archived": files.get("archived", 0), "files_failed": files.get("failed", 0),
               "files_lost": files.get("lost", 0), "recordings_skipped": recordings.get("skipped", 0),
               "recordings_at_risk": len(at_risk),
               "copies_problems": sum(n for state, n in counts["copies"].items() if state != "archived")}
    lines = [f"ledger {config.ledger.path}"]
    for table in ("recordings", "files", "copies"):
        parts = ", ".join(f"{n} {state}" for state, n in sorted(counts[table].items())) or "none"
        lines.append(f"  {table}: {parts}")
    if last:
        outcome = last["state"]
        if last["state"] == "killed":
            outcome = "KILLED (it never finished: its counts are unknown; run it again)"
        elif last["state"] == "running":
            outcome = f"RUNNING now ({holder})"
        elif last["exit_code"] == errors.EXIT_INTERRUPTED:
            outcome = "INTERRUPTED (exit 130): run it again to finish"
        elif last_failed:
            outcome = f"FAILED with exit {last['exit_code']}"
        detail = "" if last["state"] in ("killed", "running") else \
            f" ({last['archived']} file(s) archived, {last['failed']} failed)"
        lines.append(f"  last run: {last['command']} started {last['started_at']}: {outcome}{detail}"
                     f"{' - ' + last['note'] if last['note'] else ''}")
    if at_risk:
        lines.append(f"at risk: {_plural(len(at_risk), 'recording')} not archived and deleted by RealtimeKit within "
                     f"{config.archive.deadline_margin_hours:g} h:")
        lines += [f"  {r['id']} deadline {r['deadline']} ({r['meeting_title'] or 'untitled'})" for r in at_risk]
    if failures:
        lines.append("problems:")
        lines += [f"  {f['recording_id']} {f['kind'] or ''} {('-> ' + f['target']) if f['target'] else ''} "
                  f"{f['state']}: {f['reason']}" for f in failures]
    reasons = []
    if last_failed:
        reasons.append("the last run " + {"killed": "was killed",
                                          "exit 130": "was interrupted"}.get(last["state"], f"ended with {last['state']}"))
    if actionable:
        reasons.append(f"{_plural(len(actionable), 'problem')} to act on")
    if at_risk:
        reasons.append(f"{_plural(len(at_risk), 'recording')} at risk")
    code = errors.EXIT_FAILURES if reasons else errors.EXIT_OK
    return Outcome(code, payload, "\n".join(lines), error="; ".join(reasons) or None)


def cmd_list(args) -> Outcome:
    from pipeline.archive.run import make_client

    config = load(args)
    check_window(args)
    ledger = Ledger(config.ledger.path, read_only=True)
    rows = []
    try:
        with make_client(config) as api:
            status = ALL_STATUSES if args.all_statuses else ("UPLOADED",)
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
        text.append(f"{r['id']:36}  {str(r['status']):9}  {(r['invoked_time'] or '-')[:19]:20}  {size:>10}  "
                    f"{r['archive_state']:9}  {r['title'] or ''}")
    states = [r["archive_state"] for r in rows]
    payload = {"recordings": rows, "count": len(rows), "recordings_listed": len(rows),
               "archived": states.count("archived"), "failed": states.count("failed"),
               "skipped": states.count("skipped")}
    return Outcome(errors.EXIT_OK, payload, "\n".join(text))


# --------------------------------------------------------------------------- compliance


def cmd_verify(args) -> Outcome:
    from pipeline.archive.reverify import verify_archive

    config = load(args)
    check_window(args)
    outcome = verify_archive(config, target=args.target, since=args.since, until=args.until, deep=args.deep,
                             redact=REDACTOR)
    problems = len(outcome.problems)
    lines = [f"verified {_plural(outcome.checked, 'copy', 'copies')}"
             f"{' (deep: bytes re-hashed)' if args.deep else ''}: {outcome.ok} ok, {_plural(problems, 'problem')}"]
    lines += [f"  {p['state'].upper()} {p['target']} {p['key']}: {p['detail']}" for p in outcome.problems]
    payload = {"checked": outcome.checked, "ok": outcome.ok, "problems": outcome.problems, "deep": args.deep,
               "recorded": outcome.recorded, "archived": outcome.ok, "failed": problems, "skipped": 0,
               "copies_checked": outcome.checked, "copies_ok": outcome.ok, "copies_problems": problems}
    code = errors.EXIT_FAILURES if problems else errors.EXIT_OK
    return Outcome(code, payload, "\n".join(lines),
                   error=f"{_plural(problems, 'copy', 'copies')} missing or altered" if problems else None)


def cmd_report(args) -> Outcome:
    from pipeline.archive.report import report_rows

    if args.json and args.format not in (None, "json"):
        raise errors.ConfigError(f"--json and --format {args.format} ask for two formats: choose one")
    fmt = "json" if args.json else (args.format or "table")
    config = load(args)
    check_window(args)
    ledger = Ledger(config.ledger.path, read_only=True)
    try:
        rows = report_rows(ledger, since=iso_utc(args.since), until=iso_utc(args.until))
    finally:
        ledger.close()
    states = [r["state"] for r in rows]
    payload = {"generated_at": utcnow(), "ledger": str(config.ledger.path), "rows": rows, "rows_count": len(rows),
               "archived": states.count("archived"), "failed": states.count("failed"),
               "skipped": states.count("skipped")}
    if fmt == "csv":
        buffer = io.StringIO()
        fields = list(rows[0]) if rows else ["recording_id"]
        writer = csv.DictWriter(buffer, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
        text = buffer.getvalue().rstrip("\n")
    else:
        lines = [f"{'recording':36}  {'kind':5}  {'target':12}  {'state':8}  {'sha256':16}  {'retention':22}  last check"]
        for r in rows:
            retention = (r["retention_mode"] or "-") + (f" until {r['retention_until'][:10]}" if r["retention_until"] else "")
            lines.append(f"{r['recording_id']:36}  {r['kind']:5}  {r['target']:12}  {r['state']:8}  "
                         f"{(r['sha256'] or '-')[:16]:16}  {retention:22}  {r['verified_at'] or '-'} {r['verify_result'] or ''}")
        text = "\n".join(lines)
    return Outcome(errors.EXIT_OK, payload, text)


def cmd_audit(args) -> Outcome:
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
        return Outcome(errors.EXIT_OK, {"path": str(path), "lines": 0, "ok": True, "broken_line": None,
                                        "reason": None, "heads_checked": 0},
                       f"no audit log at {path}: nothing recorded yet")
    report = verify_chain(path, heads)
    if report.ok:
        text = (f"audit log {path}: {report.lines} lines, chain intact, and each of the {len(heads)} ends the "
                f"ledger recorded is there (head {report.head[:16]})")
    else:
        text = f"audit log {path}: BROKEN at line {report.broken_line}: {report.reason}"
    payload = {"path": str(path), "lines": report.lines, "ok": report.ok, "broken_line": report.broken_line,
               "reason": report.reason, "heads_checked": len(heads), "audit_lines": report.lines}
    if report.ok:
        return Outcome(errors.EXIT_OK, payload, text)
    return Outcome(errors.EXIT_FAILURES, payload, text, error=f"broken at line {report.broken_line}: {report.reason}")


# --------------------------------------------------------------------------- simulator / demo


def cmd_simulate(args) -> Outcome:
    from pipeline import simulator

    return Outcome(simulator.run(args))


def cmd_demo(args) -> Outcome:
    from pipeline.cli.demo import run_demo

    return run_demo(args)

