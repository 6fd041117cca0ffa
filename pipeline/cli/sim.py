"""The built-in simulator's two commands: `simulate` (the RealtimeKit API stand-in on a loopback
port, for trying a configuration) and `demo` (the simulator, a local folder target and a SQLite
ledger under `--dir`: a full run, then a second one to show it is incremental; nothing outside
`--dir` is touched). The demo's configuration is the package's demo.toml, which
config/demo.toml is a link to, so a user reads exactly what the demo ran."""

from __future__ import annotations

import os

from pipeline import errors
from pipeline.cli.demo_setup import demo_config, demo_folder
from pipeline.cli.output import Outcome
from pipeline.cli.run import run_counts_text
from pipeline.config import parse_config
from pipeline.redact import REDACTOR


def cmd_simulate(args) -> Outcome:
    """Serve until SIGINT/SIGTERM; a setting out of range or a busy port is one line (exit 2)."""
    from pipeline.simulator import SimulateError, serve

    settings = ("host", "port", "recordings", "seed", "url_lifetime", "min_size", "max_size", "days",
                "webhook_url", "new_every", "throttle_per_connection")
    try:
        serve(**{name: getattr(args, name) for name in settings})
    except SimulateError as exc:
        raise errors.ConfigError(str(exc)) from None
    return Outcome(errors.EXIT_OK)


def cmd_demo(args) -> Outcome:
    if args.serve:
        from pipeline.cli.serve import run_demo_serve

        return run_demo_serve(args)
    return run_demo(args)


def run_demo(args) -> Outcome:
    import tomllib

    from pipeline.session import run_archive
    from pipeline.simulator import Simulator

    folder = demo_folder(args.dir)
    with Simulator(recordings=args.recordings, seed=7) as sim:
        env = {**os.environ, "RTK_DEMO_ACCOUNT_ID": sim.account_id, "RTK_DEMO_APP_ID": sim.app_id,
               "RTK_DEMO_API_TOKEN": sim.token, "RTK_DEMO_BASE_URL": sim.base_url, "RTK_DEMO_DIR": str(folder)}
        config = parse_config(tomllib.loads(demo_config()), environ=env)
        REDACTOR.add(config.secret_values())
        first = run_archive(config, command="demo", redact=REDACTOR)
        second = run_archive(config, command="demo (second run)", redact=REDACTOR)
    s1, s2 = first.summary, second.summary
    files = sorted(p for p in (folder / "archive").rglob("*") if p.is_file())
    lines = [
        f"demo folder: {folder}",
        f"simulator: {args.recordings} recordings (mixed statuses, some with audio, some past RealtimeKit's 7 days)",
        f"first run:  {run_counts_text(s1.counts())}",
        f"second run: {s2.archived} file(s) archived, {s2.files_skipped} with nothing to do "
        "(already archived: the ledger remembers)",
        f"archive: {len(files)} files under {folder / 'archive'} (recordings and their manifests)",
    ]
    lines += [f"  {p.relative_to(folder)}" for p in files[:6]] + (["  ..."] if len(files) > 6 else [])
    if s1.lost:
        lines.append(f"the {s1.lost} lost file(s) are on purpose: the simulator ages some recordings past "
                     "RealtimeKit's 7 days, to show how rtk-archive reports what can no longer be saved:")
    lines += [f"  {problem}" for problem in s1.problems]
    lines += [
        f"ledger: {config.ledger.path}   audit log: {config.audit.path}",
        "next: write your own config (see config/example.toml) and run: rtk-archive run --config YOUR.toml",
    ]
    # Lost recordings are expected in the demo (the simulator ages some past 7 days).
    code = errors.EXIT_FAILURES if s1.failed or s2.failed else errors.EXIT_OK
    payload = {"dir": str(folder), **s1.counts(), "first_run": {**s1.counts(), "bytes": s1.bytes_downloaded},
               "second_run": s2.counts(), "files": [str(p.relative_to(folder)) for p in files]}
    return Outcome(code, payload, "\n".join(lines), summary=True,
                   error=f"{s1.failed + s2.failed} file(s) failed" if code else None)
