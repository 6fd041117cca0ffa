"""The one way rtk-archive retries (tenacity): how many attempts, within how long, which
failures are worth another try, how long to wait between them (exponential with jitter unless
the caller knows better, e.g. a Retry-After), and a log line before each wait. The API client,
the downloader, the puts to targets and the target probes all build their policy here."""

from __future__ import annotations

import logging
from collections.abc import Callable

import tenacity

Wait = Callable[[tenacity.RetryCallState], float]
State = tenacity.RetryCallState
GaveUp = tenacity.RetryError  # .last_attempt: the last attempt's number and outcome


def backoff(initial: float = 1.0, maximum: float = 30.0) -> Wait:
    """Exponential waits from `initial`, at most `maximum` seconds, with jitter."""
    # (tenacity's wait_exponential_jitter renamed its arguments in 9.x: this reads the same in 8.x and 9.x)
    return tenacity.wait_exponential(multiplier=initial, max=maximum) + tenacity.wait_random(0, 1)


def policy(*, retry, attempts: int | None = None, seconds: float | None = None, stop=None, wait: Wait | None = None,
           log: logging.Logger | None = None, what: str = "", before_sleep=None,
           sleep: Callable[[float], None] | None = None, last_result: bool = False,
           reraise: bool = True) -> tenacity.Retrying:
    """A retry policy: `retry` decides what is retried (a tenacity retry condition); it stops
    after `attempts` tries or `seconds` (or the caller's own `stop`); `log` gets one warning
    before each wait (or the caller's own `before_sleep` says what it wants). With
    `last_result` a policy on results returns the last result as it is when it gives up;
    otherwise the last exception is raised as it is (or, with reraise=False,
    wrapped in a GaveUp that knows how many attempts were made)."""
    stops = [s for s in (stop, attempts and tenacity.stop_after_attempt(attempts),
                         seconds is not None and tenacity.stop_after_delay(seconds)) if s]
    kwargs = {}
    if sleep is not None:
        kwargs["sleep"] = sleep
    if last_result:
        kwargs["retry_error_callback"] = lambda state: state.outcome.result()
    return tenacity.Retrying(
        retry=retry,
        stop=_any(stops),
        wait=wait or backoff(),
        before_sleep=before_sleep or (_logger(log, what, attempts) if log else None),
        reraise=reraise and not last_result,
        **kwargs)


def on_exception(test: Callable[[BaseException], bool]):
    return tenacity.retry_if_exception(test)


def on_result(test: Callable[[object], bool]):
    return tenacity.retry_if_result(test)


def _any(stops: list):
    if not stops:
        return tenacity.stop_never
    combined = stops[0]
    for other in stops[1:]:
        combined = combined | other
    return combined


def _logger(log: logging.Logger, what: str, attempts: int | None):
    def before_sleep(state: tenacity.RetryCallState) -> None:
        outcome = state.outcome
        reason = outcome.exception() if outcome is not None and outcome.failed else "not yet"
        of = f" of {attempts}" if attempts else ""
        log.warning("%s%s; retrying in %.1f s (attempt %d%s)", f"{what}: " if what else "", reason,
                    state.upcoming_sleep, state.attempt_number + 1, of,
                    extra={"attempt": state.attempt_number + 1, "error": str(reason)})
    return before_sleep


def on_exception_type(*types: type[BaseException]):
    return tenacity.retry_if_exception_type(types)


def before_delay(seconds: float):
    """Stop before a wait would end later than `seconds` after the first attempt."""
    return tenacity.stop_before_delay(seconds)
