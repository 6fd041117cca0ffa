"""The TOML configuration: loading, `${VAR}` expansion, validation.

Every problem becomes one line naming the file and the key (`ConfigError`), never a
traceback. Relative paths are read relative to the configuration file's folder, so a cron job
works from any working directory."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from pipeline.archive import object_keys as keys
from pipeline import quantities
from pipeline.realtimekit import DEFAULT_BASE_URL
from pipeline.errors import ConfigError
from pipeline.config_sections import (LoggingConfig, MetricsConfig, NotifyConfig, Section as _Section,
                                      SigningConfig, TimestampingConfig, VerifyConfig, usable_path as _usable_path)
from pipeline.service_settings import ServeConfig, WebhookConfig
from storage import TargetSettings, check_endpoint, settings_model, target_types

DEFAULT_KEY_TEMPLATE = "{yyyy}/{mm}/{dd}/{recording_id}/{kind}-{file_name}"
KEY_FIELDS = set(keys.TEMPLATE_FIELDS)
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Ids go into the API's URL path: one path segment, nothing that could change the URL.
_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
DAY = 86_400.0


class SourceConfig(_Section):
    account_id: str = Field(min_length=1, max_length=128, pattern=_ID)
    app_id: str = Field(min_length=1, max_length=128, pattern=_ID)
    api_token: SecretStr | None = None  # default: env CLOUDFLARE_API_TOKEN
    base_url: str | None = None  # default: env CLOUDFLARE_BASE_URL, then Cloudflare's API
    per_page: int = Field(default=100, ge=1, le=1000)
    timeout: float = Field(default=60.0, gt=0, le=3600)
    max_retries: int = Field(default=6, ge=0, le=20)
    max_retry_seconds: float = Field(default=300.0, gt=0, le=DAY)

    @field_validator("api_token")
    @classmethod
    def _header_safe(cls, value: SecretStr | None) -> SecretStr | None:
        """The token goes into an HTTP header: visible ASCII only. Whitespace around it (a
        newline from a file) is dropped; anything else would fail every request, or worse,
        surface in an error message."""
        if value is None:
            return None
        token = value.get_secret_value().strip()
        if any(not "!" <= char <= "~" for char in token):
            raise ValueError("must be printable ASCII without spaces or line breaks (check for a stray "
                             "character pasted with it)")
        return SecretStr(token)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        url = check_endpoint(value)  # http(s), a host, no credentials
        if url and (urlsplit(url).query or urlsplit(url).fragment):
            raise ValueError("base_url must not contain a query or a fragment")
        return url


class LedgerConfig(_Section):
    """Where the ledger is: an SQLite file (`path`, the embedded default) or a PostgreSQL database
    shared by many workers (`url`, libpq's URL: sslmode and the rest work as in psql). The URL
    is a secret (it holds the password): shown only through `shown`."""

    path: Path | None = None
    url: SecretStr | None = None

    _path = field_validator("path")(_usable_path)

    @field_validator("url")
    @classmethod
    def _postgres_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and urlsplit(value.get_secret_value()).scheme not in ("postgresql", "postgres"):
            raise ValueError("must be a postgresql:// URL (for an SQLite ledger, set path instead)")
        return value

    @model_validator(mode="after")
    def _one_place(self) -> "LedgerConfig":
        if self.path is not None and self.url is not None:
            raise ValueError("set either path (SQLite) or url (PostgreSQL), not both")
        if self.url is None and self.path is None:
            self.path = Path("rtk-archive.db")
        return self

    @property
    def shared(self) -> bool:
        """A PostgreSQL ledger: many workers cooperate on it (leases) instead of one run at a time."""
        return self.url is not None

    @property
    def location(self) -> "Path | str":
        """What open_ledger opens: the SQLite file's path or the PostgreSQL URL (with its password)."""
        return self.url.get_secret_value() if self.url is not None else self.path

    @property
    def shown(self) -> str:
        """The ledger as messages name it: the path, or the URL with its password hidden."""
        if self.url is None:
            return str(self.path)
        from pipeline.ledger.postgres import redact_url
        return redact_url(self.url.get_secret_value())


class ArchiveConfig(_Section):
    concurrency: int = Field(default=4, ge=1, le=64)
    spool_dir: Path = Path("rtk-archive-spool")
    key_template: str = DEFAULT_KEY_TEMPLATE
    # A presigned URL that expires sooner than this is refreshed before the download starts.
    url_refresh_margin_seconds: int = Field(default=300, ge=0, le=int(DAY))
    # Recordings this close to RealtimeKit's 7-day deletion go first and are reported at risk.
    deadline_margin_hours: float = Field(default=48.0, ge=0, le=7 * 24)
    # `run` without --since lists recordings invoked in the last N days only: older ones are
    # past RealtimeKit's retention, and listing an app's whole history every night spends the
    # API's rate limit for nothing. 0: list everything. `backfill` always uses its window.
    lookback_days: float = Field(default=14.0, ge=0, le=36_500)
    download_attempts: int = Field(default=5, ge=1, le=50)
    upload_attempts: int = Field(default=4, ge=1, le=50)
    retry_max_seconds: float = Field(default=600.0, gt=0, le=DAY)
    manifest: bool = True
    # Budgets for a nightly window (pipeline.archive.budget): "5h", "500G", "50M" or a schedule.
    max_duration: float | None = None  # seconds (or "5h", "90m"): then no new file starts
    max_transfer: int | None = None  # bytes (or "500G"): then no new file starts
    bwlimit: str | None = None  # total download rate: "50M", "off", or "08:00,10M 19:00,off"
    # Files of at least this many bytes are downloaded in ranges (like rclone's
    # --multi-thread-cutoff or aria2's --min-split-size), over up to `streams_per_file`
    # connections: with `ramp_streams`, a file starts with one and doubles them (quadruples, where
    # each added stream carried as much as the others) while that raises its rate (a long path
    # fills up; a near server is not slowed down by streams it cannot
    # use); without, it uses them all at once. At most `max_connections` file connections are
    # open at once, across all files of a run.
    ranged_cutoff: int = Field(default=32 << 20, ge=1 << 20, le=1 << 39)
    streams_per_file: int = Field(default=16, ge=1, le=32)
    ramp_streams: bool = True
    max_connections: int = Field(default=32, ge=1, le=256)
    # Files of at least this many bytes are uploaded, to targets that can, while they download
    # (committed only once verified; a value above any file's size: never).
    overlap_cutoff: int = Field(default=64 << 20, ge=1, le=1 << 62)

    _spool_dir = field_validator("spool_dir")(_usable_path)

    @field_validator("max_duration", mode="before")
    @classmethod
    def _duration(cls, value):
        return None if value is None else quantities.parse_duration(value)

    @field_validator("max_transfer", mode="before")
    @classmethod
    def _transfer(cls, value):
        return None if value is None else quantities.parse_size(value)

    @field_validator("bwlimit")
    @classmethod
    def _bwlimit(cls, value: str | None) -> str | None:
        if value is not None:
            quantities.parse_bwlimit(value)
        return value

    @field_validator("key_template")
    @classmethod
    def _template_is_safe(cls, value: str) -> str:
        return check_key_template(value)


class AuditConfig(_Section):
    path: Path = Path("rtk-archive-audit.jsonl")
    ship_to: list[str] = []  # target names that receive a copy of the log after each run

    _path = field_validator("path")(_usable_path)


class Config(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    path: Path | None
    source: SourceConfig
    ledger: LedgerConfig
    archive: ArchiveConfig
    audit: AuditConfig
    targets: list[TargetSettings]
    logging: LoggingConfig = LoggingConfig()
    metrics: MetricsConfig = MetricsConfig()
    notify: NotifyConfig = NotifyConfig()
    signing: SigningConfig = SigningConfig()
    timestamping: TimestampingConfig = TimestampingConfig()
    serve: ServeConfig = ServeConfig()
    webhook: WebhookConfig = WebhookConfig()
    verify: VerifyConfig = VerifyConfig()

    @property
    def api_token(self) -> str:
        return self.source.api_token.get_secret_value() if self.source.api_token else ""

    @property
    def base_url(self) -> str:
        return (self.source.base_url or DEFAULT_BASE_URL).rstrip("/")

    def secret_values(self) -> list[str]:
        """Every secret in this configuration, for the redaction of all output."""
        values = [self.api_token] if self.api_token else []
        if self.ledger.url is not None:  # the URL itself, and its password wherever it shows alone
            url = self.ledger.url.get_secret_value()
            values += [url] + ([urlsplit(url).password] if urlsplit(url).password else [])
        for target in self.targets:
            values.extend(target.secret_values())
        if self.notify.ping_url:  # a check's URL is what lets anyone ping it
            values.append(self.notify.ping_url.get_secret_value())
        tsa_password = urlsplit(self.timestamping.url).password if self.timestamping.url else None
        if tsa_password:  # a TSA behind basic authentication: never in a warning or the ledger's error
            values.append(tsa_password)
        return values


def check_key_template(template: str) -> str:
    """A key template is checked once, when the configuration is loaded (pipeline.keys)."""
    return keys.check_template(template)


# --------------------------------------------------------------------------- loading


def load_config(path: str | Path, *, environ: dict[str, str] | None = None) -> Config:
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); TOML files are UTF-8") from None
    return parse_config(raw, source=path, environ=environ)


def parse_config(raw: dict[str, Any], *, source: Path | None = None,
                 environ: dict[str, str] | None = None) -> Config:
    environ = dict(os.environ if environ is None else environ)
    label = str(source) if source else "<config>"
    raw = _expand(raw, environ, label, ())
    known = {"source", "ledger", "archive", "audit", "targets", "logging", "metrics", "notify", "signing",
             "timestamping", "serve", "webhook", "verify"}
    for key in raw:
        if key not in known:
            raise ConfigError(f"{label}: unknown section [{key}] (known: {', '.join(sorted(known))})")
    if "source" not in raw:
        raise ConfigError(f"{label}: missing section [source] (account_id and app_id are required)")

    source_raw = dict(_table(raw, "source", label))
    source_raw.setdefault("api_token", environ.get("CLOUDFLARE_API_TOKEN"))
    source_raw.setdefault("base_url", environ.get("CLOUDFLARE_BASE_URL"))
    source_raw = {k: v for k, v in source_raw.items() if v is not None}
    source_cfg = _validate(SourceConfig, source_raw, label, "source")
    ledger = _validate(LedgerConfig, _table(raw, "ledger", label), label, "ledger")
    archive = _validate(ArchiveConfig, _table(raw, "archive", label), label, "archive")
    audit = _validate(AuditConfig, _table(raw, "audit", label), label, "audit")
    logging_cfg = _validate(LoggingConfig, _table(raw, "logging", label), label, "logging")
    metrics = _validate(MetricsConfig, _table(raw, "metrics", label), label, "metrics")
    notify = _validate(NotifyConfig, _table(raw, "notify", label), label, "notify")
    signing = _validate(SigningConfig, _table(raw, "signing", label), label, "signing")
    timestamping = _validate(TimestampingConfig, _table(raw, "timestamping", label), label, "timestamping")
    serve = _validate(ServeConfig, _table(raw, "serve", label), label, "serve")
    webhook = _validate(WebhookConfig, _table(raw, "webhook", label), label, "webhook")
    verify = _validate(VerifyConfig, _table(raw, "verify", label), label, "verify")

    targets_raw = raw.get("targets", [])
    if not isinstance(targets_raw, list) or not all(isinstance(t, dict) for t in targets_raw):
        raise ConfigError(f"{label}: targets must be [[targets]] tables")
    if not targets_raw:
        raise ConfigError(f"{label}: no [[targets]] configured: add at least one place to archive to")
    targets = [_target(entry, index, label) for index, entry in enumerate(targets_raw)]
    names = [t.name for t in targets]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"{label}: targets: the name {name!r} is used twice; names must be unique")
    for name in audit.ship_to:
        if name not in names:
            raise ConfigError(f"{label}: audit.ship_to: no target named {name!r}")

    base = source.parent if source else Path.cwd()
    if ledger.path is not None:
        ledger.path = _resolve(base, ledger.path)
    archive.spool_dir = _resolve(base, archive.spool_dir)
    audit.path = _resolve(base, audit.path)
    logging_cfg.file = logging_cfg.file and _resolve(base, logging_cfg.file)
    metrics.textfile = metrics.textfile and _resolve(base, metrics.textfile)
    signing.key = _resolve(base, signing.key) if signing.key else None
    signing.public_keys = [_resolve(base, p) for p in signing.public_keys]
    if timestamping.ca_file:
        timestamping.ca_file = _resolve(base, timestamping.ca_file)
    if timestamping.url and not timestamping.ca_file:
        raise ConfigError(f"{label}: timestamping.ca_file: required with timestamping.url (the TSA's "
                          "certificate chain, to verify its tokens)")
    for target in targets:
        if target.key_template is not None:
            try:
                check_key_template(target.key_template)
            except ValueError as exc:
                raise ConfigError(f"{label}: targets[{target.name}].key_template: {exc}") from None
    targets = [_resolve_local_path(t, base) for t in targets]
    _refuse_target_in_spool(targets, archive.spool_dir, label)
    return Config(path=source, source=source_cfg, ledger=ledger, archive=archive, audit=audit,
                  targets=targets, logging=logging_cfg, metrics=metrics, notify=notify, signing=signing,
                  timestamping=timestamping, serve=serve, webhook=webhook, verify=verify)


def _table(raw: dict, name: str, label: str) -> dict:
    value = raw.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{label}: [{name}] must be a table")
    return value


def _target(entry: dict, index: int, label: str) -> TargetSettings:
    where = f"targets[{index}]" + (f" ({entry['name']})" if isinstance(entry.get("name"), str) else "")
    type_name = entry.get("type")
    if type_name is None:
        raise ConfigError(f"{label}: {where}.type: missing (one of {', '.join(target_types())})")
    if type_name not in target_types():
        raise ConfigError(
            f"{label}: {where}.type: unknown target type {type_name!r} (one of {', '.join(target_types())})"
        )
    return _validate(settings_model(type_name), entry, label, where)


def _validate(model: type[BaseModel], data: dict, label: str, where: str):
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, label, where)) from None


def _describe(exc: ValidationError, label: str, where: str) -> str:
    """One line per problem, naming the key; input values are never echoed (they may be secrets)."""
    lines = []
    for error in exc.errors(include_input=False, include_url=False):
        key = ".".join(str(part) for part in error["loc"]) or "(table)"
        kind = error["type"]
        if kind == "extra_forbidden":
            message = "unknown key (remove it, or check its spelling)"
        elif kind == "missing":
            message = "required key is missing"
        elif kind == "string_pattern_mismatch":
            message = "must be an id of letters, digits, '.', '_' or '-' (not a URL or a path)"
        else:
            message = error["msg"].removeprefix("Value error, ")
        lines.append(f"{label}: {where}.{key}: {message}")
    return "\n".join(lines)


def _expand(value: Any, environ: dict[str, str], label: str, where: Iterable[str]) -> Any:
    """Replace ${VAR} in every string; a variable that is not set is an error naming it."""
    where = tuple(where)
    if isinstance(value, str):
        def substitute(match: re.Match) -> str:
            name = match.group(1)
            if name not in environ:
                key = ".".join(where) or "(value)"
                raise ConfigError(f"{label}: {key}: environment variable {name} is not set")
            return environ[name]

        return _VAR.sub(substitute, value)
    if isinstance(value, dict):
        return {k: _expand(v, environ, label, (*where, str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, environ, label, (*where, str(i))) for i, v in enumerate(value)]
    return value


def _resolve(base: Path, path: Path) -> Path:
    path = Path(os.path.expanduser(str(path)))
    return path if path.is_absolute() else (base / path)


def _refuse_target_in_spool(targets: list[TargetSettings], spool_dir: Path, label: str) -> None:
    """A local target inside the spool folder (or holding it) would lose its archived files: a
    run that ends empties the spool folder of everything it holds."""
    spool = Path(os.path.realpath(spool_dir))
    for target in targets:
        if target.type != "local":
            continue
        folder = Path(os.path.realpath(target.path))
        if folder == spool or spool in folder.parents or folder in spool.parents:
            raise ConfigError(f"{label}: targets[{target.name}].path: {target.path} and archive.spool_dir "
                              f"{spool_dir} overlap; the spool is emptied after each run, so a target must "
                              "not be inside it (nor it inside a target): give them separate folders")


def _resolve_local_path(target: TargetSettings, base: Path) -> TargetSettings:
    if target.type != "local":
        return target
    return target.model_copy(update={"path": str(_resolve(base, Path(target.path)))})
