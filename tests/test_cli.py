"""The CLI end to end, as a separate process, against the simulator over real HTTP."""

from __future__ import annotations

import json
import os
import stat

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
        "(one of local, aws, digitalocean, azure, gcs, sftp)"]


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
    result = run_cli("--help")
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
