"""gcp-storage-emulator (GCS JSON API) on 127.0.0.1, plus a loopback OAuth token endpoint that
refuses every grant, for the gcs tests and the benchmark.

The emulator checks the md5Hash / crc32c sent with an upload against the bytes, but it does not
check credentials, does not honour ifGenerationMatch, and ignores retention and holds. The token
endpoint makes the wrong-credentials test honest: google-auth performs a real JWT-bearer token
exchange against it and gets a real `400 invalid_grant`, as Google's endpoint answers a revoked
or forged service-account key.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.servers.process import ServerProcess, free_port, http_answers, running

MISSING = ("gcp-storage-emulator is not installed: run tests/run, or "
           "pip install gcp-storage-emulator")


@dataclass
class GCSEmulator:
    port: int
    process: ServerProcess

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.stop()


def start_gcs_emulator(workdir: Path) -> GCSEmulator:
    """Start the emulator in memory; RuntimeError if it is missing or won't start."""
    try:
        import gcp_storage_emulator  # noqa: F401  (only to say clearly that it is missing)
    except ImportError as exc:
        raise RuntimeError(MISSING) from exc
    port = free_port()
    argv = [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1",
            "--port", str(port), "--in-memory"]
    process = ServerProcess("gcs-emulator", argv, log_dir=workdir)
    process.wait_ready(lambda: http_answers(f"http://127.0.0.1:{port}/storage/v1/b"), timeout=60)
    return GCSEmulator(port=port, process=process)


def running_gcs_emulator(workdir: Path | None = None) -> contextlib.AbstractContextManager[GCSEmulator]:
    """The GCS emulator for the length of a `with` block (the benchmark's way to run it)."""
    return running(start_gcs_emulator, "gcs-emulator-", workdir)


# --------------------------------------------------------------------------- refusing token endpoint


class _RefuseGrant(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's naming)
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.server.requests += 1
        body = json.dumps({"error": "invalid_grant", "error_description": "Invalid JWT Signature."}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # keep pytest's output clean
        return


@dataclass
class TokenEndpoint:
    url: str
    server: ThreadingHTTPServer

    @property
    def requests(self) -> int:
        return self.server.requests


@contextlib.contextmanager
def refusing_token_endpoint() -> Iterator[TokenEndpoint]:
    """An OAuth token endpoint on 127.0.0.1 that answers every grant with 400 invalid_grant."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RefuseGrant)
    server.requests = 0
    thread = threading.Thread(target=server.serve_forever, name="refusing-token-endpoint", daemon=True)
    thread.start()
    try:
        yield TokenEndpoint(url=f"http://127.0.0.1:{server.server_address[1]}/token", server=server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def service_account_json(token_uri: str, project: str = "rtk-archive-test") -> str:
    """A syntactically real service-account key (fresh RSA key) whose tokens come from `token_uri`."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return json.dumps({
        "type": "service_account",
        "project_id": project,
        "private_key_id": "0123456789abcdef0123456789abcdef01234567",
        "private_key": pem,
        "client_email": f"archiver@{project}.iam.gserviceaccount.com",
        "client_id": "100000000000000000001",
        "token_uri": token_uri,
    })
