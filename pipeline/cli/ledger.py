"""`rtk-archive ledger ...`: the ledger's schema and where it lives. `migrate` brings the
configured ledger to this code's schema version; `export --to URL` moves the configured SQLite
ledger into an empty PostgreSQL database, and `import --from PATH` moves an SQLite ledger into
the configured PostgreSQL one (both losslessly, compared row for row afterwards). A URL given on
the command line may leave its password out: libpq then reads PGPASSWORD (or ~/.pgpass), and
nothing printed ever shows it."""

from __future__ import annotations

from pathlib import Path

from pipeline import errors
from pipeline.cli.output import Outcome, load
from pipeline.redact import REDACTOR


def cmd_ledger(args) -> Outcome:
    return {"migrate": _migrate, "export": _export, "import": _import}[args.ledger_command](args)


def _migrate(args) -> Outcome:
    config = load(args)
    if config.ledger.shared:
        from pipeline.ledger.postgres import migrate

        before, after = migrate(config.ledger.location)
    else:
        from pipeline.ledger import open_ledger, sqlite_files

        path = config.ledger.path
        before = _sqlite_version_of(path) if sqlite_files.exists(path) else 0
        open_ledger(path, command="ledger migrate").close()  # an SQLite ledger migrates as it opens to record
        after = _sqlite_version_of(path)
    text = (f"ledger {config.ledger.shown}: schema version {after}"
            + (f" (was {before})" if before != after else " (already the latest)"))
    return Outcome(errors.EXIT_OK, {"ledger": config.ledger.shown, "version_before": before, "version": after}, text)


def _sqlite_version_of(path: Path) -> int:
    from pipeline.ledger import sqlite_files
    from pipeline.ledger.migrations import sqlite_version

    db = sqlite_files.open_read_only(path)
    try:
        return sqlite_version(db)
    finally:
        db.close()


def _export(args) -> Outcome:
    config = load(args)
    if config.ledger.shared:
        raise errors.ConfigError(f"{config.path}: [ledger] is already PostgreSQL; export moves an SQLite ledger "
                                 "(set [ledger] path, or use `ledger import --from PATH`)")
    return _moved(config.ledger.path, _url(args.to))


def _import(args) -> Outcome:
    config = load(args)
    if not config.ledger.shared:
        raise errors.ConfigError(f"{config.path}: [ledger] url is not set; import moves an SQLite ledger into "
                                 "the configured PostgreSQL one (or use `ledger export --to URL`)")
    return _moved(Path(args.source), config.ledger.location)


def _url(text: str) -> str:
    from pipeline.ledger import is_postgres_url

    if not is_postgres_url(text):
        raise errors.ConfigError("--to: must be a postgresql:// URL")
    return text


def _moved(path: Path, url: str) -> Outcome:
    from urllib.parse import urlsplit

    from pipeline.ledger.postgres import redact_url
    from pipeline.ledger.transfer import sqlite_to_postgres

    REDACTOR.add([url] + ([urlsplit(url).password] if urlsplit(url).password else []))
    copied = sqlite_to_postgres(path, url)
    shown = redact_url(url)
    counts = ", ".join(f"{n} {table}" for table, n in copied.rows.items())
    text = (f"moved ledger {path} into {shown} (schema version {copied.schema_version}): {counts}; "
            "every table compared equal. Point [ledger] url at it and remove [ledger] path; "
            f"the audit log stays where it is. {path} was left as it is (keep it as a backup).")
    return Outcome(errors.EXIT_OK, {"from": str(path), "to": shown, "rows": copied.rows}, text)
