"""Evidence commands: `keys generate` (the Ed25519 key pair that signs the manifests) and
`export --bagit` (one BagIt bag per recording, for auditors and preservation systems)."""

from __future__ import annotations

from pathlib import Path

from pipeline import errors
from pipeline.cli.output import Outcome, check_window, load, plural
from pipeline.clock import iso_utc


def cmd_keys(args) -> Outcome:
    from pipeline.archive.evidence.signing import generate_keys

    private, public, kid = generate_keys(Path(args.out))
    text = (f"key {kid}: private key {private} (owner-only: keep it safe, never in the archive), public key "
            f"{public}\nsign with it: [signing] key = \"{private}\"; after a rotation list the old public key "
            "in [signing] public_keys")
    return Outcome(errors.EXIT_OK, {"key_id": kid, "private_key": str(private), "public_key": str(public)}, text)


def cmd_export(args) -> Outcome:
    from pipeline.archive.evidence.bagit_export import export_bags
    from pipeline.session import open_session

    config = load(args)
    check_window(args)
    if args.check:
        return _check_bags(config, Path(args.check))
    with open_session(config, "export", record=False, targets=True) as context:
        result = export_bags(context, Path(args.bagit), since=iso_utc(args.since), until=iso_utc(args.until),
                             recording_id=args.recording_id)
    problems = f", {plural(len(result.problems), 'problem')}" if result.problems else ""
    lines = [f"exported {plural(len(result.bags), 'bag')} to {args.bagit}{problems}"]
    lines += [f"  {bag}" for bag in result.bags]
    lines += [f"  PROBLEM {p}" for p in result.problems]
    payload = {"bags": [str(b) for b in result.bags], "problems": result.problems, "archived": len(result.bags),
               "failed": len(result.problems)}
    code = errors.EXIT_FAILURES if result.problems else errors.EXIT_OK
    return Outcome(code, payload, "\n".join(lines),
                   error=f"{plural(len(result.problems), 'recording')} not exported" if result.problems else None)


def _check_bags(config, root: Path) -> Outcome:
    from pipeline.archive.evidence.bag_check import check_bag, find_bags
    from pipeline.archive.evidence.signing import Keyring

    bags = find_bags(root)
    if not bags:
        raise errors.ConfigError(f"--check {root}: no BagIt bag there (no bagit.txt)")
    keyring = Keyring.from_config(config.signing)
    results = {str(bag): check_bag(bag, keyring) for bag in bags}
    bad = {bag: problems for bag, problems in results.items() if problems}
    lines = [f"checked {plural(len(bags), 'bag')}: {len(bags) - len(bad)} whole, {len(bad)} with problems"
             f"{'' if keyring.configured else ' (no [signing] key configured: signatures not checked)'}"]
    lines += [f"  {bag}: {problem}" for bag, problems in bad.items() for problem in problems]
    payload = {"bags_checked": len(bags), "problems": bad, "archived": len(bags) - len(bad), "failed": len(bad)}
    return Outcome(errors.EXIT_FAILURES if bad else errors.EXIT_OK, payload, "\n".join(lines),
                   error=f"{plural(len(bad), 'bag')} with problems" if bad else None)


def write_html_report(config, args) -> Outcome:
    """`report --format html --output PATH`: the auditor's report, one self-contained file,
    written whole (a temporary file renamed into place)."""
    import os

    from pipeline.archive.evidence.html_report import render
    from pipeline.archive.evidence.report_data import gather
    from pipeline.session import open_session

    with open_session(config, "report", record=False) as context:
        data = gather(context, since=iso_utc(args.since), until=iso_utc(args.until))
    out = Path(args.output)
    partial = out.with_name(f".{out.name}.partial")
    try:
        partial.write_text(render(data), encoding="utf-8")
        os.replace(partial, out)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise errors.ConfigError(f"--output {out}: cannot write the report: {errors.os_reason(exc)}") from None
    payload = {"output": str(out), "rows_count": len(data.rows), "lost": len(data.lost),
               "missing": len(data.missing)}
    return Outcome(errors.EXIT_OK, payload, f"wrote the auditor's report ({plural(len(data.rows), 'row')}) to {out}")
