"""Structured logs for operators (issue 12): `--log-format json` prints one JSON object per
line on stderr with ts/level/logger/msg and the structured fields, redacted exactly like text;
`--log-file` appends to a file created 0600 and reopened after logrotate moved it."""

from __future__ import annotations

import json
import logging
import os
import stat
from datetime import datetime

import pytest

from pipeline.cli.logs import JsonFormatter, setup_logging
from pipeline.redact import REDACTOR
from tests.helpers import config_dict, expected_files, run_cli, to_toml, write_config
from tests.storage.rig_azure import rig_azure  # noqa: F401  (fixtures: real servers)
from tests.storage.rig_s3 import rig_aws  # noqa: F401
from tests.storage.rig_sftp import rig_sftp  # noqa: F401
from tests.test_redaction import API_TOKEN, _secrets

LEVELS = [["-q"], [], ["-v"], ["-vv"], ["-vvv"]]


def _json_lines(stderr: str) -> list[dict]:
    """Every stderr line parsed as JSON (a line that does not parse fails the test)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    return [json.loads(line) for line in lines]


@pytest.mark.parametrize("level", LEVELS, ids=lambda level: " ".join(level) or "default")
def test_json_logs_parse_line_by_line_and_stay_redacted(level, sim, tmp_path):
    """Every stderr line of a real run in json format is one JSON object with an RFC 3339 UTC
    `ts`, `level`, `logger` and `msg`; no API token and no presigned query string appear in
    any of them, at each level from -q to -vvv (the libraries' records included)."""
    for _ in range(2):
        sim.add_recording(size=40_000, audio=True)
    # A failing file makes even -q speak (an ERROR line with structured fields).
    sim.add_recording(size=30_000, audio=False, output_file_name="broken.mp4")
    config = write_config(tmp_path, sim)
    result = run_cli("run", "--config", str(config), "--log-format", "json", *level, timeout=180)
    assert result.returncode in (0, 1), result.stderr[-2000:]
    records = _json_lines(result.stderr)
    for record in records:
        assert {"ts", "level", "logger", "msg"} <= set(record), record
        stamp = datetime.fromisoformat(record["ts"].replace("Z", "+00:00"))
        assert record["ts"].endswith("Z") and stamp.utcoffset().total_seconds() == 0
        assert record["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
    signatures = {value for request in sim.requests if request.kind == "file"
                  for values in request.query.values() for value in values if len(value) >= 8}
    assert signatures, "no presigned URL was used"
    for secret in [sim.token, *signatures]:
        assert secret not in result.stderr, f"{secret[:10]}... in the json log at {level}"
    if level == ["-vvv"]:
        assert any(r["logger"].startswith("httpx") for r in records), "the libraries' debug is json too"
        assert "?***" in result.stderr


def test_json_logs_redact_every_kind_of_secret_at_the_most_verbose_level(tmp_path, rig_aws, rig_azure,  # noqa: F811
                                                                        rig_sftp):  # noqa: F811
    """The README "Secrets stay secret" run of tests/test_redaction.py, in json at -vvv: S3
    keys, an Azure connection string, an SSH private key, the API token and the presigned query
    strings appear in no json line, the libraries' records included."""
    from pipeline.simulator import Simulator

    prefix = f"json-redaction-{tmp_path.name}"
    targets = [{"name": "nas", "type": "local", "path": str(tmp_path / "nas")},
               rig_aws.target_settings("s3", prefix), rig_azure.target_settings("blob", prefix),
               rig_sftp.target_settings("sftp", prefix)]
    with Simulator(recordings=0, seed=22, token=API_TOKEN, min_size=20_000, max_size=80_000) as simulator:
        simulator.add_recording(size=60_000, audio=True)
        config = write_config(tmp_path, simulator, targets=targets)
        result = run_cli("run", "--config", str(config), "--log-format", "json", "-vvv", timeout=300)
        signatures = {value for request in simulator.requests if request.kind == "file"
                      for values in request.query.values() for value in values if len(value) >= 8}
    assert result.returncode == 0, result.stderr[-3000:]
    records = _json_lines(result.stderr)
    assert {r["logger"].split(".")[0] for r in records} >= {"httpx", "botocore", "paramiko", "azure"}
    for secret in _secrets(targets) + sorted(signatures):
        assert secret not in result.stderr, f"{secret[:12]}... in the json log"


def test_json_logs_carry_the_structured_fields(sim, tmp_path):
    """At -v, each archived file's line carries recording_id, file, target, bytes and sha256,
    and they are the values that were really archived."""
    for _ in range(3):
        sim.add_recording(size=50_000, audio=True)
    config = write_config(tmp_path, sim)
    result = run_cli("run", "--config", str(config), "--log-format", "json", "-v")
    assert result.returncode == 0, result.stderr[-2000:]
    archived = [r for r in _json_lines(result.stderr) if r["msg"].startswith("archived recording")]
    expected = expected_files(sim)
    assert len(archived) == len(expected)
    for record in archived:
        assert record["target"] == "nas" and record["level"] == "INFO"
        assert expected[(record["recording_id"], record["file"])] == record["sha256"]
        assert isinstance(record["bytes"], int) and record["bytes"] > 0


def test_structured_fields_are_redacted_too():
    """An `error` field quoting a secret or a presigned URL is redacted like the message."""
    REDACTOR.add(["field-secret-value-0123456789"])
    record = logging.LogRecord("rtk_archive.x", logging.ERROR, __file__, 1, "failed", (), None)
    record.error = "auth field-secret-value-0123456789 at https://files.example/a.mp4?X-Amz-Signature=abc"
    record.attempt = 2
    line = json.loads(JsonFormatter().format(record))
    assert line["error"] == "auth *** at https://files.example/a.mp4?***"
    assert line["attempt"] == 2


def test_log_format_from_the_configuration_and_the_command_line_wins(sim, tmp_path):
    """[logging] format = "json" makes stderr json; --log-format text on the command line wins."""
    sim.add_recording(size=20_000, audio=False)
    raw = config_dict(tmp_path, sim)
    raw["logging"] = {"format": "json"}
    config = tmp_path / "json.toml"
    config.write_text(to_toml(raw))
    as_json = run_cli("run", "--config", str(config), "-v")
    assert as_json.returncode == 0, as_json.stderr
    assert _json_lines(as_json.stderr)
    as_text = run_cli("run", "--config", str(config), "-v", "--log-format", "text")
    assert as_text.stderr.strip() and not as_text.stderr.lstrip().startswith("{")


def test_log_file_is_private_appends_and_follows_logrotate(sim, tmp_path):
    """--log-file: created 0600, two runs append to it; after logrotate moved it away, the next
    records go to a new file at the same path, created 0600 too (WatchedFileHandler semantics)."""
    sim.add_recording(size=20_000, audio=True)
    config = write_config(tmp_path, sim)
    path = tmp_path / "logs" / "rtk.log"
    path.parent.mkdir()
    first = run_cli("run", "--config", str(config), "-v", "--log-file", str(path))
    assert first.returncode == 0, first.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    size = path.stat().st_size
    assert "archived recording" in path.read_text()
    second = run_cli("run", "--config", str(config), "-v", "--log-file", str(path), "--log-format", "json")
    assert second.returncode == 0, second.stderr
    text = path.read_text()
    assert len(text) > size and text.startswith(first_line(path))  # appended, the first run's lines kept

    class Args:
        quiet, verbose, log_format, log_file = False, 1, "text", str(path)

    old_umask = os.umask(0o022)
    try:
        setup_logging(Args())
        logging.getLogger("rtk_archive.test").info("before rotation")
        path.rename(path.with_name("rtk.log.1"))  # what logrotate does (without copytruncate)
        logging.getLogger("rtk_archive.test").info("after rotation")
    finally:
        os.umask(old_umask)
        for handler in logging.getLogger().handlers:
            handler.close()
        logging.getLogger().handlers[:] = []
    assert "before rotation" in path.with_name("rtk.log.1").read_text()
    assert "after rotation" in path.read_text() and "before rotation" not in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def first_line(path) -> str:
    return path.read_text().splitlines(keepends=True)[0]


def test_a_log_file_that_cannot_be_opened_is_a_usage_error(sim, tmp_path):
    """A --log-file in a folder that does not exist: exit 2 and one line naming it, no traceback."""
    config = write_config(tmp_path, sim)
    result = run_cli("run", "--config", str(config), "--log-file", str(tmp_path / "missing" / "x.log"))
    assert result.returncode == 2
    assert "missing/x.log" in result.stderr and "Traceback" not in result.stderr
