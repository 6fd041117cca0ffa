"""Azurite (Azure Blob emulator) on 127.0.0.1, for the azure tests and the benchmark.

Found through env AZURITE_BLOB, then <repo>/.tools/node_modules/.bin/azurite-blob (what
tests/run installs), then PATH. Started with --skipApiVersionCheck (the SDK sends an API version
newer than Azurite knows), --disableTelemetry (otherwise it calls an outside host) and --loose.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from tests.servers.process import ServerProcess, free_port, http_answers, running

REPO = Path(__file__).resolve().parents[2]
ACCOUNT = "devstoreaccount1"
# Azurite's public, well-known development key (documented by Microsoft): not a secret.
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
MISSING = ("Azurite is not installed: run tests/run (it installs it into .tools/), or "
           "`cd .tools && npm install --no-audit --no-fund azurite@3`, or set AZURITE_BLOB")


def azurite_binary() -> str | None:
    candidates = [os.environ.get("AZURITE_BLOB"), str(REPO / ".tools/node_modules/.bin/azurite-blob"),
                  shutil.which("azurite-blob")]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def connection_string(port: int, key: str = ACCOUNT_KEY) -> str:
    return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={key};"
            f"BlobEndpoint=http://127.0.0.1:{port}/{ACCOUNT};")


@dataclass
class Azurite:
    port: int
    process: ServerProcess

    @property
    def connection_string(self) -> str:
        return connection_string(self.port)

    def stop(self) -> None:
        self.process.stop()


def start_azurite(workdir: Path) -> Azurite:
    """Start Azurite with its data under `workdir`; RuntimeError if it is missing or won't start."""
    binary = azurite_binary()
    if binary is None:
        raise RuntimeError(MISSING)
    port = free_port()
    argv = [binary, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", str(workdir / "data"),
            "--skipApiVersionCheck", "--loose", "--disableTelemetry", "--silent"]
    process = ServerProcess("azurite", argv, log_dir=workdir)
    # Any HTTP answer (403 without a signature) means the blob service is listening.
    process.wait_ready(lambda: http_answers(f"http://127.0.0.1:{port}/{ACCOUNT}?comp=list"), timeout=60)
    return Azurite(port=port, process=process)


def running_azurite(workdir: Path | None = None) -> contextlib.AbstractContextManager[Azurite]:
    """Azurite for the length of a `with` block (the benchmark's way to run it)."""
    return running(start_azurite, "azurite-", workdir)
