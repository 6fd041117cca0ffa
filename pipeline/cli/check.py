"""`check`: the preflight, changing nothing permanent: the configuration, one API call with the
token, the spool, the ledger's and audit log's places, and every target's probe."""

from __future__ import annotations

from pipeline.archive.preflight import Check, CheckReport, run_checks
from pipeline.cli.logs import apply_config
from pipeline.cli.output import Outcome
from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.redact import REDACTOR
from pipeline.session import make_client, open_targets


def cmd_check(args) -> Outcome:
    try:
        config = load_config(args.config)
    except ConfigError as exc:  # a configuration that does not load is the first failed check
        report = CheckReport([Check("config", "fail", line) for line in str(exc).splitlines()])
    else:
        REDACTOR.add(config.secret_values())
        apply_config(args, config)  # [logging]
        report = CheckReport(run_checks(config, make_client=make_client, open_targets=open_targets))
    payload = report.as_dict()
    return Outcome(report.exit_code, payload, report.text(), error=payload["error"])
