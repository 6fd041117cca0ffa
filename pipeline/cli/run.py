"""`run` and `backfill` (and what `--dry-run` would do): archive every UPLOADED recording not
archived yet, with a progress display on a terminal and the counts, each in its unit."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from pipeline import errors
from pipeline.cli.output import Outcome, check_window, load, plural
from pipeline.clock import iso_utc
from pipeline.redact import REDACTOR


def _progress(args):
    from pipeline.cli.progress import PlainProgress, RichProgress

    console = getattr(args, "console", None)
    if console is not None and not args.json and not args.quiet:
        return RichProgress(console)
    return PlainProgress()


def cmd_run(args) -> Outcome:
    from pipeline.session import run_archive

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
    text = (f"{plural(counts['files_archived'], 'file')} archived, {counts['files_failed']} failed, "
            f"{counts['files_lost']} lost, {counts['files_skipped']} with nothing to do; "
            f"{plural(counts['recordings_skipped'], 'recording')} skipped, {counts['recordings_lost']} lost, "
            f"{counts['recordings_at_risk']} at risk; "
            f"{plural(counts['copies_stored'], 'copy', 'copies')} stored, {counts['copies_failed']} failed; "
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
                            "deadline": iso_utc(plan.deadline),
                            "at_risk": plan.at_risk})
    copies = sum(len(a["to"]) for a in actions)
    known = sum(a["size"] for a in actions if a["size"])
    unknown = sum(1 for a in actions if not a["size"])
    counts = {**summary.counts(), "files_to_archive": len(actions), "copies_to_store": copies,
              "bytes_to_download": known, "files_of_unknown_size": unknown}
    text = [f"dry run: {len(actions)} file(s) would be archived ({plural(copies, 'copy', 'copies')}, "
            f"{known / 1e6:.1f} MB{f' + {unknown} of unknown size' if unknown else ''}); "
            f"{counts['files_skipped']} with nothing to do; "
            f"{plural(counts['recordings_skipped'], 'recording')} skipped, {counts['recordings_at_risk']} at risk"]
    for action in actions:
        size = f"{action['size'] / 1e6:.1f} MB" if action["size"] else "size unknown"
        risk = " [AT RISK]" if action["at_risk"] else ""
        text.append(f"  {action['recording_id']} {action['kind']} ({size}){risk} -> {', '.join(action['to'])}")
    return Outcome(errors.EXIT_OK, {"dry_run": True, **counts, "would_archive": actions,
                                    "already_archived": counts["files_skipped"]}, "\n".join(text))


