"""`rtk-archive check`'s lines for the evidence settings: the signing key and the public keys
load, and the time-stamping authority answers with a token that verifies against `ca_file`
(one request for a throw-away message: nothing is recorded)."""

from __future__ import annotations

import hashlib
import os

from pipeline.errors import ConfigError
from pipeline.archive.evidence.signing import Keyring
from pipeline.archive.evidence.timestamps import TimestampProblem, load_chain, request_token, shown_url


def evidence_checks(config, check) -> list:
    """`check(name, status, detail)` builds one line (pipeline.archive.preflight.Check)."""
    lines = []
    if config.signing.key or config.signing.public_keys:
        try:
            keyring = Keyring.from_config(config.signing)
        except ConfigError as exc:
            lines.append(check("signing", "fail", str(exc)))
        else:
            signer = f"signs with key {keyring.signer.key_id}" if keyring.signer else "does not sign (no key)"
            lines.append(check("signing", "ok", f"{signer}; verifies with {len(keyring.keys)} public key(s): "
                               f"{', '.join(sorted(keyring.keys))}"))
    if config.timestamping.url:
        probe = hashlib.sha256(os.urandom(16)).hexdigest()
        try:
            _token, when = request_token(config.timestamping.url, probe, load_chain(config.timestamping.ca_file),
                                         config.timestamping.timeout)
        except (ConfigError, TimestampProblem) as exc:
            lines.append(check("timestamping", "fail", str(exc)))
        else:
            lines.append(check("timestamping", "ok", f"{shown_url(config.timestamping.url)} answered with a token that "
                               f"verifies against {config.timestamping.ca_file} (time {when})"))
    return lines
