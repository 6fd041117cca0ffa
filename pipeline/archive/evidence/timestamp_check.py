"""`audit verify`'s check of the RFC 3161 tokens: every token the ledger keeps and every token
file beside the log must verify against the TSA's certificate chain and the head it names, and
that head must be in the log (checked with the chain: the heads are handed to `verify_chain`).
The result says until when the log is proven to have existed unaltered."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import os_reason
from pipeline.archive.evidence.timestamps import TimestampProblem, Verified, load_chain, token_dir, verify_token
from pipeline.ledger import AuditHead, TimestampRow


@dataclass(frozen=True)
class Token:
    lines: int
    head: str
    token: bytes
    source: str  # "ledger", or the token file's path


@dataclass
class TokenReport:
    verified: list[tuple[Token, Verified]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # tokens that do not verify: the evidence is broken
    unstamped: list[str] = field(default_factory=list)  # heads the TSA did not stamp when asked (warnings)

    @property
    def latest(self) -> tuple[Token, Verified] | None:
        """The verified token with the latest time: the log up to its line existed then."""
        return max(self.verified, key=lambda pair: (pair[1].gen_time, pair[0].lines), default=None)

    def payload(self) -> dict:
        latest = self.latest
        return {"timestamps_verified": len(self.verified), "timestamp_problems": self.problems,
                "timestamps_missing": self.unstamped, "proven_at": latest[1].gen_time if latest else None,
                "proven_lines": latest[0].lines if latest else None}


def collect_tokens(audit_path: Path, rows: list[TimestampRow]) -> tuple[list[Token], list[str]]:
    """The tokens the ledger keeps and the token files beside the log; and the heads the TSA
    failed to stamp (with why)."""
    tokens = [Token(r.lines, r.head, bytes(r.token), "ledger") for r in rows if r.token is not None]
    unstamped = [f"line {r.lines} (head {r.head[:16]}) at {r.requested_at}: {r.error}" for r in rows if r.token is None]
    folder = token_dir(audit_path)
    for path in sorted(folder.glob("*.tsr")) if folder.is_dir() else []:
        lines, _, head = path.stem.partition("-")
        try:
            tokens.append(Token(int(lines), head, path.read_bytes(), str(path)))
        except ValueError:
            tokens.append(Token(0, head, b"", f"{path} (not named <lines>-<head>.tsr)"))
        except OSError as exc:
            tokens.append(Token(0, head, b"", f"{path} (cannot read it: {os_reason(exc)})"))
    return tokens, unstamped


def token_heads(tokens: list[Token]) -> list[AuditHead]:
    """The heads the tokens cover, for `verify_chain`: each must be a line of the log."""
    return [AuditHead(t.lines, t.head, f"time-stamp ({t.source})", None) for t in tokens if t.lines > 0]


def check_tokens(config, tokens: list[Token], unstamped: list[str]) -> TokenReport:
    report = TokenReport(unstamped=unstamped)
    if not tokens:
        return report
    if config.timestamping.ca_file is None:
        report.problems.append(f"{len(tokens)} time-stamp tokens cannot be checked: no [timestamping] ca_file")
        return report
    chain = load_chain(config.timestamping.ca_file)
    for token in tokens:
        try:
            report.verified.append((token, verify_token(token.token, token.head, chain)))
        except TimestampProblem as exc:
            report.problems.append(f"line {token.lines} ({token.source}): {exc}")
    return report
