"""Shared test helpers: a config for a simulator and local targets, and the CLI as a process."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from pipeline.config import Config, parse_config

REPO = Path(__file__).resolve().parent.parent


def config_dict(tmp_path: Path, sim, *, targets: list[dict] | None = None, archive: dict | None = None,
                audit: dict | None = None, source: dict | None = None) -> dict:
    return {
        "source": {"account_id": sim.account_id, "app_id": sim.app_id, "api_token": sim.token,
                   "base_url": sim.base_url, "max_retry_seconds": 30, **(source or {})},
        "ledger": {"path": str(tmp_path / "ledger.db")},
        "archive": {"spool_dir": str(tmp_path / "spool"), "concurrency": 3, "retry_max_seconds": 60,
                    **(archive or {})},
        "audit": {"path": str(tmp_path / "audit.jsonl"), **(audit or {})},
        "targets": targets if targets is not None else [{"name": "nas", "type": "local", "path": str(tmp_path / "nas")}],
    }


def make_config(tmp_path: Path, sim, **kwargs) -> Config:
    return parse_config(config_dict(tmp_path, sim, **kwargs), environ={})


def to_toml(data: dict) -> str:
    """A tiny TOML writer for test configs (tables of scalars and arrays of tables)."""
    lines = []

    def scalar(value):
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (int, float)):
            return str(value)
        if isinstance(value, list):
            return "[" + ", ".join(scalar(v) for v in value) + "]"
        return json.dumps(str(value))

    for section, body in data.items():
        if isinstance(body, list):
            for item in body:
                lines.append(f"[[{section}]]")
                lines += [f"{k} = {scalar(v)}" for k, v in item.items()]
        else:
            lines.append(f"[{section}]")
            lines += [f"{k} = {scalar(v)}" for k, v in body.items()]
        lines.append("")
    return "\n".join(lines)


def write_config(tmp_path: Path, sim, name: str = "config.toml", **kwargs) -> Path:
    path = tmp_path / name
    path.write_text(to_toml(config_dict(tmp_path, sim, **kwargs)))
    return path


def cli_env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDFLARE_")}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra or {})
    return env


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipeline", *args]


def run_cli(*args: str, env: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(cli_command(*args), capture_output=True, text=True, env=cli_env(env), timeout=timeout,
                          stdin=subprocess.DEVNULL)


def ledger_rows(path: Path, sql: str, args: tuple = ()) -> list[dict]:
    """Rows of the SQLite ledger at `path`, read with SQL (a test's look under the hood)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute(sql, args).fetchall()]
    finally:
        db.close()


def file_requests(sim) -> list:
    return [r for r in sim.requests if r.path.startswith("/files/") and r.method == "GET"]


def archivable(sim) -> list[dict]:
    """The simulator's recordings an archive run should archive now (UPLOADED, on RealtimeKit's
    bucket, within retention)."""
    now = sim.now()
    return [raw for raw in sim.recordings
            if raw["status"] == "UPLOADED" and sim.has_file(raw["id"], "video")
            and sim.retention_end(raw["id"]) > now]


def expected_files(sim) -> dict[tuple[str, str], str]:
    """(recording id, kind) -> SHA-256 of every file an archive run should store."""
    out = {}
    for raw in archivable(sim):
        for kind in ("video", "audio"):
            if sim.has_file(raw["id"], kind):
                out[(raw["id"], kind)] = sim.expected_sha256(raw["id"], kind)
    return out


def past_retention_files(sim) -> int:
    """How many files the simulator holds for UPLOADED recordings already past retention."""
    now = sim.now()
    return sum(1 for raw in sim.recordings for kind in ("video", "audio")
               if raw["status"] == "UPLOADED" and sim.has_file(raw["id"], kind)
               and sim.retention_end(raw["id"]) <= now)


def stored_digest(root: Path, rid: str, kind: str = "video") -> str | None:
    """SHA-256 of the one file a local target holds for (recording, kind), or None."""
    matches = [p for p in root.rglob(f"{kind}-*") if rid in str(p)]
    assert len(matches) <= 1, matches
    return hashlib.sha256(matches[0].read_bytes()).hexdigest() if matches else None
