"""What the ledger holds, as typed rows: every backend (SQLite today, PostgreSQL next) returns
these, so no caller reads a column by name. Timestamps are text in the one format of
pipeline.clock (they sort and compare as text)."""

from __future__ import annotations

from dataclasses import dataclass, field

# States, per table. A copy is `archived` only after its bytes were verified at the target.
RECORDING_STATES = ("pending", "archived", "failed", "skipped", "lost")
FILE_STATES = ("pending", "archived", "failed", "skipped", "lost")
COPY_STATES = ("archived", "failed", "missing", "mismatch")
# Copy states `verify` records; only a deep verify or a fresh verified put clears them.
PROBLEM_STATES = ("missing", "mismatch")


@dataclass(frozen=True)
class RecordingFacts:
    """What the API says of a recording, as the ledger keeps it."""

    id: str
    meeting_id: str | None
    meeting_title: str | None
    session_id: str | None
    output_file_name: str | None
    status: str | None
    invoked_time: str | None
    stopped_time: str | None
    url_expiry: str | None
    deadline: str | None


@dataclass(frozen=True)
class RecordingRow(RecordingFacts):
    state: str
    reason: str | None
    metadata: dict  # the API record, minus URLs and storage_config (what a manifest says of it)
    first_seen: str
    updated_at: str


@dataclass(frozen=True)
class FileRow:
    recording_id: str
    kind: str  # video | audio
    file_name: str
    expected_size: int | None
    size: int | None
    sha256: str | None
    md5: str | None
    crc32c: str | None
    source_host: str | None
    downloaded_at: str | None
    state: str
    attempts: int
    last_error: str | None
    updated_at: str

    @property
    def digests(self) -> dict[str, str]:
        """The digests computed when it was downloaded (MD5 only when a target checks it)."""
        values = {"sha256": self.sha256, "md5": self.md5, "crc32c": self.crc32c}
        return {name: value for name, value in values.items() if value}


@dataclass(frozen=True)
class CopyRow:
    recording_id: str
    kind: str  # video | audio | manifest
    target: str
    key: str
    state: str
    uri: str | None
    size: int | None
    sha256: str | None
    version: str | None
    retention_mode: str | None
    retention_until: str | None
    legal_hold: bool
    verified_by: str | None
    attempts: int
    last_error: str | None
    archived_at: str | None
    verified_at: str | None
    verify_result: str | None
    native: dict

    @property
    def archived(self) -> bool:
        return self.state == "archived"


@dataclass(frozen=True)
class RunRow:
    id: str
    command: str
    host: str | None
    pid: int | None
    started_at: str
    finished_at: str | None
    archived: int | None
    failed: int | None
    skipped: int | None
    lost: int | None
    at_risk: int | None
    exit_code: int | None
    note: str | None
    audit_head: str | None


@dataclass(frozen=True)
class AuditHead:
    """Where the audit log ended when a command finished appending to it."""

    lines: int | None  # None for heads an older ledger kept in `runs` only
    head: str
    command: str
    recorded_at: str | None


@dataclass(frozen=True)
class SignatureRow:
    """Which key signed a recording's manifest at a target, and where the signature is."""

    recording_id: str
    target: str
    manifest_key: str
    signature_key: str
    key_id: str
    signed_at: str


@dataclass(frozen=True)
class TimestampRow:
    """An RFC 3161 token of the audit log's head (or why the TSA gave none)."""

    lines: int
    head: str
    requested_at: str
    tsa_url: str
    token: bytes | None
    gen_time: str | None
    error: str | None


@dataclass(frozen=True)
class Problem:
    """A file or copy that needs a person's attention, or a recording that was given up."""

    recording_id: str
    kind: str | None
    target: str | None
    state: str
    reason: str | None
    updated_at: str


@dataclass(frozen=True)
class CopyTally:
    """Copies at one target in one state, for metrics: how many, their bytes, the latest check."""

    target: str
    state: str
    copies: int
    bytes: int
    last_verified_at: str | None
    oldest_check_at: str | None  # the copy checked longest ago (its verification, or its store)


@dataclass(frozen=True)
class AtRisk:
    id: str
    meeting_title: str | None
    deadline: str
    state: str


@dataclass
class Known:
    """What the ledger knows of one recording: read in batches by the planner."""

    recording: RecordingRow | None = None
    files: dict[str, FileRow] = field(default_factory=dict)  # kind -> file
    copies: dict[tuple[str, str], CopyRow] = field(default_factory=dict)  # (kind, target) -> copy


@dataclass(frozen=True)
class ListedFile:
    kind: str
    file_name: str
    expected_size: int | None


@dataclass(frozen=True)
class ListedRecording(RecordingFacts):
    """A recording as the API listed it, to be recorded (with its files) in one write."""

    metadata: dict
    files: tuple[ListedFile, ...] = ()
    skipped: str | None = None  # why it cannot be archived (not final yet, no RealtimeKit copy)


@dataclass(frozen=True)
class StoredCopy:
    """A copy as read back from its target after it was verified: what the ledger keeps of it."""

    key: str
    uri: str
    size: int
    sha256: str | None
    native: dict
    version: str | None
    retention_mode: str | None
    retention_until: str | None
    legal_hold: bool


@dataclass(frozen=True)
class Hint:
    """Work a webhook announced (`rtk-archive serve`): `subject_id` is a recording id for kind
    `recording` (status UPLOADED), the unit `<sessionId>.<kind>` for a transcript, summary or
    chat (status AVAILABLE, pipeline.service.artifacts); pending until a worker finishes it."""
    subject_id: str
    status: str
    kind: str
    received_at: str
    delivery_id: str | None
    state: str  # pending | done | failed
    attempts: int
    last_error: str | None
    next_attempt_at: str
