"""The storage errors every adapter raises, the lazy SDK import, and the one rule for which HTTP
statuses are worth retrying."""

from __future__ import annotations

import importlib
from typing import ClassVar


class StorageError(Exception):
    """A storage operation failed. `retryable` tells the pipeline whether trying again can help.

    Messages are built by the adapters from safe facts (target name, key, an error code),
    never from a credential, so they can be logged and stored in the ledger as they are.
    """

    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, target: str | None = None):
        self.target = target
        super().__init__(f"target '{target}': {message}" if target else message)


class RetryableStorageError(StorageError):
    """Throttling, time-outs, broken connections, 5xx: the same call may succeed later."""

    retryable = True


class PermanentStorageError(StorageError):
    """Bad credentials, a missing bucket, no permission, a bad setting: a person must act."""


class NotFound(PermanentStorageError, FileNotFoundError):
    """The key does not exist at the target (the one sentinel every backend raises)."""


class ObjectConflict(PermanentStorageError):
    """A different object already sits under the key; rtk-archive never overwrites one."""


class MissingSDK(PermanentStorageError):
    """The backend's SDK is not installed."""


def require_sdk(module: str, package: str, *, target: str | None = None):
    """Import a backend SDK lazily; a missing one says exactly what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingSDK(
            f"the Python package '{package}' is needed for this target: pip install '{package}'",
            target=target,
        ) from exc


# Statuses that say "the server will not do this", however often it is asked: 501 Not Implemented
# (a feature the store lacks, such as a conditional write) and 505 HTTP Version Not Supported.
_NEVER_HEALS = frozenset({501, 505})


def is_retryable_status(status: int | None) -> bool:
    """May the same HTTP request succeed later? 408 (request time-out), 429 (too many requests)
    and every 5xx but 501 and 505: the server was busy, overloaded, restarting, out of space
    (507) or behind a failing gateway. Every other status needs a person (a wrong key, a missing
    bucket, no permission), and no status (None) is not an HTTP answer at all.

    The one rule for all backends. Before, each kept its own set: Azure and GCS retried only
    500/502/503/504 (so 507 failed for good although freeing space heals it), S3 retried every
    status from 500 up (501 included, which never heals)."""
    return status is not None and (status in (408, 429) or (500 <= status <= 599 and status not in _NEVER_HEALS))


def without_target(exc: StorageError, target: str) -> str:
    """The message of a storage error without its "target 'x': " lead (for a caller that names
    the target itself)."""
    text = str(exc)
    lead = f"target '{target}': "
    return text[len(lead):] if text.startswith(lead) else text
