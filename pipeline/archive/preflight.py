"""Preflight: find what would break a run before anything is downloaded.

`rtk-archive check` validates the configuration, lists one recording with the API token, checks
the spool, the ledger's and the audit log's folders, and probes every target (`Target.probe`:
reachable, credentials accepted, retention as the bucket reports it, writable with the tool's
own create-only put). It changes nothing permanent: probe objects are removed, folders it had to
create to test them are removed again, no ledger or audit line is written.

`run` probes its targets the same way first (in parallel, in bounded time, retrying what may
pass on a second try) and leaves a failing target out of that run: reported once, its copies
stay un-archived for the next run, the run exits 1.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

from pipeline import errors, retry
from pipeline.realtimekit import ApiAuthError, ApiError
from pipeline.config import Config
from pipeline.errors import ConfigError
from storage import ProbeResult, Target, nearest_existing


log = logging.getLogger("rtk_archive.preflight")

PROBE_SECONDS = 120.0  # all targets together: a broken target costs this much, not a night
PROBE_ATTEMPTS = 3  # a target whose failure may pass when tried again (busy, full) gets this many
SQLITE_HEADER = b"SQLite format 3\x00"


@dataclass(frozen=True)
class Check:
    """One line of `rtk-archive check`."""

    name: str  # config, api, spool, ledger, audit log, target 'x' access, ...
    status: str  # ok | warn | fail
    detail: str  # one line, secret-free (output is redacted once more on the way out)

    @property
    def ok(self) -> bool:
        return self.status != "fail"


# --------------------------------------------------------------------------- target probes


def probe_targets(targets: dict[str, Target], *, seconds: float = PROBE_SECONDS) -> dict[str, list[ProbeResult]]:
    """Probe every target at once, one thread each. A retryable failure is tried again (up to
    PROBE_ATTEMPTS, within the time limit); a target still unanswered after `seconds` gets one
    failed result. The threads are daemons: a server that never answers cannot hold the
    process. An exception that is not a storage error (a bug) is raised here, not hidden."""
    deadline = time.monotonic() + seconds
    results: dict[str, list[ProbeResult]] = {}
    crashes: list[BaseException] = []

    def work(name: str, target: Target) -> None:
        try:
            results[name] = _probe_with_retries(target, deadline)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread below
            crashes.append(exc)

    threads = [threading.Thread(target=work, args=item, name=f"probe-{item[0]}", daemon=True)
               for item in targets.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    if crashes:
        raise crashes[0]
    unanswered = ProbeResult("access", "fail", f"no answer within {seconds:g} s", retryable=True)
    return {name: results.get(name, [unanswered]) for name in targets}


def _probe_with_retries(target: Target, deadline: float) -> list[ProbeResult]:
    def may_pass_later(results: list[ProbeResult]) -> bool:
        return any(not result.ok and result.retryable for result in results)

    return retry.policy(retry=retry.on_result(may_pass_later), attempts=PROBE_ATTEMPTS,
                        seconds=max(0.0, deadline - time.monotonic()), wait=retry.backoff(1, 10),
                        last_result=True)(target.probe)  # the last answer, as it is


def first_failure(results: list[ProbeResult]) -> ProbeResult | None:
    return next((result for result in results if not result.ok), None)


def leave_out_failing_targets(targets: dict[str, Target], leave_out: Callable[[str, str], None]) -> None:
    """`run`'s hook: probe every target; call `leave_out(name, reason)` for each that failed,
    log each warning once."""
    for name, results in probe_targets(targets).items():
        for result in results:
            if result.status == "warn":
                log.warning("target '%s' %s: %s", name, result.check, result.detail)
        failed = first_failure(results)
        if failed is not None:
            leave_out(name, f"{failed.check} check failed: {failed.detail}")


# --------------------------------------------------------------------------- rtk-archive check


@dataclass
class CheckReport:
    checks: list[Check]

    @property
    def failed(self) -> list[Check]:
        return [check for check in self.checks if not check.ok]

    @property
    def exit_code(self) -> int:
        return errors.EXIT_FAILURES if self.failed else errors.EXIT_OK

    def as_dict(self) -> dict:
        first = self.failed[0] if self.failed else None
        return {"ok": not self.failed, "exit_code": self.exit_code,
                "error": f"{first.name}: {first.detail}" if first else None,
                "checks": [asdict(c) for c in self.checks],
                "passed": len(self.checks) - len(self.failed), "failed": len(self.failed)}

    def text(self) -> str:
        label = {"ok": "ok", "warn": "warn", "fail": "FAIL"}
        lines = [f"{label[c.status]:4}  {c.name}: {c.detail}" for c in self.checks]
        if self.failed:
            lines.append(f"{len(self.failed)} of {len(self.checks)} checks failed")
        else:
            lines.append(f"all {len(self.checks)} checks passed")
        return "\n".join(lines)


def check_shared_ledger(config: Config) -> Check:
    """A PostgreSQL ledger: reachable with these credentials, its schema at this code's version."""
    from pipeline.ledger import open_ledger

    try:
        open_ledger(config.ledger.location, pool_size=1).close()
    except errors.BookkeepingError as exc:
        return Check("ledger", "fail", str(exc))
    return Check("ledger", "ok", f"ledger {config.ledger.shown}: reachable, schema up to date")


def run_checks(config: Config, *, make_client: Callable, open_targets: Callable,
               probe_seconds: float = PROBE_SECONDS) -> list[Check]:
    """Every preflight check of a loaded configuration (the caller reports a configuration that
    does not load as the failed `config` check). `make_client`/`open_targets`: the session's."""
    names = ", ".join(t.name for t in config.targets)
    checks = [Check("config", "ok", f"{config.path}: valid; {len(config.targets)} target(s): {names}")]
    checks.append(check_api(config, make_client))
    checks += check_spool(config)
    if config.ledger.shared:
        checks.append(check_shared_ledger(config))
    else:
        checks.append(check_file_place("ledger", config.ledger.path, sqlite=True))
    checks.append(check_file_place("audit log", config.audit.path))
    from pipeline.archive.evidence.preflight_checks import evidence_checks  # (imports back to Check)

    checks += evidence_checks(config, Check)
    with open_targets(config) as targets:
        checks += check_targets(targets, probe_seconds)
    return checks


def check_api(config: Config, make_client: Callable) -> Check:
    """One cheap authenticated call: the first page of recordings, one per page."""
    host = urlsplit(config.base_url).netloc or config.base_url
    try:
        with make_client(config) as api:
            api.per_page = 1
            api.max_retries = min(api.max_retries, 2)  # a preflight should not wait minutes
            api.list_page()
    except ConfigError as exc:
        return Check("api", "fail", str(exc))
    except ApiAuthError as exc:
        return Check("api", "fail", f"{host} refused the token: {exc}")
    except ApiError as exc:
        return Check("api", "fail", f"{host}: {exc}")
    return Check("api", "ok", f"{host} lists recordings of app {config.source.app_id} with this token")


def check_spool(config: Config) -> list[Check]:
    """The spool must be creatable and writable; report its free space, and for each local
    target whether it shares the spool's file system (a download then becomes the first local
    copy by hard link) or not (each file is copied)."""
    spool = config.archive.spool_dir
    try:
        free = _writable_folder(spool)
    except OSError as exc:
        return [Check("spool", "fail", f"{spool}: {_os_reason(exc)}")]
    checks = [Check("spool", "ok", f"{spool}: writable, {free / 1e9:.1f} GB free")]
    spool_device = os.stat(nearest_existing(spool)).st_dev
    for target in config.targets:
        if target.type != "local":
            continue
        root = Path(target.path)
        same = os.stat(nearest_existing(root)).st_dev == spool_device
        checks.append(Check(f"spool and target '{target.name}'", "ok",
                            "same file system: each download becomes the first local copy by hard link"
                            if same else "different file systems: each file is copied to the target"))
    return checks


def check_file_place(name: str, path: Path, *, sqlite: bool = False) -> Check:
    """A file the tool keeps (the ledger, the audit log): an existing one must be a writable
    regular file (and a SQLite database, for the ledger); a new one needs a writable folder."""
    try:
        if path.exists() or path.is_symlink():
            if not path.is_file():
                return Check(name, "fail", f"{path} is not a regular file")
            if sqlite and path.stat().st_size and _head(path) != SQLITE_HEADER:
                return Check(name, "fail", f"{path} is not an SQLite database")
            if not os.access(path, os.R_OK | os.W_OK):  # access(2) reports a read-only mount too
                return Check(name, "fail", f"{path} cannot be written (permissions or a read-only file system)")
            return Check(name, "ok", f"{path} exists and is writable")
        _writable_folder(path.parent)
    except OSError as exc:
        return Check(name, "fail", f"{path}: {_os_reason(exc)}")
    return Check(name, "ok", f"{path} will be created (its folder is writable)")


def check_targets(targets: dict[str, Target], probe_seconds: float) -> list[Check]:
    results = probe_targets(targets, seconds=probe_seconds)
    return [Check(f"target '{name}' {result.check}", result.status, result.detail)
            for name, probe in results.items() for result in probe]


# --------------------------------------------------------------------------- folders


def _writable_folder(folder: Path) -> int:
    """Create `folder` if needed, write, fsync and remove a probe file in it, and remove again
    the folders this created; returns the free bytes there. OSError when any step fails."""
    created = []
    for candidate in reversed((folder, *folder.parents)):
        if not candidate.exists():
            created.append(candidate)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".rtk-archive-check-", dir=folder)
        try:
            os.write(fd, b"rtk-archive check\n")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(name)
        return shutil.disk_usage(folder).free
    finally:
        for path in reversed(created):
            try:
                path.rmdir()
            except FileNotFoundError:
                continue  # never created: mkdir failed before it


def _head(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(len(SQLITE_HEADER))


def _os_reason(exc: OSError) -> str:
    where = f" ({exc.filename})" if exc.filename else ""
    return f"{exc.strerror or type(exc).__name__}{where}"
