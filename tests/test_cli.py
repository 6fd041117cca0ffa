"""The CLI end to end, as a separate process, against the simulator over real HTTP."""

from __future__ import annotations

import json
import os
import stat

import pytest

from pipeline import errors
from tests.helpers import REPO, expected_files, run_cli, write_config


def test_run_json_then_status_list_and_report(busy_sim, tmp_path):
    config = write_config(tmp_path, busy_sim)
    result = run_cli("run", "--config", str(config), "--json")
    payload = json.loads(result.stdout)
    assert {"archived", "failed", "skipped"} <= set(payload)
    assert payload["archived"] == len(expected_files(busy_sim))
    assert result.returncode == (1 if payload["lost"] else 0)
    assert "Traceback" not in result.stderr

    status = run_cli("status", "--config", str(config), "--json")
    counts = json.loads(status.stdout)["counts"]
    assert counts["files"]["archived"] == payload["archived"]

    listing = run_cli("list", "--config", str(config), "--json")
    rows = json.loads(listing.stdout)["recordings"]
    assert rows and {r["archive_state"] for r in rows} <= {"archived", "lost", "skipped"}

    report = run_cli("report", "--config", str(config), "--format", "csv")
    assert report.returncode == 0 and report.stdout.startswith("recording_id,")
    assert len(report.stdout.splitlines()) > payload["archived"]


def test_dry_run_shows_the_plan(sim, tmp_path):
    rec = sim.add_recording()
    config = write_config(tmp_path, sim)
    result = run_cli("run", "--config", str(config), "--dry-run")
    assert result.returncode == 0
    assert rec["id"] in result.stdout and "would be archived" in result.stdout
    assert not (tmp_path / "nas").exists()


def test_backfill_needs_a_window(sim, tmp_path):
    config = write_config(tmp_path, sim)
    result = run_cli("backfill", "--config", str(config))
    assert result.returncode == errors.EXIT_USAGE and "--since" in result.stderr
    sim.add_recording()
    ok = run_cli("backfill", "--config", str(config), "--since", "7d", "--until", "2099-01-01", "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["archived"] == 1


def test_bad_config_exits_2_with_one_line_and_no_traceback(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[source]\naccount_id = "a"\napp_id = "b"\n[[targets]]\nname = "x"\ntype = "ftp"\n')
    result = run_cli("run", "--config", str(path))
    assert result.returncode == errors.EXIT_USAGE
    assert result.stderr.strip().splitlines() == [
        f"rtk-archive: error: {path}: targets[0] (x).type: unknown target type 'ftp' "
        "(one of local, aws, digitalocean, r2, b2, wasabi, minio, azure, gcs, sftp)"]


def test_missing_token_is_a_config_error(sim, tmp_path):
    config = write_config(tmp_path, sim, source={"api_token": ""})
    text = config.read_text().replace('api_token = ""\n', "")
    config.write_text(text)
    result = run_cli("run", "--config", str(config))
    assert result.returncode == errors.EXIT_USAGE and "CLOUDFLARE_API_TOKEN" in result.stderr


def test_wrong_token_exits_4_and_never_prints_it(sim, tmp_path):
    config = write_config(tmp_path, sim, source={"api_token": "tok-WRONG-0123456789"})
    result = run_cli("run", "--config", str(config))
    assert result.returncode == errors.EXIT_API
    assert "token" in result.stderr.lower() and "tok-WRONG-0123456789" not in result.stderr + result.stdout


def test_failures_exit_1_and_say_why(sim, tmp_path):
    rec = sim.add_recording(size=20_000)
    sim.faults.set(size_mismatch={rec["id"]: 100})
    config = write_config(tmp_path, sim)
    result = run_cli("run", "--config", str(config))
    assert result.returncode == errors.EXIT_FAILURES
    assert "file_size" in result.stdout and rec["id"] in result.stdout
    status = run_cli("status", "--config", str(config))
    assert status.returncode == errors.EXIT_FAILURES and "file_size" in status.stdout


def test_ledger_spool_and_audit_are_private(sim, tmp_path):
    sim.add_recording()
    config = write_config(tmp_path, sim)
    assert run_cli("run", "--config", str(config)).returncode == 0
    for name in ("ledger.db", "audit.jsonl", "ledger.db.lock"):
        mode = stat.S_IMODE(os.stat(tmp_path / name).st_mode)
        assert mode == 0o600, (name, oct(mode))
    assert stat.S_IMODE(os.stat(tmp_path / "spool").st_mode) == 0o700


def test_demo_runs_on_its_embedded_defaults(tmp_path):
    result = run_cli("demo", "--dir", str(tmp_path / "demo"), "--recordings", "8", "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["first_run"]["archived"] > 0 and payload["second_run"]["archived"] == 0
    assert (tmp_path / "demo" / "rtk-archive.db").exists()


def test_audit_verify_command(sim, tmp_path):
    sim.add_recording()
    config = write_config(tmp_path, sim)
    run_cli("run", "--config", str(config))
    ok = run_cli("audit", "verify", "--config", str(config))
    assert ok.returncode == 0 and "chain intact" in ok.stdout
    log = tmp_path / "audit.jsonl"
    lines = log.read_text().splitlines()
    index = next(i for i, line in enumerate(lines) if '"action":"listed"' in line)
    lines[index] = lines[index].replace('"action":"listed"', '"action":"skipped"')
    log.write_text("\n".join(lines) + "\n")
    broken = run_cli("audit", "verify", "--config", str(config))
    assert broken.returncode == 1 and f"BROKEN at line {index + 1}" in broken.stdout


def test_help_mentions_every_command():
    """README "Command line": `rtk-archive --help` (a real process) exits 0 and lists every command."""
    result = run_cli("--help")
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.startswith("usage: rtk-archive ")
    for command in ("run", "backfill", "status", "list", "verify", "report", "audit", "simulate", "demo"):
        assert command in result.stdout
    assert (REPO / "README.md").exists()


def test_run_looks_back_only_lookback_days_unless_told_otherwise(sim, tmp_path):
    from datetime import timedelta

    recent = sim.add_recording(size=10_000)
    old = sim.add_recording(size=10_000, invoked_time=sim.now() - timedelta(days=30),
                            stopped_time=sim.now() - timedelta(days=30))
    config = write_config(tmp_path, sim, archive={"lookback_days": 14})
    result = run_cli("run", "--config", str(config), "--json")
    assert json.loads(result.stdout)["archived"] == 1 and result.returncode == 0
    listed = [r for r in sim.requests if r.kind == "api" and r.path.endswith("/recordings")]
    assert all("start_time" in r.query for r in listed)
    backfill = run_cli("backfill", "--config", str(config), "--since", "60d", "--until", "2099-01-01", "--json")
    payload = json.loads(backfill.stdout)
    assert payload["lost"] == 1 and old["id"] in " ".join(payload["problems"]) and recent["id"] not in " ".join(payload["problems"])


# --------------------------------------------------------------------------- help and usage


def _subcommands(parser, path=()):
    """(command words, parser) for every command and sub-command of the CLI."""
    import argparse

    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _subcommands(sub, (*path, name))


def test_every_command_has_help_that_exits_0_and_names_its_options():
    """README "Command line": `--help` of every command exits 0 and shows each of its options."""
    from pipeline.cli.parser import build_parser
    from tests.inprocess import run_main

    commands = list(_subcommands(build_parser()))
    # the top level, sixteen commands, `audit verify`, `keys generate`, `ledger migrate|export|import`
    assert len(commands) == 22
    for words, parser in commands:
        result = run_main(*words, "--help")
        assert result.returncode == 0, words
        assert result.stdout.startswith(f"usage: {parser.prog}"), words
        for action in parser._actions:
            for option in action.option_strings:
                assert option in result.stdout, (words, option)
        assert result.stderr == ""


def test_every_option_of_every_command_has_help_text():
    """README "Command line": every option says what it does in --help."""
    import argparse

    from pipeline.cli.parser import build_parser

    missing = []
    for words, parser in _subcommands(build_parser()):
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append((" ".join(words) or "rtk-archive", action.option_strings or action.dest))
    assert missing == []


@pytest.mark.parametrize("argv, names", [
    (["run", "--config", "c.toml", "--concurrency", "0"], "--concurrency"),
    (["run", "--config", "c.toml", "--concurrency", "-1"], "--concurrency"),
    (["run", "--config", "c.toml", "--concurrency", "65"], "--concurrency"),
    (["run", "--config", "c.toml", "--concurrency", "1e12"], "--concurrency"),
    (["run", "--config", "c.toml", "--concurrency", "inf"], "--concurrency"),
    (["backfill", "--config", "c.toml", "--since", "7d", "--concurrency", "many"], "--concurrency"),
    (["run", "--config", "c.toml", "--since", "999999w"], "--since"),
    (["run", "--config", "c.toml", "--since", "99999999999999999999999999d"], "--since"),
    (["run", "--config", "c.toml", "--since", "yesterday"], "--since"),
    (["run", "--config", "c.toml", "--since", "2026-13-45"], "--since"),
    (["list", "--config", "c.toml", "--until", "-5d"], "--until"),
    (["verify", "--config", "c.toml", "--since", "nan"], "--since"),
    (["report", "--config", "c.toml", "--format", "xml"], "--format"),
    (["run", "--config", "c.toml", "-q", "-v"], "-v"),
    (["run", "--config", "c.toml", "--js"], "--js"),
    (["backfill", "--config", "c.toml"], "--since"),
    (["simulate", "--port", "70000"], "--port"),
    (["simulate", "--port", "-1"], "--port"),
    (["simulate", "--recordings", "-1"], "--recordings"),
    (["simulate", "--url-lifetime", "0"], "--url-lifetime"),
    (["simulate", "--url-lifetime", "inf"], "--url-lifetime"),
    (["simulate", "--url-lifetime", "nan"], "--url-lifetime"),
    (["simulate", "--days", "-1"], "--days"),
    (["simulate", "--min-size", "1e999"], "--min-size"),
    (["simulate", "--max-size", "99999999999999999999999999999TiB"], "--max-size"),
    (["demo", "--recordings", "0"], "--recordings"),
    (["demo", "--recordings", "1000000"], "--recordings"),
    (["nonsense"], "COMMAND"),
    ([], "COMMAND"),
])
def test_bad_numbers_times_and_usage_are_one_line_exit_2(argv, names):
    """README "Exit codes" 2: a bad number, time or option is one line on stderr naming it,
    exit 2, never a traceback (issue 8: numbers and times validated like the config file)."""
    from tests.inprocess import run_main

    result = run_main(*argv)
    assert result.returncode == errors.EXIT_USAGE
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("rtk-archive: error: ") and names in lines[0], lines
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_a_window_that_ends_before_it_starts_is_refused(sim, tmp_path):
    """README "Exit codes" 2: --since later than --until is one line, for every command with a window."""
    from tests.inprocess import run_main

    config = write_config(tmp_path, sim)
    for command in ("run", "backfill", "list", "verify", "report"):
        result = run_main(command, "--config", str(config), "--since", "2026-11-02", "--until", "2026-11-01")
        assert result.returncode == errors.EXIT_USAGE, command
        assert result.stderr.count("\n") == 1 and "must be earlier than --until" in result.stderr


def test_simulate_on_a_busy_port_and_with_inverted_sizes_is_one_line(tmp_path):
    """README "Exit codes" 2: `simulate` on a port another process listens on, or with
    --min-size above --max-size, says so in one line (real processes, a real socket)."""
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("simulate", "--port", str(port), timeout=30)
    assert result.returncode == errors.EXIT_USAGE
    assert result.stderr.splitlines() == [f"rtk-archive: error: simulate: cannot listen on 127.0.0.1:{port}: "
                                          "Address already in use"]
    inverted = run_cli("simulate", "--port", "0", "--min-size", "2MiB", "--max-size", "1MiB", timeout=30)
    assert inverted.returncode == errors.EXIT_USAGE
    assert inverted.stderr.splitlines() == ["rtk-archive: error: --min-size (2097152 bytes) is larger than "
                                            "--max-size (1048576 bytes)"]


def test_demo_dir_that_cannot_be_created_is_one_line(tmp_path):
    """README "Exit codes" 2: `demo --dir` under a regular file, or naming a regular file, is one
    line naming the folder; nothing is written."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for target, reason in ((blocker / "demo", "Not a directory"), (blocker, "File exists")):
        result = run_cli("demo", "--dir", str(target), "--recordings", "2", timeout=60)
        assert result.returncode == errors.EXIT_USAGE
        assert result.stderr.splitlines() == [f"rtk-archive: error: --dir {target}: cannot create it: {reason}"]
    assert blocker.read_text() == "not a folder"


@pytest.mark.skipif(os.geteuid() != 0, reason="a read-only bind mount needs root (CI runs as root)")
def test_demo_dir_on_a_read_only_mount_is_one_line(tmp_path):
    """README "Exit codes" 2: `demo --dir` on a read-only mount (a real bind mount remounted ro)
    is one line, whether the folder exists or must be created."""
    import subprocess

    ro = tmp_path / "ro"
    (ro / "existing").mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(ro), str(ro)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(ro)], check=True)
        for target, what in ((ro / "new", "cannot create it"), (ro / "existing", "cannot write there")):
            result = run_cli("demo", "--dir", str(target), "--recordings", "2", timeout=60)
            assert result.returncode == errors.EXIT_USAGE
            assert result.stderr.splitlines() == [f"rtk-archive: error: --dir {target}: {what}: Read-only file system"]
    finally:
        subprocess.run(["umount", str(ro)], check=True)


# --------------------------------------------------------------------------- closed stdout, broken pipes


def _run_into_closed_pipe(*args: str):
    """Run the CLI with stdout a pipe whose reader is already gone (what `| head` becomes)."""
    import subprocess

    from tests.helpers import cli_command, cli_env

    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run(cli_command(*args), stdout=write, stderr=subprocess.PIPE, text=True, env=cli_env(),
                              stdin=subprocess.DEVNULL, timeout=120)
    finally:
        os.close(write)


def test_output_into_a_closed_pipe_exits_quietly(sim, tmp_path):
    """README "Command line": stdout piped into `head` (its reader gone): no BrokenPipeError,
    nothing on stderr, the command's own exit code."""
    for _ in range(3):
        sim.add_recording(size=10_000)
    config = write_config(tmp_path, sim)
    assert run_cli("run", "--config", str(config)).returncode == 0
    for args in (("list", "--config", str(config)), ("status", "--config", str(config), "--json"),
                 ("report", "--config", str(config), "--format", "csv"), ("--help",), ("run", "--help")):
        result = _run_into_closed_pipe(*args)
        assert result.returncode == 0, (args, result.stderr)
        assert result.stderr == "", args


def test_closed_stdout_exits_quietly_and_keeps_the_ledger_intact(sim, tmp_path):
    """README "Command line": stdout closed (`>&-`): the run works, exits with its code, prints
    no error, and no file opened later took descriptor 1 (the ledger stays a valid database)."""
    import subprocess

    from tests.helpers import cli_command, cli_env

    sim.add_recording(size=10_000)
    config = write_config(tmp_path, sim)
    command = " ".join(f"'{word}'" for word in cli_command("run", "--config", str(config), "--json"))
    result = subprocess.run(["sh", "-c", f"exec {command} >&-"], capture_output=True, text=True, env=cli_env(),
                            timeout=120)
    assert result.returncode == 0 and result.stderr == ""
    status = run_cli("status", "--config", str(config), "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["files_archived"] == 1


# --------------------------------------------------------------------------- the last resort


def _crashing_cli(tmp_path, *args: str, env: dict | None = None):
    """The real CLI in a process whose command raises an unexpected error (a stand-in for a
    bug) after the configuration, and so its secrets, were loaded."""
    import subprocess
    import sys

    from tests.helpers import cli_env

    script = (
        "import sys\n"
        "from pipeline.cli import app as cli\n"
        "from pipeline.cli.output import load\n"
        "def broken(args):\n"
        "    config = load(args)\n"
        "    raise RuntimeError('bug near ' + config.api_token + ' at https://files.example/x?X-Amz-Signature=abc123')\n"
        "cli.dispatch = broken\n"
        "sys.exit(cli.main(sys.argv[1:]))\n")
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=60,
                          env=cli_env({"XDG_STATE_HOME": str(tmp_path / "state"), **(env or {})}),
                          stdin=subprocess.DEVNULL)


def test_an_unexpected_error_is_one_line_exit_70_and_a_private_crash_file(sim, tmp_path):
    """README "Exit codes" 70: a bug prints one line naming a crash file, writes the redacted
    traceback there (owner-only), and --json still prints its object."""
    config = write_config(tmp_path, sim)
    result = _crashing_cli(tmp_path, "status", "--config", str(config), "--json")
    assert result.returncode == errors.EXIT_INTERNAL
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("rtk-archive: internal error: RuntimeError: bug near ***")
    crash = lines[0].rsplit("details in ", 1)[1]
    assert crash.startswith(str(tmp_path / "state" / "rtk-archive" / "rtk-archive-crash-"))
    assert stat.S_IMODE(os.stat(crash).st_mode) == 0o600
    text = open(crash).read()
    assert "Traceback" in text and "in broken" in text and "RuntimeError: bug near ***" in text
    assert sim.token not in text + result.stderr + result.stdout and "abc123" not in text + result.stderr
    payload = json.loads(result.stdout)
    assert payload["exit_code"] == 70 and payload["error"].startswith("internal error: RuntimeError")


def test_the_crash_file_falls_back_to_the_temp_folder(sim, tmp_path):
    """README "Exit codes" 70: when the state folder cannot be written, the crash file goes to
    the temp folder; when nothing can be written, the line says why. Still one line, exit 70."""
    blocker = tmp_path / "state"
    blocker.write_text("a file where the state folder should be")
    config = write_config(tmp_path, sim)
    (tmp_path / "tmp").mkdir()
    result = _crashing_cli(tmp_path, "status", "--config", str(config), env={"TMPDIR": str(tmp_path / "tmp")})
    assert result.returncode == errors.EXIT_INTERNAL and len(result.stderr.splitlines()) == 1
    assert f"details in {tmp_path / 'tmp'}/rtk-archive-crash-" in result.stderr


def test_when_no_crash_file_can_be_written_the_line_says_why(tmp_path, monkeypatch):
    """README "Exit codes" 70: with neither the state folder nor the temp folder writable, the
    one line says the details could not be written, and why."""
    import tempfile

    from pipeline.cli import app as cli

    blocker = tmp_path / "blocker"
    blocker.write_text("a file where folders should be")
    monkeypatch.setenv("XDG_STATE_HOME", str(blocker))
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(blocker / "tmp"))
    outcome = cli._internal_error(RuntimeError("boom"), ["status"])
    assert outcome.exit_code == errors.EXIT_INTERNAL
    assert outcome.error.startswith("internal error: RuntimeError: boom; the details could not be written (")
    assert "Not a directory" in outcome.error


# --------------------------------------------------------------------------- status and the last run


def test_status_says_a_killed_run_was_killed_and_exits_1(sim, tmp_path):
    """README "Exit codes" 1 / status: a run killed mid-way (SIGKILL: its runs row never gets
    finished_at, its lock is free) shows as killed, never "exit None", and status exits 1.
    While it runs, status says it is running."""
    import signal
    import subprocess
    import time

    from tests.helpers import cli_command, cli_env, ledger_rows

    for _ in range(3):
        sim.add_recording(size=3_000_000)
    sim.faults.set(throttle_bps=1_000_000)
    config = write_config(tmp_path, sim, archive={"concurrency": 1})
    proc = subprocess.Popen(cli_command("run", "--config", str(config)), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=cli_env(), stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not any(r.kind == "file" and r.bytes_sent > 0 for r in sim.requests):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        running = run_cli("status", "--config", str(config), "--json")
        state = json.loads(running.stdout)
        assert state["last_run"] == "running" and f"pid {proc.pid}" in state["running"]
        assert "RUNNING now" in run_cli("status", "--config", str(config)).stdout
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert ledger_rows(tmp_path / "ledger.db", "SELECT finished_at FROM runs") == [{"finished_at": None}]
    status = run_cli("status", "--config", str(config))
    assert status.returncode == errors.EXIT_FAILURES
    assert "KILLED" in status.stdout and "exit None" not in status.stdout
    payload = json.loads(run_cli("status", "--config", str(config), "--json").stdout)
    assert payload["last_run"] == "killed" and payload["error"] == "the last run was killed"
    sim.faults.set(throttle_bps=0)
    assert json.loads(run_cli("run", "--config", str(config), "--json").stdout)["files_archived"] == 3
    assert run_cli("status", "--config", str(config)).returncode == 0


def test_an_interrupted_run_shows_in_status_and_the_next_counts_only_bytes_it_fetched(sim, tmp_path):
    """README "Command line" counts: "downloaded" is the bytes fetched by this run. A run stopped
    by SIGTERM (exit 130, its --json object printed) keeps its spool; status exits 1 saying it
    was interrupted; the next run resumes and reports fewer bytes than the files' total."""
    import signal
    import subprocess
    import time

    from tests.helpers import cli_command, cli_env

    for _ in range(2):
        sim.add_recording(size=3_000_000)
    sim.faults.set(throttle_bps=1_000_000)
    config = write_config(tmp_path, sim, archive={"concurrency": 2})
    proc = subprocess.Popen(cli_command("run", "--config", str(config), "--json"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=cli_env(), stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while sum(r.bytes_sent for r in sim.requests if r.kind == "file") < 500_000:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _err = proc.communicate(timeout=60)
    assert proc.returncode == errors.EXIT_INTERRUPTED
    stopped = json.loads(out)
    assert stopped["exit_code"] == 130 and stopped["interrupted"] and stopped["error"].startswith("interrupted")
    status = run_cli("status", "--config", str(config))
    assert status.returncode == errors.EXIT_FAILURES and "INTERRUPTED" in status.stdout
    sim.faults.set(throttle_bps=0)
    rerun = json.loads(run_cli("run", "--config", str(config), "--json").stdout)
    total = sum(sim.file_size(r["id"]) for r in sim.recordings)
    assert rerun["files_archived"] == 2
    assert 0 < rerun["bytes_downloaded"] <= total - stopped["bytes_downloaded"] + 2 * 65536


def test_status_exits_1_after_a_run_the_api_refused(sim, tmp_path):
    """README "Exit codes" 1 / status: a last run that ended with exit 4 makes status exit 1 and say so."""
    sim.add_recording(size=10_000)
    config = write_config(tmp_path, sim)
    sim.faults.set(forbidden=-1)
    assert run_cli("run", "--config", str(config)).returncode == errors.EXIT_API
    status = run_cli("status", "--config", str(config))
    assert status.returncode == errors.EXIT_FAILURES and "FAILED with exit 4" in status.stdout
    sim.faults.reset()
    assert run_cli("run", "--config", str(config)).returncode == 0
    assert run_cli("status", "--config", str(config)).returncode == 0


def test_a_run_that_hit_a_bug_is_recorded_as_exit_70(sim, tmp_path, monkeypatch):
    """README "Exit codes" 70: an unexpected error inside a run is recorded in the ledger as
    exit 70 (not 4, "the API refused"), with its one-line reason; status then exits 1."""
    from pipeline.archive.execute import Archiver
    from tests.helpers import ledger_rows
    from tests.inprocess import run_main

    sim.add_recording(size=10_000)
    config = write_config(tmp_path, sim)

    def broken(self, plans):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(Archiver, "execute", broken)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    result = run_main("run", "--config", str(config))
    assert result.returncode == errors.EXIT_INTERNAL
    rows = ledger_rows(tmp_path / "ledger.db", "SELECT exit_code, note FROM runs")
    assert rows == [{"exit_code": 70, "note": "internal error: ZeroDivisionError"}]
    status = run_main("status", "--config", str(config))
    assert status.returncode == errors.EXIT_FAILURES and "FAILED with exit 70" in status.stdout


# --------------------------------------------------------------------------- counts, units, at risk


def test_counts_agree_between_dry_run_run_and_json_and_name_their_units(busy_sim, tmp_path):
    """README "Command line" counts: `run --dry-run` and `run` count the same things in the same
    units (files, recordings, copies), in the text and in --json."""
    config = write_config(tmp_path, busy_sim, targets=[
        {"name": "a", "type": "local", "path": str(tmp_path / "a")},
        {"name": "b", "type": "local", "path": str(tmp_path / "b")}])
    plan = json.loads(run_cli("run", "--config", str(config), "--dry-run", "--json").stdout)
    done = run_cli("run", "--config", str(config), "--json")
    result = json.loads(done.stdout)
    assert plan["files_to_archive"] == result["files_archived"] + result["files_failed"] + result["files_lost"]
    assert plan["files_to_archive"] == len(plan["would_archive"]) > 0
    assert plan["copies_to_store"] == 2 * plan["files_to_archive"]
    assert result["copies_stored"] == 2 * result["files_archived"] and result["copies_failed"] == 0
    for key in ("files_skipped", "recordings_skipped"):
        assert plan[key] == result[key], key
    # At risk before the run; after it, every one of them is archived, so none is at risk.
    assert plan["recordings_at_risk"] > 0 and result["recordings_at_risk"] == 0 and result["files_failed"] == 0
    assert plan["skipped"] == plan["files_skipped"] + plan["recordings_skipped"]
    assert result["skipped"] == result["files_skipped"] + result["recordings_skipped"]
    assert result["archived"] == result["files_archived"] and result["lost"] == result["files_lost"] + result["recordings_lost"]
    assert result["bytes_downloaded"] == sum(busy_sim.file_size(rid, kind) for rid, kind in expected_files(busy_sim))
    again = json.loads(run_cli("run", "--config", str(config), "--dry-run", "--json").stdout)
    assert again["files_to_archive"] == 0 and again["files_skipped"] == plan["files_skipped"] + result["files_archived"] + result["files_lost"]
    text = run_cli("run", "--config", str(config)).stdout
    assert f"0 files archived, 0 failed, 0 lost, {again['files_skipped']} with nothing to do; " \
           f"{result['recordings_skipped']} recordings skipped" in text and "copies stored" in text


def test_the_at_risk_list_names_only_recordings_still_not_archived(sim, tmp_path):
    """README "What rtk-archive guarantees" (deadlines): after a run, "at risk" names only the
    recordings near RealtimeKit's deletion that are still not archived everywhere."""
    from datetime import timedelta

    six_days_ago = sim.now() - timedelta(days=6)
    saved = sim.add_recording(size=20_000, invoked_time=six_days_ago, stopped_time=six_days_ago)
    failing = sim.add_recording(size=20_000, invoked_time=six_days_ago, stopped_time=six_days_ago)
    sim.faults.set(size_mismatch={failing["id"]: 100})
    config = write_config(tmp_path, sim)
    plan = json.loads(run_cli("run", "--config", str(config), "--dry-run", "--json").stdout)
    assert plan["recordings_at_risk"] == 2
    result = run_cli("run", "--config", str(config), "--json")
    payload = json.loads(result.stdout)
    assert payload["at_risk_recordings"] == [failing["id"]] and payload["recordings_at_risk"] == 1
    text = run_cli("run", "--config", str(config)).stdout
    assert failing["id"] in text.split("at risk (", 1)[1] and saved["id"] not in text


def test_default_is_quiet_and_v_logs_each_archived_file(sim, tmp_path):
    """README "Command line" levels: the default prints the summary and nothing on stderr;
    -v logs each archived file (recording, kind, target, key, size, SHA-256); -q drops the summary."""
    rec = sim.add_recording(size=12_345)
    config = write_config(tmp_path, sim)
    quiet_default = run_cli("run", "--config", str(config))
    assert quiet_default.returncode == 0 and quiet_default.stderr == ""
    assert quiet_default.stdout.startswith("run ")
    (tmp_path / "ledger.db").unlink()
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"ledger.db{suffix}").unlink(missing_ok=True)
    import shutil

    shutil.rmtree(tmp_path / "nas")
    verbose = run_cli("run", "--config", str(config), "-v")
    sha = sim.expected_sha256(rec["id"])
    line = next(line for line in verbose.stderr.splitlines() if "archived recording" in line)
    assert f"INFO archived recording {rec['id']} video -> nas " in line
    assert f"(12345 bytes, sha256 {sha})" in line and f"/{rec['id']}/video-" in line
    assert "DEBUG" not in verbose.stderr
    assert run_cli("status", "--config", str(config), "-q").stdout  # a query still answers
    quiet = run_cli("run", "--config", str(config), "-q")
    assert quiet.returncode == 0 and quiet.stdout == "" and quiet.stderr == ""


def test_list_all_statuses_shows_all_six(sim, tmp_path):
    """README "Command line": `list --all-statuses` shows recordings in all six statuses."""
    statuses = ("INVOKED", "RECORDING", "UPLOADING", "UPLOADED", "ERRORED", "PAUSED")
    for status in statuses:
        sim.add_recording(status=status)
    config = write_config(tmp_path, sim)
    rows = json.loads(run_cli("list", "--config", str(config), "--all-statuses", "--json").stdout)["recordings"]
    assert sorted(r["status"] for r in rows) == sorted(statuses)
    only = json.loads(run_cli("list", "--config", str(config), "--json").stdout)["recordings"]
    assert [r["status"] for r in only] == ["UPLOADED"]


def test_report_accepts_json_like_every_command(sim, tmp_path):
    """README "Command line": `report --json` is `report --format json`; both together with
    another format is a usage error."""
    sim.add_recording(size=10_000)
    config = write_config(tmp_path, sim)
    run_cli("run", "--config", str(config))
    by_flag = json.loads(run_cli("report", "--config", str(config), "--json").stdout)
    by_format = json.loads(run_cli("report", "--config", str(config), "--format", "json").stdout)
    assert by_flag["rows"] == by_format["rows"] and len(by_flag["rows"]) == 2  # the video and its manifest
    assert by_flag["archived"] == 2
    assert by_flag["exit_code"] == 0 and by_flag["error"] is None
    both = run_cli("report", "--config", str(config), "--json", "--format", "csv")
    assert both.returncode == errors.EXIT_USAGE and "choose one" in both.stderr
    assert json.loads(both.stdout)["exit_code"] == errors.EXIT_USAGE


def test_backfill_until_defaults_to_now(sim, tmp_path):
    """README "Command line": `backfill --since T` without --until runs up to now."""
    from datetime import timedelta

    old = sim.add_recording(size=10_000, invoked_time=sim.now() - timedelta(days=3),
                            stopped_time=sim.now() - timedelta(days=3))
    config = write_config(tmp_path, sim, archive={"lookback_days": 1})
    result = run_cli("backfill", "--config", str(config), "--since", "5d", "--json")
    assert result.returncode == 0 and json.loads(result.stdout)["files_archived"] == 1
    listed = [r for r in sim.requests if r.kind == "api" and r.path.endswith("/recordings")]
    assert listed and all("end_time" in r.query for r in listed)
    assert old["id"] in run_cli("report", "--config", str(config)).stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="a small tmpfs needs root (CI runs as root)")
def test_stdout_on_a_full_disk_is_one_line_and_not_a_silent_success(sim, tmp_path):
    """README "Command line" output: the cron line appends --json to a log file; when that
    disk is full (a real, full tmpfs), the command says so in one line and exits non-zero
    instead of 0 with nothing written."""
    import subprocess

    from tests.helpers import cli_command, cli_env

    sim.add_recording(size=10_000)
    config = write_config(tmp_path, sim)
    assert run_cli("run", "--config", str(config)).returncode == 0
    disk = tmp_path / "full"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], check=True)
    try:
        filler = disk / "filler"
        with open(filler, "wb", buffering=0) as fh:
            try:
                while True:
                    fh.write(b"\0" * 4096)
            except OSError:
                pass
        command = " ".join(f"'{word}'" for word in cli_command("status", "--config", str(config), "--json"))
        result = subprocess.run(["sh", "-c", f"exec {command} >> '{disk / 'log.json'}'"], capture_output=True,
                                text=True, env=cli_env(), timeout=60)
        assert result.returncode == errors.EXIT_FAILURES
        assert result.stderr.splitlines() == ["rtk-archive: error: cannot write the result to stdout: "
                                              "No space left on device"]
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_an_unfinished_run_is_running_only_while_its_own_process_holds_the_lock():
    """README "Exit codes" (status): an unfinished run is running only while its own process
    holds the lock; a lock held by another process (a later verify) means it was killed."""
    import dataclasses

    from pipeline.cli.inspect import last_run_state
    from pipeline.ledger import RunRow

    run = RunRow(id="r", command="run", host="nas1", pid=4242, started_at="2026-11-30T01:00:00.000Z",
                 finished_at=None, archived=None, failed=None, skipped=None, lost=None, at_risk=None, exit_code=None,
                 note=None, audit_head=None)
    assert last_run_state(run, None) == "killed"
    assert last_run_state(run, "pid 4242 on nas1, 'run' since 2026-11-30T01:00:00Z") == "running"
    assert last_run_state(run, "pid 999 on nas1, 'verify' since 2026-11-30T02:00:00Z") == "killed"
    assert last_run_state(run, "unknown (cannot read x.lock: Permission denied)") == "running"
    assert last_run_state(dataclasses.replace(run, finished_at="2026-11-30T03:00:00Z", exit_code=1), None) == "exit 1"


def test_escape_sequences_from_the_api_never_reach_the_terminal(sim, tmp_path):
    """README "Hostile input is contained" (found beyond the issue's list): a meeting title or
    file name carrying terminal escape sequences is shown with them neutralised, in the text
    output and in the log lines; JSON keeps the value, escaped as JSON escapes it."""
    rec = sim.add_recording(size=10_000, meeting_title="\x1b[2J\x1b[31mEvil\x07 title",
                            output_file_name="a\x1b]0;pwned\x07.mp4", file_size="not a number \x1b[5m")
    sim.add_recording(id="rec-\x1b[2J-1", size=10_000, file_size="bad")  # its id is in a warning
    config = write_config(tmp_path, sim)
    listing = run_cli("list", "--config", str(config), "-v")
    run = run_cli("run", "--config", str(config), "-v")
    for output in (listing.stdout, listing.stderr, run.stdout, run.stderr):
        assert "\x1b" not in output and "\x07" not in output
    assert "\ufffd[31mEvil\ufffd title" in listing.stdout and "recording rec-\ufffd[2J-1: file_size" in run.stderr
    as_json = json.loads(run_cli("list", "--config", str(config), "--json").stdout)
    assert as_json["recordings"][0]["title"] == "\x1b[2J\x1b[31mEvil\x07 title"
