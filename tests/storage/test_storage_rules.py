"""The rules written once in storage/ for every backend: which HTTP statuses are worth retrying,
the comparison of requested with reported write-once protection, the spelling of a retain-until
date, and the house rules of the package itself (it never imports the pipeline)."""

from __future__ import annotations

import ast
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

import storage
from storage import Retention, StoredObject, describe_missing, is_retryable_status, missing_protection
from storage import iso_utc

STORAGE = Path(storage.__file__).parent


@pytest.mark.parametrize("status, retryable", [
    (408, True), (429, True), (500, True), (502, True), (503, True), (504, True), (507, True),
    (501, False), (505, False), (400, False), (401, False), (403, False), (404, False), (409, False),
    (412, False), (200, False), (600, False), (None, False),
])
def test_one_rule_decides_which_http_statuses_are_retried(status, retryable):
    """Time-outs, throttling and server failures may heal; 501 and 505 never do; every other
    status needs a person."""
    assert is_retryable_status(status) is retryable


def stored(retention: Retention | None) -> StoredObject:
    return StoredObject(key="k", uri="s3://b/k", size=1, sha256=None, retention=retention)


@pytest.mark.parametrize("mode, hold, retention, missing", [
    (None, False, None, []),
    ("COMPLIANCE", False, Retention("COMPLIANCE", "2031-01-01T00:00:00Z"), []),
    ("COMPLIANCE", False, None, ["retention_mode"]),
    ("COMPLIANCE", False, Retention("GOVERNANCE", "2031-01-01T00:00:00Z"), ["retention_mode"]),
    ("LOCKED", False, Retention("HOLD", None, legal_hold=True), ["retention_mode"]),  # a hold has no end
    (None, True, Retention("HOLD", None, legal_hold=True), []),
    (None, True, Retention("COMPLIANCE", "2031-01-01T00:00:00Z"), ["legal_hold"]),
    ("UNLOCKED", True, None, ["retention_mode", "legal_hold"]),
])
def test_missing_protection_compares_what_is_asked_with_what_the_object_carries(mode, hold, retention, missing):
    """The one comparison every adapter makes after an upload (and the pipeline can make
    when it verifies a copy): each write-once setting the stored object does not honour."""
    asked = SimpleNamespace(retention_mode=mode, legal_hold=hold)
    assert missing_protection(asked, stored(retention)) == missing


def test_missing_protection_in_words_quotes_what_was_found():
    asked = SimpleNamespace(retention_mode="COMPLIANCE", legal_hold=True)
    copy = stored(Retention("GOVERNANCE", "2031-01-01T00:00:00Z"))
    assert describe_missing(asked, copy, missing_protection(asked, copy)) == \
        "retention COMPLIANCE (the object carries GOVERNANCE) and a legal hold"


@pytest.mark.parametrize("value, text", [
    (datetime(2031, 1, 2, 3, 4, 5, tzinfo=timezone.utc), "2031-01-02T03:04:05.000Z"),
    (datetime(2031, 1, 2, 4, 4, 5, tzinfo=timezone(timedelta(hours=1))), "2031-01-02T03:04:05.000Z"),
    (datetime(2031, 1, 2, 3, 4, 5), "2031-01-02T03:04:05.000Z"),  # no zone: taken as UTC
    ("2031-01-02T03:04:05.000Z", "2031-01-02T03:04:05.000Z"),
])
def test_a_retain_until_date_has_one_spelling(value, text):
    assert iso_utc(value) == text


def storage_modules() -> list[Path]:
    return sorted(STORAGE.rglob("*.py"))


@pytest.mark.parametrize("path", storage_modules(), ids=lambda p: str(p.relative_to(STORAGE)))
def test_every_storage_module_says_what_it_is_for_and_never_imports_the_pipeline(path):
    """The layering: `pipeline` uses `storage`, never the reverse. Each module opens with a
    comment saying what it is for, and stays small enough to read in one sitting."""
    tree = ast.parse(path.read_text())
    assert ast.get_docstring(tree), "no opening comment"
    imported = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module]
    imported += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    assert not [name for name in imported if name == "pipeline" or name.startswith("pipeline.")]
    assert len(path.read_text().splitlines()) <= 400
