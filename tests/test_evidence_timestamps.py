"""RFC 3161 trusted timestamps of the audit log's head, against a real local TSA (`openssl ts`
behind HTTP, with a throw-away CA made by the test): each command that appends is time-stamped,
the token is kept in the ledger and beside the log, `audit verify` checks every token against the
TSA's chain and its head and says until when the log is proven unaltered; a failing TSA is a
warning and a recorded problem, never a failed run."""

from __future__ import annotations

import json
import shutil
import sqlite3

import pytest

from pipeline.session import run_archive, verify_archive
from tests.helpers import config_dict, ledger_rows, run_cli, to_toml
from tests.servers.tsa import LocalTSA, make_authority
from pipeline.config import load_config


@pytest.fixture
def tsa(tmp_path_factory):
    authority = LocalTSA(tmp_path_factory.mktemp("tsa"))
    yield authority
    authority.stop()


def stamped_config(tmp_path, sim, tsa, ca_file=None):
    raw = config_dict(tmp_path, sim)
    raw["timestamping"] = {"url": tsa.url, "ca_file": str(ca_file or tsa.chain), "timeout": 20}
    path = tmp_path / "stamped.toml"
    path.write_text(to_toml(raw))
    return load_config(path)


def audit_verify(config) -> tuple[int, dict]:
    result = run_cli("audit", "verify", "--config", str(config.path), "--json")
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout)


@pytest.fixture
def stamped(sim, tmp_path, tsa):
    sim.add_recording(size=20_000)
    config = stamped_config(tmp_path, sim, tsa)
    assert run_archive(config, command="test").exit_code == 0
    assert verify_archive(config, target=None, since=None, until=None, deep=False).problems == []
    return config


def test_each_command_that_appends_is_time_stamped_and_audit_verify_proves_it(stamped, tmp_path):
    """A run (its start and its end) and a verify: three tokens, each in the ledger and as a file
    beside the log; `audit verify` checks all six against the TSA chain and reports the latest
    proven time and line."""
    rows = ledger_rows(tmp_path / "ledger.db", "SELECT lines, head, token, gen_time, error FROM timestamps")
    assert len(rows) == 3 and all(r["token"] and r["gen_time"] and r["error"] is None for r in rows)
    files = sorted((tmp_path / "audit.jsonl.tsr").glob("*.tsr"))
    assert [f.read_bytes() for f in files] == [r["token"] for r in rows]
    code, report = audit_verify(stamped)
    assert code == 0 and report["ok"] and report["timestamps_verified"] == 6 and report["timestamp_problems"] == []
    assert report["proven_lines"] == rows[-1]["lines"] == report["lines"]
    assert report["proven_at"] == max(r["gen_time"] for r in rows)


def test_the_token_file_verifies_with_openssl_alone(stamped, tmp_path, tsa):
    """The token beside the log is a standard RFC 3161 reply: `openssl ts -verify` accepts it
    for the head's text with the TSA's CA, independent of rtk-archive."""
    token = sorted((tmp_path / "audit.jsonl.tsr").glob("*.tsr"))[-1]
    head = token.stem.split("-", 1)[1]
    (tmp_path / "head.txt").write_text(head)
    import subprocess
    result = subprocess.run(["openssl", "ts", "-verify", "-in", str(token), "-data", str(tmp_path / "head.txt"),
                             "-CAfile", str(tsa.folder / "ca.crt"), "-untrusted", str(tsa.folder / "tsa.crt")],
                            capture_output=True, text=True)
    assert result.returncode == 0 and "Verification: OK" in result.stdout, result.stderr


def test_a_token_for_another_head_is_caught(stamped, tmp_path):
    """The ledger's second token replaced by the first (a valid token, for another head), and a
    token file renamed to another head: `audit verify` names both and fails."""
    db = sqlite3.connect(tmp_path / "ledger.db")
    with db:
        first = db.execute("SELECT token FROM timestamps ORDER BY id LIMIT 1").fetchone()[0]
        db.execute("UPDATE timestamps SET token=? WHERE id=(SELECT MAX(id) FROM timestamps)", (first,))
    db.close()
    code, report = audit_verify(stamped)
    assert code == 1 and not report["ok"]
    assert len(report["timestamp_problems"]) == 1 and "(ledger)" in report["timestamp_problems"][0]
    assert "does not verify" in report["timestamp_problems"][0]


def test_a_swapped_token_file_is_caught(stamped, tmp_path):
    """A token file copied over another (each a valid token, of another head): caught."""
    first, second = sorted((tmp_path / "audit.jsonl.tsr").glob("*.tsr"))[:2]
    shutil.copyfile(first, second)
    code, report = audit_verify(stamped)
    assert code == 1 and len(report["timestamp_problems"]) == 1 and second.name in report["timestamp_problems"][0]


def test_a_token_from_another_tsa_is_caught(stamped, tmp_path, tmp_path_factory):
    """Verified against a different authority's chain (a TSA the auditor does not trust), every
    token fails."""
    other = make_authority(tmp_path_factory.mktemp("other-tsa"), name="Other")
    text = stamped.path.read_text().replace(str(stamped.timestamping.ca_file), str(other))
    stamped.path.write_text(text)
    code, report = audit_verify(stamped)
    assert code == 1 and report["timestamps_verified"] == 0 and len(report["timestamp_problems"]) == 6


def test_a_time_stamped_head_cut_from_the_log_is_caught(stamped, tmp_path):
    """The log cut back to before its last time-stamped head: the chain check fails on it."""
    log = tmp_path / "audit.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:-2]))
    code, report = audit_verify(stamped)
    assert code == 1 and report["broken_line"] is not None


def test_a_failing_tsa_is_a_warning_and_a_recorded_problem_never_a_failed_run(sim, tmp_path, tsa):
    """TSA down: the run archives and exits 0, logs a warning, the ledger records each failure,
    and `audit verify` (chain intact) lists the heads as not time-stamped, with the reason."""
    sim.add_recording(size=20_000)
    tsa.failing = True
    config = stamped_config(tmp_path, sim, tsa)
    result = run_cli("run", "--config", str(config.path))
    assert result.returncode == 0, result.stderr
    assert "not time-stamped" in result.stderr and "HTTP 503" in result.stderr
    rows = ledger_rows(tmp_path / "ledger.db", "SELECT token, error FROM timestamps")
    assert len(rows) == 2 and all(r["token"] is None and "503" in r["error"] for r in rows)
    code, report = audit_verify(config)
    assert code == 0 and report["timestamps_verified"] == 0 and len(report["timestamps_missing"]) == 2


def test_check_asks_the_tsa_and_verifies_its_answer(sim, tmp_path, tsa, tmp_path_factory):
    """`check` with [timestamping]: ok when the TSA answers with a token that verifies against
    ca_file; a fail line when the chain is another authority's, and when the TSA is down."""
    config = stamped_config(tmp_path, sim, tsa)
    line = lambda result: next(c for c in json.loads(result.stdout)["checks"] if c["name"] == "timestamping")
    ok = run_cli("check", "--config", str(config.path), "--json")
    assert line(ok)["status"] == "ok" and tsa.url in line(ok)["detail"]
    other = make_authority(tmp_path_factory.mktemp("other"), name="Other")
    wrong = stamped_config(tmp_path, sim, tsa, ca_file=other)
    refused = run_cli("check", "--config", str(wrong.path), "--json")
    assert refused.returncode == 1 and line(refused)["status"] == "fail"
    assert "does not verify" in line(refused)["detail"]
    tsa.failing = True
    down = run_cli("check", "--config", str(config.path), "--json")
    assert line(down)["status"] == "fail" and "HTTP 503" in line(down)["detail"]
