"""The compliance checks: `verify` (every copy the ledger knows, at its target; `--deep`
re-reads the bytes) and `audit verify` (the audit log's hash chain, and every end of it the
ledger recorded)."""

from __future__ import annotations

import logging

from pipeline import errors
from pipeline.cli.output import Outcome, check_window, load, plural
from pipeline.redact import REDACTOR
from pipeline.session import open_session, verify_archive

log = logging.getLogger("rtk_archive")


def cmd_verify(args) -> Outcome:
    if args.scrub or args.budget is not None or args.max_age is not None:
        from pipeline.cli.repair import cmd_scrub

        return cmd_scrub(args)
    config = load(args)
    check_window(args)
    outcome = verify_archive(config, target=args.target, since=args.since, until=args.until, deep=args.deep,
                             redact=REDACTOR)
    problems = len(outcome.problems)
    lines = [f"verified {plural(outcome.checked, 'copy', 'copies')}"
             f"{' (deep: bytes re-hashed)' if args.deep else ''}: {outcome.ok} ok, {plural(problems, 'problem')}"]
    lines += [f"  {p['state'].upper()} {p['target']} {p['key']}: {p['detail']}" for p in outcome.problems]
    payload = {"checked": outcome.checked, "ok": outcome.ok, "problems": outcome.problems, "deep": args.deep,
               "recorded": outcome.recorded, "archived": outcome.ok, "failed": problems, "skipped": 0,
               "copies_checked": outcome.checked, "copies_ok": outcome.ok, "copies_problems": problems}
    code = errors.EXIT_FAILURES if problems else errors.EXIT_OK
    return Outcome(code, payload, "\n".join(lines),
                   error=f"{plural(problems, 'copy', 'copies')} missing or altered" if problems else None)


def cmd_audit(args) -> Outcome:
    from pipeline.audit import verify_chain
    from pipeline.archive.evidence.timestamp_check import check_tokens, collect_tokens, token_heads

    config = load(args)
    path = config.audit.path
    with open_session(config, "audit verify", record=False) as context:
        heads = context.ledger.audit_heads(path)
        tokens, unstamped = collect_tokens(path, context.ledger.timestamps(path))
        for other in context.ledger.audit_logs_elsewhere(path):
            log.warning("the ledger also recorded where the audit log %s ended; it is not checked here", other)
    if not path.exists() and not heads:
        return Outcome(errors.EXIT_OK, {"path": str(path), "lines": 0, "ok": True, "broken_line": None,
                                        "reason": None, "heads_checked": 0},
                       f"no audit log at {path}: nothing recorded yet")
    report = verify_chain(path, heads + token_heads(tokens))  # a time-stamped head must be in the log too
    stamps = check_tokens(config, tokens, unstamped)
    if report.ok:
        text = (f"audit log {path}: {report.lines} lines, chain intact, and each of the {len(heads)} ends the "
                f"ledger recorded is there (head {report.head[:16]})")
    else:
        text = f"audit log {path}: BROKEN at line {report.broken_line}: {report.reason}"
    text += "".join(f"\n  {line}" for line in _timestamp_lines(stamps))
    payload = {"path": str(path), "lines": report.lines, "ok": report.ok and not stamps.problems,
               "broken_line": report.broken_line, "reason": report.reason, "heads_checked": len(heads),
               "audit_lines": report.lines, **stamps.payload()}
    if report.ok and not stamps.problems:
        return Outcome(errors.EXIT_OK, payload, text)
    error = (f"broken at line {report.broken_line}: {report.reason}" if not report.ok
             else f"{plural(len(stamps.problems), 'time-stamp token')} do not verify: {stamps.problems[0]}")
    return Outcome(errors.EXIT_FAILURES, payload, text, error=error)


def _timestamp_lines(stamps) -> list[str]:
    latest = stamps.latest
    lines = [f"trusted timestamps: {len(stamps.verified)} verified; the log up to line {latest[0].lines} is "
             f"proven to have existed unaltered at {latest[1].gen_time}"] if latest else []
    lines += [f"TIMESTAMP PROBLEM {problem}" for problem in stamps.problems]
    lines += [f"not time-stamped (the TSA failed then): {line}" for line in stamps.unstamped]
    return lines
