"""Keeping the archive whole: `repair` (put back missing or altered copies from a good copy at
another target) and `verify --scrub` (re-check the copies verified longest ago, within a time
budget)."""

from __future__ import annotations

from pipeline import errors
from pipeline.cli.output import Outcome, load, plural
from pipeline.redact import REDACTOR
from pipeline.session import repair_archive, scrub_archive


def cmd_repair(args) -> Outcome:
    config = load(args)
    outcome = repair_archive(config, target=args.target, dry_run=args.dry_run, redact=REDACTOR)
    items, left = outcome.items, outcome.left
    repaired = sum(item.outcome == "repaired" for item in items)
    would = sum(item.outcome == "would repair" for item in items)
    head = (f"checked {plural(outcome.checked, 'copy', 'copies')}: "
            + (f"{would} would be repaired" if args.dry_run else f"{repaired} repaired")
            + f", {sum(item.outcome == 'cleared' for item in items)} intact after all, {len(left)} left"
            + (" (dry run: nothing was changed)" if args.dry_run else ""))
    lines = [head]
    for item in items:
        lines.append(f"  {item.outcome.upper()} {item.target} {item.key} ({item.found}): {item.detail}")
    no_source = [item for item in left if item.outcome == "no source"]
    payload = {"dry_run": args.dry_run, "checked": outcome.checked, "repaired": repaired, "would_repair": would,
               "left": len(left), "no_good_copy": len(no_source), "items": outcome.as_dicts(),
               "archived": repaired, "failed": len(left), "skipped": 0}
    if not left:
        return Outcome(errors.EXIT_OK, payload, "\n".join(lines))
    reasons = [f"{plural(len(left), 'copy', 'copies')} not repaired"]
    if no_source:
        reasons.append(f"{plural(len(no_source), 'copy', 'copies')} with no good copy anywhere to repair from")
    return Outcome(errors.EXIT_FAILURES, payload, "\n".join(lines), error="; ".join(reasons))


def cmd_scrub(args) -> Outcome:
    from pipeline.archive.scrub import describe_age

    if not args.scrub:
        raise errors.ConfigError("--budget and --max-age belong to --scrub: add --scrub")
    if args.since or args.until:
        raise errors.ConfigError("--scrub re-checks every copy, oldest verification first: leave out --since/--until")
    config = load(args)
    max_age = args.max_age or config.verify.max_age
    result = scrub_archive(config, target=args.target, budget=args.budget, max_age=max_age, deep=args.deep,
                           redact=REDACTOR)
    outcome, overdue = result.verify, result.overdue
    problems = len(outcome.problems)
    lines = [f"scrubbed {plural(outcome.checked, 'copy', 'copies')} (oldest verification first): {outcome.ok} ok, "
             f"{plural(problems, 'problem')}"
             + (f"; the budget of {describe_age(args.budget)} was spent before "
                f"{plural(outcome.not_started, 'copy', 'copies')} could be checked" if outcome.not_started else "")]
    lines += [f"  {p['state'].upper()} {p['target']} {p['key']}: {p['detail']}" for p in outcome.problems]
    if overdue:
        lines.append(f"{plural(len(overdue), 'copy', 'copies')} last verified more than {describe_age(max_age)} ago "
                     "(overdue): run the scrub longer or more often")
    payload = {"scrub": True, "checked": outcome.checked, "ok": outcome.ok, "problems": outcome.problems,
               "not_started": outcome.not_started, "overdue": len(overdue),
               "max_age_seconds": max_age.total_seconds(),
               "budget_seconds": args.budget.total_seconds() if args.budget is not None else None,
               "deep": args.deep, "recorded": outcome.recorded, "archived": outcome.ok, "failed": problems,
               "skipped": 0, "copies_checked": outcome.checked, "copies_ok": outcome.ok, "copies_problems": problems}
    reasons = []
    if problems:
        reasons.append(f"{plural(problems, 'copy', 'copies')} missing or altered")
    if overdue:
        reasons.append(f"{plural(len(overdue), 'copy', 'copies')} overdue for verification")
    return Outcome(errors.EXIT_FAILURES if reasons else errors.EXIT_OK, payload, "\n".join(lines),
                   error="; ".join(reasons) or None)
