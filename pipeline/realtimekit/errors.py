"""The RealtimeKit API's failures as exceptions (one line each), and the one answer to "is this
HTTP status worth another try?" for the API client."""

from __future__ import annotations

# 408 timeout, 409 conflict (the API answers it while a record is being changed), 429 rate
# limit, and any 5xx: the same set the official SDKs retry. storage.errors.is_retryable_status
# is the storage side's counterpart; when it lands, this should become that one definition.
RETRYABLE_STATUSES = frozenset({408, 409, 429})
# A POST that may have reached the server is not retried: starting a recording twice is worse
# than reporting a failure. Only "surely not processed" answers are retried for POST.
POST_RETRYABLE_STATUSES = frozenset({429})


def is_retryable_status(status: int) -> bool:
    """True when an answer with this HTTP status is worth another try (POST: see above)."""
    return status in RETRYABLE_STATUSES or status >= 500


class ApiError(Exception):
    """A call to the RealtimeKit API failed. `str()` is one line that says what and why."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        api_errors: tuple[str, ...] = (),
    ) -> None:
        self.message = " ".join(message.split())  # one line, whatever the server sent
        super().__init__(self.message)
        self.status_code = status_code
        self.retryable = retryable
        self.retry_after = retry_after
        self.api_errors = api_errors

    def __str__(self) -> str:
        return self.message


class ApiAuthError(ApiError):
    """401/403: the token is wrong or lacks permission. Never retried."""


class ApiNotFound(ApiError):
    """404: no such recording (or meeting, for the active-recording endpoint)."""


class RequestNotSent(ApiError):
    """The request never left (no connection): safe to retry even for POST."""
