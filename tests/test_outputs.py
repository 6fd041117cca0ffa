"""The README's `--json` contract: every command that has --json prints exactly one JSON object
on stdout for every exit code (0, 1, 2, 3, 4, 70, 130), with `exit_code`, `error` (null, or the
one-line reason) and the command's counts (zero when nothing ran), so cron and monitoring never
see a silent gap."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from pipeline import errors
from pipeline.cli.output import COUNTS
from pipeline.ledger.lock import RunLock
from tests.helpers import cli_command, cli_env, run_cli, write_config
from tests.inprocess import run_main

# Every command with --json, with the arguments it needs besides --config.
JSON_COMMANDS = {
    "run": ("run",), "backfill": ("backfill", "--since", "7d"), "status": ("status",), "list": ("list",),
    "verify": ("verify",), "report": ("report",), "audit verify": ("audit", "verify"), "check": ("check",),
}


def check_contract(result, command: str, code: int) -> dict:
    """stdout is one JSON object (nothing before or after it) that tells the outcome."""
    assert result.returncode == code, (command, result.returncode, result.stderr)
    payload = json.loads(result.stdout)
    assert isinstance(payload, dict)
    assert payload["exit_code"] == code and payload["command"] == command
    if code == errors.EXIT_OK:
        assert payload["error"] is None
    else:
        assert isinstance(payload["error"], str) and payload["error"] and "\n" not in payload["error"]
    for key in COUNTS[command]:
        assert isinstance(payload[key], int) and payload[key] >= 0, (command, key)
    assert "Traceback" not in result.stderr
    return payload


@pytest.fixture
def archived(sim, tmp_path):
    """A config whose ledger, audit log and target hold one archived recording."""
    sim.add_recording(size=20_000)
    config = write_config(tmp_path, sim)
    assert run_cli("run", "--config", str(config)).returncode == 0
    return config


def test_exit_0_for_every_command(archived):
    """README --json contract, exit 0: one object with error null and the counts."""
    for command, words in JSON_COMMANDS.items():
        payload = check_contract(run_main(*words, "--config", str(archived), "--json"), command, 0)
        expected = {"status": 1, "report": 2, "verify": 2}.get(command)  # copies: the file and its manifest
        if expected:
            assert payload["archived"] == expected, command


def test_exit_1_for_every_command_that_finds_problems(sim, archived, tmp_path):
    """README --json contract, exit 1: failures (run, backfill), problems (status), a missing
    copy (verify), a broken chain (audit verify), each with its one-line reason."""
    for copy in (tmp_path / "nas").rglob("video-*"):
        copy.chmod(0o600)
        copy.unlink()
    check_contract(run_main("verify", "--config", str(archived), "--json"), "verify", 1)
    check_contract(run_main("status", "--config", str(archived), "--json"), "status", 1)
    bad = sim.add_recording(size=20_000)
    sim.faults.set(size_mismatch={bad["id"]: 7})
    for command in ("run", "backfill"):
        payload = check_contract(run_main(*JSON_COMMANDS[command], "--config", str(archived), "--json"), command, 1)
        assert payload["files_failed"] == 1 and "1 file(s) failed" in payload["error"]
    log = tmp_path / "audit.jsonl"
    log.write_text(log.read_text().replace('"action":"listed"', '"action":"skipped"', 1))
    payload = check_contract(run_main("audit", "verify", "--config", str(archived), "--json"), "audit verify", 1)
    assert payload["error"].startswith("broken at line ")
    broken = check_contract(run_main("check", "--config", str(tmp_path / "absent.toml"), "--json"), "check", 1)
    assert "no such configuration file" in broken["error"]


def test_exit_74_when_the_ledger_cannot_be_used(sim, tmp_path):
    """README --json contract, exit 74: a ledger path that is a folder stops every command
    that needs the ledger with one line and the object."""
    (tmp_path / "ledger.db").mkdir()
    sim.add_recording(size=10_000)
    config = write_config(tmp_path, sim)
    for command in ("run", "backfill", "status", "list", "verify", "report", "audit verify"):
        payload = check_contract(run_main(*JSON_COMMANDS[command], "--config", str(config), "--json"), command, 74)
        assert str(tmp_path / "ledger.db") in payload["error"], command


@pytest.mark.parametrize("command", [*JSON_COMMANDS, "demo"])
def test_exit_2_for_usage_and_configuration_errors(command, tmp_path):
    """README --json contract, exit 2: an argument argparse refuses and a configuration that is
    missing both still print the object (nothing was parsed yet in the first case)."""
    words = ("demo", "--dir", str(tmp_path / "d")) if command == "demo" else JSON_COMMANDS[command]
    config = () if command == "demo" else ("--config", str(tmp_path / "absent.toml"))
    bad_argument = run_main(*words, *config, "--json", "--no-such-option")
    payload = check_contract(bad_argument, command if command != "demo" else "demo", 2)
    assert "--no-such-option" in payload["error"] and bad_argument.stderr.count("\n") == 1
    if command not in ("demo", "check"):  # (check reports a bad configuration as a failed check: exit 1)
        missing = check_contract(run_main(*words, *config, "--json"), command, 2)
        assert missing["error"] == f"{tmp_path / 'absent.toml'}: no such configuration file"
    assert not (tmp_path / "d").exists()


def test_exit_2_when_argparse_sees_json_written_as_format_json(tmp_path):
    """README --json contract: `report --format json` asks for JSON too, even when another
    argument is wrong."""
    result = run_main("report", "--config", str(tmp_path / "c.toml"), "--format", "json", "--since", "never")
    payload = check_contract(result, "report", 2)
    assert "--since" in payload["error"]


def test_exit_3_when_another_run_holds_the_ledger(archived, tmp_path):
    """README --json contract, exit 3: run, backfill and verify refused by the lock."""
    lock = RunLock(tmp_path / "ledger.db").acquire("test holder")
    try:
        for command in ("run", "backfill", "verify"):
            payload = check_contract(run_main(*JSON_COMMANDS[command], "--config", str(archived), "--json"),
                                     command, 3)
            assert "another rtk-archive run" in payload["error"]
    finally:
        lock.release()


def test_exit_4_when_the_api_refuses(sim, archived):
    """README --json contract, exit 4: run, backfill and list when the token is refused."""
    sim.faults.set(forbidden=-1)
    for command in ("run", "backfill", "list"):
        payload = check_contract(run_main(*JSON_COMMANDS[command], "--config", str(archived), "--json"), command, 4)
        assert payload["error"].startswith("RealtimeKit API: ")


@pytest.mark.parametrize("raised, code", [(RuntimeError("a bug"), 70), (KeyboardInterrupt(), 130)])
def test_exit_70_and_130_for_every_command(archived, tmp_path, monkeypatch, raised, code):
    """README --json contract, exit 70 (a bug) and 130 (Ctrl-C): the object is still printed."""
    from pipeline.cli import app as commands

    def fail(args):
        raise raised

    monkeypatch.setattr(commands, "dispatch", fail)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    for command, words in {**JSON_COMMANDS, "demo": ("demo", "--dir", str(tmp_path / "d"))}.items():
        config = () if command == "demo" else ("--config", str(archived))
        payload = check_contract(run_main(*words, *config, "--json"), command, code)
        assert payload["error"].startswith("internal error: RuntimeError: a bug; details in " if code == 70
                                           else "interrupted")


def test_sigterm_to_a_query_still_prints_the_object(sim, archived):
    """README --json contract, exit 130, a real process: SIGTERM while `list --json` waits for
    the API ends it with exit 130 and its JSON object, not a silent death."""
    sim.faults.set(slow_answers=-1, slow_seconds=20)
    before = len(sim.requests)
    proc = subprocess.Popen(cli_command("list", "--config", str(archived), "--json"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=cli_env(), stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not any(r.kind == "api" for r in sim.requests[before:]):  # it waits for the answer now
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    check_contract(result, "list", errors.EXIT_INTERRUPTED)
    assert err.splitlines() == ["rtk-archive: error: interrupted; run the same command again to finish"]


def test_demo_prints_the_object_with_the_run_counts(tmp_path):
    """README --json contract: `demo --json` exits 0 with the first run's counts."""
    payload = check_contract(run_cli("demo", "--dir", str(tmp_path / "demo"), "--recordings", "4", "--json"), "demo", 0)
    assert payload["files_archived"] == payload["first_run"]["files_archived"] > 0
