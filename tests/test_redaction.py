"""README "Secrets stay secret", proven at every log level: recognisable secrets (the API token,
S3 keys, an Azure connection string, an SSH private key) and the presigned query strings of
the files in flight never reach stdout, stderr, the audit log or the ledger, whether the
records come from rtk-archive or from the libraries underneath (httpx, httpcore, botocore,
urllib3, paramiko, azure), from -q to -vvv."""

from __future__ import annotations

import logging
import re
import sys
import warnings

import pytest

from pipeline.redact import REDACTOR, Redactor, RedactingFilter
from pipeline.simulator import Simulator
from tests.helpers import run_cli, write_config
from tests.inprocess import run_main
from tests.storage.rig_s3 import rig_aws  # noqa: F401  (fixtures: real servers)
from tests.storage.rig_azure import rig_azure  # noqa: F401
from tests.storage.rig_sftp import rig_sftp  # noqa: F401

API_TOKEN = "rtk-test-api-token-7f3a9c1e5b2d4086"
LEVELS = [["-q"], [], ["-v"], ["-vv"], ["-vvv"]]
LIBRARIES = ("httpx", "httpcore", "botocore", "urllib3", "paramiko", "azure", "google")


@pytest.fixture
def token_sim():
    with Simulator(recordings=0, seed=21, token=API_TOKEN, min_size=20_000, max_size=80_000) as simulator:
        simulator.add_recording(size=60_000, audio=True)
        yield simulator


def _secrets(targets: list[dict]) -> list[str]:
    """Every secret in the targets' settings, and the Azure account key inside its connection string."""
    found = [API_TOKEN]
    for target in targets:
        for key in ("access_key", "secret", "private_key", "password"):
            if target.get(key):
                found.append(target[key])
                if "AccountKey=" in target[key]:
                    found.append(target[key].split("AccountKey=", 1)[1].split(";", 1)[0])
                found += [line for line in target[key].splitlines() if len(line) >= 16 and "-----" not in line]
    return found


@pytest.mark.parametrize("level", LEVELS, ids=lambda level: " ".join(level) or "default")
def test_no_secret_and_no_presigned_query_at_any_level(level, token_sim, tmp_path, rig_aws, rig_azure, rig_sftp):  # noqa: F811
    """README "Secrets stay secret": a real `run` with every kind of secret configured and
    signed URLs in flight, at each level from -q to -vvv: no secret and no signature in any
    output, and (at -vvv) the libraries' records really went through the redacting handler."""
    prefix = f"redaction-{tmp_path.name}"
    targets = [{"name": "nas", "type": "local", "path": str(tmp_path / "nas")},
               rig_aws.target_settings("s3", prefix), rig_azure.target_settings("blob", prefix),
               rig_sftp.target_settings("sftp", prefix)]
    config = write_config(tmp_path, token_sim, targets=targets)
    result = run_cli("run", "--config", str(config), *level, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    signatures = {value for request in token_sim.requests if request.kind == "file"
                  for values in request.query.values() for value in values if len(value) >= 8}
    assert signatures, "no presigned URL was used"
    outputs = {"stdout": result.stdout, "stderr": result.stderr, "audit log": (tmp_path / "audit.jsonl").read_text(),
               "ledger": (tmp_path / "ledger.db").read_bytes().decode("latin-1")}
    for where, text in outputs.items():
        for secret in _secrets(targets) + sorted(signatures):
            assert secret not in text, f"{secret[:12]}... in {where} at {level}"
    if level == ["-vvv"]:
        # The libraries spoke, and what they said about the signed URLs was redacted.
        for logger_name in ("httpx", "httpcore", "botocore", "paramiko", "azure"):
            assert re.search(rf" (DEBUG|INFO) {logger_name}[.:]", result.stderr), logger_name
        assert "/files/" in result.stderr and "?***" in result.stderr
    else:
        assert "botocore" not in result.stderr and "HTTP Request" not in result.stderr


def test_library_records_and_warnings_pass_through_the_redacting_handler():
    """README "Secrets stay secret": the filter sits on the handler, so records of every
    library logger, with exceptions, and warnings.warn() are redacted, not only rtk-archive's;
    a handler a library attached to its own logger gets the filter too."""
    REDACTOR.add(["lib-secret-value-1234567890"])
    stderr = _log_in_process().stderr
    assert "lib-secret-value-1234567890" not in stderr and "sig=abc" not in stderr
    spoke = [name for name in LIBRARIES if f" {name}: request https://h/x?*** with ***" in stderr]
    assert spoke == list(LIBRARIES), stderr  # one line per library logger
    assert "failed (ValueError: ***)" in stderr and "warned about ***" in stderr
    assert stderr.count("auth with ***") == 2  # through the library's own handler and through ours


def _log_in_process():
    from pipeline.cli.logs import setup_logging
    from tests import inprocess

    class Args:
        quiet, verbose = False, 3

    names = LIBRARIES
    saved = {name: (logging.getLogger(name).disabled, logging.getLogger(name).propagate) for name in names}
    # A library that prints through a handler of its own (setup_logging must redact it too).
    own = logging.StreamHandler(sys.stderr)
    logging.getLogger("paramiko.transport").addHandler(own)

    def emit(_argv):
        own.setStream(sys.stderr)  # the captured stderr of run_main
        setup_logging(Args())
        for name in names:
            logging.getLogger(name).debug("request https://h/x?sig=abc with lib-secret-value-1234567890")
        logging.getLogger("paramiko.transport").warning("auth with lib-secret-value-1234567890")
        try:
            raise ValueError("lib-secret-value-1234567890")
        except ValueError:
            logging.getLogger("botocore").exception("failed")
        warnings.warn("warned about lib-secret-value-1234567890", UserWarning)
        return 0

    original = inprocess.main
    inprocess.main = emit
    try:
        return run_main()
    finally:
        inprocess.main = original
        logging.getLogger("paramiko.transport").removeHandler(own)
        for name, (disabled, propagate) in saved.items():
            logging.getLogger(name).disabled, logging.getLogger(name).propagate = disabled, propagate


def test_a_no_op_filter_would_be_caught():
    """The filter is what removes the secret (the proof above is not vacuous)."""
    redactor = Redactor(["lib-secret-value-1234567890"])
    record = logging.LogRecord("botocore", logging.DEBUG, __file__, 1, "key %s at %s", (
        "lib-secret-value-1234567890", "https://h/x?X-Amz-Signature=abc"), None)
    assert RedactingFilter(redactor).filter(record)
    assert record.getMessage() == "key *** at https://h/x?***"
