"""Keep secrets out of every output: the API token, keys, passwords, private keys and
connection strings are replaced wherever they would appear, and presigned URLs lose their
query string. Installed as a logging filter on every handler the CLI sets up."""

from __future__ import annotations

import logging
import re

MASK = "***"
# Control characters other than newline and tab: an API value carrying an escape sequence must
# not drive the reader's terminal (clear it, move the cursor, hide text).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """`text` with control characters replaced by U+FFFD, for a terminal or a log file."""
    return _CONTROL.sub("\ufffd", text)
_URL_QUERY = re.compile(r"(https?://[^\s?#\"'<>]+)\?[^\s\"'<>]*")
# A request line as urllib3 logs it (`"GET /files/x?X-Signature=... HTTP/1.1"`): the path
# without its host, so the rule above does not see it.
_REQUEST_QUERY = re.compile(r"(\"[A-Z]+ /[^\s?#\"]*)\?[^\s\"]*")
MIN_SECRET = 4  # shorter values would mask ordinary words


class Redactor:
    def __init__(self, secrets: list[str] | None = None):
        self._secrets: list[str] = []
        self.add(secrets or [])

    def add(self, secrets: list[str]) -> None:
        values = set(self._secrets)
        for secret in secrets:
            if not secret:
                continue
            values.add(secret)
            # A multi-line secret (a PEM key, a JSON credential) may surface one line at a time.
            values.update(line.strip() for line in secret.splitlines() if len(line.strip()) >= 16)
        self._secrets = sorted((v for v in values if len(v) >= MIN_SECRET), key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return _REQUEST_QUERY.sub(r"\1?" + MASK, _URL_QUERY.sub(r"\1?" + MASK, text))


class RedactingFilter(logging.Filter):
    def __init__(self, redactor: Redactor):
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            # Tracebacks could carry SDK messages; keep one redacted line instead.
            message += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
            record.exc_info = None
            record.exc_text = None
        record.msg = printable(self.redactor(message))
        record.args = ()
        return True


# The process-wide redactor: the CLI adds every configured secret to it and installs it on
# the log handler; every line the tool prints passes through it.
REDACTOR = Redactor()
