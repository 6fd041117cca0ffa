"""A real RFC 3161 time-stamping authority for the tests: a throw-away CA and a TSA certificate
(extendedKeyUsage critical,timeStamping) made with `openssl`, and `openssl ts -reply` behind a
small `http.server` on a free loopback port (request application/timestamp-query, answer
application/timestamp-reply). Its replies carry the TSA certificate only: rfc3161-client's
strict DER parser refuses the unsorted certificate SET `openssl ts` writes with `certs`.
`failing = True` makes it answer HTTP 503, as a TSA that is down."""

from __future__ import annotations

import subprocess
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

TS_CONFIG = """\
[ tsa ]
default_tsa = tsa_config1
[ tsa_config1 ]
dir = {dir}
serial = $dir/serial
crypto_device = builtin
signer_cert = $dir/tsa.crt
signer_key = $dir/tsa.key
signer_digest = sha256
default_policy = 1.2.3.4.1
digests = sha256, sha384, sha512
accuracy = secs:1
ordering = yes
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = sha256
"""


def _openssl(*args: str, cwd: Path) -> bytes:
    return subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60).stdout


def make_authority(folder: Path, name: str = "Test") -> Path:
    """A CA and a TSA certificate signed by it in `folder`; returns the chain file (TSA + CA PEM)
    a verifier is configured with."""
    folder.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "30",
             "-subj", f"/CN={name} CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=folder)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "tsa.key", "-out", "tsa.csr",
             "-subj", f"/CN={name} TSA", cwd=folder)
    (folder / "tsa.ext").write_text("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                                    "extendedKeyUsage=critical,timeStamping\n")
    _openssl("x509", "-req", "-in", "tsa.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "tsa.crt", "-days", "30", "-extfile", "tsa.ext", cwd=folder)
    (folder / "serial").write_text("01\n")
    (folder / "ts.cnf").write_text(TS_CONFIG.format(dir=folder))
    chain = folder / "chain.pem"
    chain.write_bytes((folder / "tsa.crt").read_bytes() + (folder / "ca.crt").read_bytes())
    return chain


class LocalTSA:
    def __init__(self, folder: Path):
        self.folder = folder
        self.chain = make_authority(folder)
        self.failing = False
        self.requests = 0
        self._lock = threading.Lock()  # openssl ts keeps its serial number in a file
        tsa = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                tsa.requests += 1
                if tsa.failing or self.headers.get("Content-Type") != "application/timestamp-query":
                    self.send_response(503 if tsa.failing else 415)
                    self.end_headers()
                    return
                reply = tsa.reply(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/timestamp-reply")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/tsa"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def reply(self, query: bytes) -> bytes:
        with self._lock, tempfile.TemporaryDirectory(dir=self.folder) as work:
            (Path(work) / "q.tsq").write_bytes(query)
            _openssl("ts", "-reply", "-config", str(self.folder / "ts.cnf"), "-queryfile", "q.tsq",
                     "-out", "r.tsr", cwd=Path(work))
            return (Path(work) / "r.tsr").read_bytes()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=10)
