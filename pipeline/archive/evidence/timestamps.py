"""RFC 3161 trusted timestamps of the audit log's head: after each command that appended to
the log, a time-stamping authority (`[timestamping] url`) signs "this SHA-256 existed at time T"
for the SHA-256 of the head (the hex text of the last line's hash). The token (the TSA's DER
reply) goes into the ledger and beside the log (`<audit log>.tsr/<lines>-<head>.tsr`, readable by
`openssl ts -verify`). A TSA that fails is a warning and a recorded problem, never a failed run.

A verified token proves the log up to that head existed, unaltered, no later than the TSA's
time; it does not prove the log is complete after it, nor anything about the TSA's honesty
beyond its certificate chain (`[timestamping] ca_file`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timezone
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from pipeline.errors import ConfigError, os_reason

log = logging.getLogger("rtk_archive.timestamps")
QUERY_TYPE = "application/timestamp-query"
REPLY_TYPE = "application/timestamp-reply"


class TimestampProblem(Exception):
    """A TSA that cannot be reached, refuses, or answers with a token that does not verify."""


def shown_url(url: str) -> str:
    """The TSA's URL without user and password (a TSA behind basic authentication)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else ""))) \
        if parts.username or parts.password else url


def message(head: str) -> bytes:
    """What is time-stamped: the head's hex text (the TSA signs its SHA-256)."""
    return head.encode("ascii")


def token_dir(audit_path: Path) -> Path:
    return audit_path.with_name(audit_path.name + ".tsr")


def token_path(audit_path: Path, lines: int, head: str) -> Path:
    return token_dir(audit_path) / f"{lines:010d}-{head}.tsr"


def load_chain(ca_file: Path) -> list[x509.Certificate]:
    try:
        certificates = x509.load_pem_x509_certificates(ca_file.read_bytes())
    except OSError as exc:
        raise ConfigError(f"[timestamping] ca_file {ca_file}: cannot read it: {os_reason(exc)}") from None
    except ValueError as exc:
        raise ConfigError(f"[timestamping] ca_file {ca_file}: not PEM certificates ({exc})") from None
    return certificates


def _verifier(chain: list[x509.Certificate], nonce: int | None = None):
    """A verifier trusting the self-signed certificates of the chain as roots, the rest as
    intermediates, and the one certified for time-stamping as the TSA's own."""
    from rfc3161_client import VerifierBuilder

    builder = VerifierBuilder()
    for cert in chain:
        if cert.issuer == cert.subject:
            builder = builder.add_root_certificate(cert)
        elif _for_timestamping(cert):
            builder = builder.tsa_certificate(cert)
        else:
            builder = builder.add_intermediate_certificate(cert)
    if nonce is not None:
        builder = builder.nonce(nonce)
    return builder.build()


def _for_timestamping(cert: x509.Certificate) -> bool:
    try:
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return ExtendedKeyUsageOID.TIME_STAMPING in usage


@dataclass(frozen=True)
class Verified:
    head: str
    gen_time: str  # ISO 8601 UTC: when the TSA vouches the head existed


def verify_token(token: bytes, head: str, chain: list[x509.Certificate], nonce: int | None = None) -> Verified:
    """Check a token against the TSA's certificate chain and the head it must cover."""
    from rfc3161_client import VerificationError, decode_timestamp_response

    try:
        response = decode_timestamp_response(token)
        _verifier(chain, nonce).verify_message(response, message(head))
    except VerificationError as exc:
        raise TimestampProblem(f"the token does not verify for head {head[:16]}: {exc}") from None
    except ValueError as exc:  # not DER, or a chain without a root
        raise TimestampProblem(f"not a usable time-stamp token: {exc}") from None
    when = response.tst_info.gen_time.astimezone(timezone.utc)
    return Verified(head, when.isoformat(timespec="seconds").replace("+00:00", "Z"))


def request_token(url: str, head: str, chain: list[x509.Certificate], timeout: float) -> tuple[bytes, str]:
    """Ask the TSA for a token of `head`; the reply is verified (chain, nonce, head) before it is
    kept. Returns the token and the time it vouches for."""
    import httpx
    from rfc3161_client import HashAlgorithm, TimestampRequestBuilder

    request = (TimestampRequestBuilder().data(message(head)).hash_algorithm(HashAlgorithm.SHA256)
               .nonce(nonce=True).cert_request(cert_request=True).build())
    shown = shown_url(url)
    try:
        answer = httpx.post(url, content=request.as_bytes(), headers={"Content-Type": QUERY_TYPE}, timeout=timeout)
    except httpx.HTTPError as exc:
        raise TimestampProblem(f"the TSA at {shown} could not be reached: {exc}") from None
    if answer.status_code != 200:
        raise TimestampProblem(f"the TSA at {shown} answered HTTP {answer.status_code}")
    verified = verify_token(answer.content, head, chain, nonce=request.nonce)
    return answer.content, verified.gen_time


def stamp_head(config, ledger, *, lines: int, head: str) -> str | None:
    """Time-stamp the audit log's head (when [timestamping] is configured): the token goes to
    the ledger and beside the log. Returns the problem (logged as a warning and recorded in the
    ledger), or None."""
    settings = config.timestamping
    if not settings.url:
        return None
    try:
        token, gen_time = request_token(settings.url, head, load_chain(settings.ca_file), settings.timeout)
    except (TimestampProblem, ConfigError) as exc:
        problem = f"audit log head {head[:16]} (line {lines}) not time-stamped: {exc}"
        log.warning("%s", problem)
        ledger.record_timestamp(audit_path=config.audit.path, lines=lines, head=head,
                                tsa_url=shown_url(settings.url), token=None, gen_time=None, error=str(exc))
        return problem
    ledger.record_timestamp(audit_path=config.audit.path, lines=lines, head=head, tsa_url=shown_url(settings.url),
                            token=token, gen_time=gen_time, error=None)
    path = token_path(config.audit.path, lines, head)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.write_bytes(token)
    except OSError as exc:  # the ledger has it: the copy beside the log is for independent checks
        problem = f"audit log time-stamp token: cannot write {path}: {os_reason(exc)} (the ledger keeps it)"
        log.warning("%s", problem)
        return problem
    return None
