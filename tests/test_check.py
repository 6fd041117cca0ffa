"""`rtk-archive check`, the preflight (README "Preflight"), run as a process against the
simulator: one line per check, exit 0 only when all pass, one JSON object with --json, nothing
permanent changed, and no secret in any output."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from tests.helpers import run_cli, write_config


def checks_of(result) -> dict[str, dict]:
    payload = json.loads(result.stdout)
    return {check["name"]: check for check in payload["checks"]}


def test_check_passes_on_a_working_setup_and_changes_nothing(sim, tmp_path):
    """Every check ok, exit 0; afterwards no ledger, no audit log, no spool, no target folder
    (the probe removes the folders it had to create) and no request for a recording file."""
    config = write_config(tmp_path, sim, targets=[
        {"name": "nas", "type": "local", "path": str(tmp_path / "new" / "nas")},
        {"name": "backup", "type": "local", "path": str(tmp_path / "backup"), "retention_mode": "READ_ONLY"}])
    before = sorted(p.name for p in tmp_path.iterdir())
    result = run_cli("check", "--config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1] == f"all {len(lines) - 1} checks passed"
    names = [line.split(":")[0] for line in lines[:-1]]
    assert names == ["ok    config", "ok    api", "ok    spool", "ok    spool and target 'nas'",
                     "ok    spool and target 'backup'", "ok    ledger", "ok    audit log",
                     "ok    target 'nas' access", "ok    target 'nas' retention", "ok    target 'nas' write",
                     "ok    target 'nas' space", "ok    target 'backup' access", "ok    target 'backup' retention",
                     "ok    target 'backup' write", "ok    target 'backup' space"]
    assert "READ_ONLY" in next(line for line in lines if "'backup' retention" in line)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert [r for r in sim.requests if r.kind == "api"][0].path.endswith("/recordings")
    assert not [r for r in sim.requests if r.path.startswith("/files/")]
    assert result.stderr == ""


def test_check_json_is_one_object_with_every_check(sim, tmp_path):
    """--json: one JSON document with every check, its status, the exit code and no error."""
    config = write_config(tmp_path, sim)
    result = run_cli("check", "--config", str(config), "--json")
    assert result.returncode == 0
    payload = json.loads(result.stdout)  # exactly one JSON document
    assert payload["ok"] is True and payload["exit_code"] == 0 and payload["failed"] == 0
    assert payload["error"] is None
    assert {c["status"] for c in payload["checks"]} == {"ok"}
    assert payload["passed"] == len(payload["checks"]) >= 8


def test_invalid_config_is_a_failing_check_not_a_traceback(tmp_path):
    """An invalid value is one failing `config` line naming the key; nothing else is tried."""
    config = tmp_path / "bad.toml"
    config.write_text('[source]\naccount_id = "a"\napp_id = "b"\n[archive]\nconcurrency = 0\n')
    result = run_cli("check", "--config", str(config), "--json")
    assert result.returncode == 1
    checks = json.loads(result.stdout)["checks"]
    assert {c["name"] for c in checks} == {"config"} and {c["status"] for c in checks} == {"fail"}
    assert any("archive.concurrency" in c["detail"] for c in checks)
    assert json.loads(result.stdout)["error"].startswith("config: ")
    assert "Traceback" not in result.stderr


def test_wrong_token_fails_the_api_check_without_showing_it(sim, tmp_path):
    """The API check makes one authenticated call: a refused token fails it, and the token is
    not shown."""
    token = "rtk-wrong-token-" + uuid.uuid4().hex
    config = write_config(tmp_path, sim, source={"api_token": token})
    result = run_cli("check", "--config", str(config))
    assert result.returncode == 1
    assert [line for line in result.stdout.splitlines() if line.startswith("FAIL")][0].startswith(
        "FAIL  api: 127.0.0.1:")
    assert "refused the token" in result.stdout
    assert token not in result.stdout + result.stderr


def test_ledger_that_is_not_sqlite_and_target_that_is_a_file_are_named(sim, tmp_path):
    """Two broken places, each named with its path; the other checks still run."""
    (tmp_path / "ledger.db").write_text("not a database")
    (tmp_path / "blocker").write_text("a file where the archive folder should be")
    config = write_config(tmp_path, sim, targets=[
        {"name": "nas", "type": "local", "path": str(tmp_path / "blocker" / "archive")}])
    result = run_cli("check", "--config", str(config), "--json")
    assert result.returncode == 1
    checks = checks_of(result)
    assert checks["ledger"]["status"] == "fail" and "is not an SQLite database" in checks["ledger"]["detail"]
    assert checks["target 'nas' access"]["status"] == "fail"
    assert f"{tmp_path / 'blocker'} is a file, not a folder" in checks["target 'nas' access"]["detail"]
    assert "target 'nas' write" not in checks  # nothing else is tried at a target that cannot be reached
    assert checks["api"]["status"] == "ok"
    assert (tmp_path / "ledger.db").read_text() == "not a database"


def test_check_needs_a_config_argument(tmp_path):
    """Usage errors exit 2; a configuration file that does not exist is a failing check."""
    result = run_cli("check")
    assert result.returncode == 2 and "--config" in result.stderr
    missing = run_cli("check", "--config", str(Path(tmp_path) / "none.toml"))
    assert missing.returncode == 1 and "FAIL  config:" in missing.stdout and "no such configuration file" in missing.stdout
