"""`rtk-archive worker`: a long-running worker on a shared (PostgreSQL) ledger. It lists the API
in turn with the other workers, claims recordings with leases, archives them, and on SIGTERM
(or Ctrl-C) lets in-flight uploads finish, gives its leases back and exits 0."""

from __future__ import annotations

from pipeline import errors
from pipeline.cli.output import Outcome, load
from pipeline.cli.run import run_counts_text
from pipeline.redact import REDACTOR


def cmd_worker(args) -> Outcome:
    from pipeline.session import run_worker

    config = load(args)
    result = run_worker(config, list_every=args.list_every, poll=args.poll, lease_seconds=args.lease,
                        once=args.once, redact=REDACTOR)
    summary = result.summary
    counts = summary.counts()
    # Stopped on request (SIGTERM from a supervisor): its leases are back; that is a clean end.
    exit_code = errors.EXIT_OK if result.exit_code == errors.EXIT_INTERRUPTED else result.exit_code
    lines = [f"worker {summary.run_id}: {run_counts_text(counts)}", *[f"  {p}" for p in summary.problems]]
    if summary.interrupted:
        lines.append("stopped on request: in-flight uploads finished, leases given back")
    payload = {"run_id": summary.run_id, **counts, "stopped": summary.interrupted, "problems": summary.problems}
    return Outcome(exit_code, payload, "\n".join(lines), summary=True,
                   error=None if exit_code == errors.EXIT_OK else f"exit {exit_code}")
