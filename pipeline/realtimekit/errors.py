"""The RealtimeKit API's failures as exceptions (one line each), and which answers the API
client tries again."""

from __future__ import annotations

from storage import is_retryable_status as is_retryable_http_status

# A POST that may have reached the server is not retried: starting a recording twice is worse
# than reporting a failure. Only "surely not processed" answers are retried for POST.
POST_RETRYABLE_STATUSES = frozenset({429})


def is_retryable_status(status: int) -> bool:
    """The one rule of what is worth another try (storage.is_retryable_status: 408, 429, 5xx
    but 501/505), plus 409: the API answers it while a record is being changed, and the
    official SDKs retry it. POST: see above."""
    return is_retryable_http_status(status) or status == 409


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
