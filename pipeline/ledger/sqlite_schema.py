"""The SQLite ledger's tables, as created (and completed: every statement is IF NOT EXISTS) on
each open to record; pipeline.ledger.migrations numbers its versions."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS recordings (
    id TEXT PRIMARY KEY,
    meeting_id TEXT, meeting_title TEXT, session_id TEXT, output_file_name TEXT,
    status TEXT, invoked_time TEXT, stopped_time TEXT, url_expiry TEXT, deadline TEXT,
    state TEXT NOT NULL DEFAULT 'pending',  -- pending | archived | failed | skipped | lost
    reason TEXT,
    metadata TEXT,                          -- the API record as JSON, minus URLs and storage_config
    first_seen TEXT NOT NULL, updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS files (
    recording_id TEXT NOT NULL REFERENCES recordings(id),
    kind TEXT NOT NULL,                     -- video | audio
    file_name TEXT NOT NULL,
    expected_size INTEGER,
    size INTEGER, sha256 TEXT, md5 TEXT, crc32c TEXT,
    source_host TEXT, downloaded_at TEXT,
    state TEXT NOT NULL DEFAULT 'pending',  -- pending | archived | failed | skipped | lost
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (recording_id, kind)
);
CREATE TABLE IF NOT EXISTS copies (
    recording_id TEXT NOT NULL,
    kind TEXT NOT NULL,                     -- video | audio | manifest
    target TEXT NOT NULL,
    key TEXT NOT NULL,
    state TEXT NOT NULL,                    -- archived | failed | missing | mismatch
    uri TEXT, size INTEGER, sha256 TEXT, native TEXT, version TEXT,
    retention_mode TEXT, retention_until TEXT, legal_hold INTEGER,
    verified_by TEXT,                       -- which digests the verification compared
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    archived_at TEXT, verified_at TEXT, verify_result TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (recording_id, kind, target)
);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    command TEXT NOT NULL, host TEXT, pid INTEGER,
    started_at TEXT NOT NULL, finished_at TEXT,
    archived INTEGER, failed INTEGER, skipped INTEGER, lost INTEGER, at_risk INTEGER,
    exit_code INTEGER, note TEXT,
    audit_head TEXT                         -- hash of the audit log's last line after this run
);
CREATE TABLE IF NOT EXISTS audit_heads (    -- every command that appended to the audit log
    id INTEGER PRIMARY KEY AUTOINCREMENT,   -- records where the log ended, so `audit verify`
    recorded_at TEXT NOT NULL,              -- catches a log cut short after any of them
    command TEXT NOT NULL,
    run_id TEXT,
    audit_path TEXT NOT NULL,
    lines INTEGER NOT NULL,                 -- the log's line count at that moment
    head TEXT NOT NULL                      -- SHA-256 of its last line
);
CREATE TABLE IF NOT EXISTS signatures (     -- which key signed each manifest at each target
    recording_id TEXT NOT NULL, target TEXT NOT NULL,
    manifest_key TEXT NOT NULL, signature_key TEXT NOT NULL,
    key_id TEXT NOT NULL, signed_at TEXT NOT NULL,
    PRIMARY KEY (recording_id, target)
);
CREATE TABLE IF NOT EXISTS timestamps (     -- RFC 3161 tokens of the audit log's heads
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    audit_path TEXT NOT NULL, lines INTEGER NOT NULL, head TEXT NOT NULL,
    requested_at TEXT NOT NULL, tsa_url TEXT NOT NULL,
    token BLOB,                             -- the TSA's reply (DER); NULL when it failed
    gen_time TEXT,                          -- the time the TSA vouches for
    error TEXT                              -- why there is no token
);
CREATE TABLE IF NOT EXISTS hints (         -- work webhooks announced (rtk-archive serve)
    subject_id TEXT NOT NULL,               -- the recording id (kind 'recording')
    status TEXT NOT NULL,                   -- the event's status, e.g. UPLOADED
    kind TEXT NOT NULL,
    received_at TEXT NOT NULL,
    delivery_id TEXT,                       -- rtk-uuid of the first delivery
    state TEXT NOT NULL DEFAULT 'pending',  -- pending | done | failed
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    next_attempt_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (subject_id, status, kind)
);
CREATE INDEX IF NOT EXISTS hints_due ON hints(state, next_attempt_at);
CREATE INDEX IF NOT EXISTS copies_state ON copies(state);
CREATE INDEX IF NOT EXISTS files_state ON files(state);
CREATE INDEX IF NOT EXISTS copies_verified ON copies(verified_at);
"""
