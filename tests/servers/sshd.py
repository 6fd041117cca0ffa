"""A real OpenSSH sshd on 127.0.0.1:<free port>, for the SFTP tests and the SFTP benchmark.

Everything is throw-away except the test user, which `useradd` creates once (with a random
password) and later runs reuse. The client keys cover what users paste into
`private_key`: an ed25519 key in OpenSSH format, an RSA key in legacy PEM, and a
passphrase-protected key."""

from __future__ import annotations

import fcntl
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.servers.process import ServerProcess, free_port

SSHD = "/usr/sbin/sshd"
TEST_USER = "rtk-sftp-test"
USER_LOCK = "/tmp/rtk-sftp-test-user.lock"
PASSWORD_FILE = ".rtk-test-password"
RUN_TESTS_HINT = "run tests/run, which installs openssh-server (apt-get install -y openssh-server)"


class SSHDUnavailable(RuntimeError):
    """This machine cannot run the test sshd; the message says what to do."""


@dataclass
class ClientKey:
    path: Path
    passphrase: str | None = None

    @property
    def text(self) -> str:
        return self.path.read_text()


@dataclass
class SSHServer:
    """A running sshd and everything a test needs to log in to it."""

    host: str
    port: int
    user: str
    password: str
    home: Path
    host_key_line: str  # "ssh-ed25519 AAAA..." as the server presents it
    other_host_key_line: str  # a valid key the server does NOT have, for mismatch tests
    known_hosts: Path  # holds "[127.0.0.1]:port ssh-ed25519 ..."
    ed25519_key: ClientKey  # OpenSSH format, no passphrase
    rsa_pem_key: ClientKey  # "BEGIN RSA PRIVATE KEY", no passphrase
    encrypted_key: ClientKey  # OpenSSH format, bcrypt-protected
    workdir: Path
    process: ServerProcess

    def stop(self) -> None:
        self.process.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_sshd(log_dir: Path) -> SSHServer:
    """Start sshd; raises SSHDUnavailable (with what to do) when this machine cannot."""
    _check_prerequisites()
    # Not under pytest's tmp dir: that is 0700 root, and sshd reads authorized_keys as the user.
    workdir = Path(tempfile.mkdtemp(prefix="rtk-sshd-"))
    os.chmod(workdir, 0o755)
    try:
        return _start_in(workdir, log_dir)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise


def _start_in(workdir: Path, log_dir: Path) -> SSHServer:
    home, password = _ensure_user(TEST_USER)
    host_key = _keygen(workdir / "host_ed25519", "ed25519")
    other_host_key = _keygen(workdir / "other_host_ed25519", "ed25519")
    passphrase = "phrase-" + secrets.token_hex(8)
    keys = {
        "ed25519": ClientKey(_keygen(workdir / "id_ed25519", "ed25519")),
        "rsa": ClientKey(_keygen(workdir / "id_rsa_pem", "rsa", pem=True)),
        "encrypted": ClientKey(_keygen(workdir / "id_encrypted", "ed25519", passphrase=passphrase),
                               passphrase),
    }
    authorized = workdir / "authorized_keys"
    authorized.write_text("".join(Path(f"{k.path}.pub").read_text() for k in keys.values()))
    os.chmod(authorized, 0o644)

    port = free_port()
    config = workdir / "sshd_config"
    config.write_text(_config(workdir, port, host_key, authorized))
    _run([SSHD, "-t", "-f", str(config)], "sshd -t rejected the test configuration")

    host_line = _public_line(host_key)
    known_hosts = workdir / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_line}\n")
    process = ServerProcess("sshd", [SSHD, "-D", "-e", "-f", str(config)], log_dir=log_dir)
    process.wait_ready(lambda: _sends_banner(port), timeout=15)
    return SSHServer(
        host="127.0.0.1", port=port, user=TEST_USER, password=password, home=home,
        host_key_line=host_line, other_host_key_line=_public_line(other_host_key),
        known_hosts=known_hosts, ed25519_key=keys["ed25519"], rsa_pem_key=keys["rsa"],
        encrypted_key=keys["encrypted"], workdir=workdir, process=process,
    )


def _check_prerequisites() -> None:
    if not os.path.exists(SSHD) or shutil.which("ssh-keygen") is None:
        raise SSHDUnavailable(f"OpenSSH sshd/ssh-keygen not found ({SSHD}): {RUN_TESTS_HINT}")
    if os.geteuid() != 0:
        raise SSHDUnavailable("the SFTP tests create a test user and start sshd: run them as root "
                              f"({RUN_TESTS_HINT})")
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation chroot


def _ensure_user(name: str) -> tuple[Path, str]:
    """Create the test user once and give it a random password, kept root-only in its home;
    later runs, including parallel ones, reuse both (a new password would lock out a run
    that is still going)."""
    with open(USER_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            _run(["useradd", "-m", "-s", "/bin/sh", name], f"useradd {name} failed")
            entry = pwd.getpwnam(name)
        home = Path(entry.pw_dir)
        password_file = home / PASSWORD_FILE
        if password_file.exists():
            return home, password_file.read_text().strip()
        password = secrets.token_urlsafe(12)
        subprocess.run(["chpasswd"], input=f"{name}:{password}\n", text=True, check=True,
                       capture_output=True)
        password_file.touch(mode=0o600)  # root's: the test user cannot read it
        password_file.write_text(password)
        return home, password


def _keygen(path: Path, kind: str, *, pem: bool = False, passphrase: str = "") -> Path:
    argv = ["ssh-keygen", "-q", "-t", kind, "-N", passphrase, "-C", "rtk-archive-test", "-f", str(path)]
    if kind == "rsa":
        argv[4:4] = ["-b", "2048"]  # the smallest size OpenSSH accepts: fast to generate
    if pem:
        argv[1:1] = ["-m", "PEM"]
    _run(argv, f"ssh-keygen could not create {path.name}")
    return path


def _public_line(private_path: Path) -> str:
    kind, blob, *_comment = Path(f"{private_path}.pub").read_text().split()
    return f"{kind} {blob}"


def _config(workdir: Path, port: int, host_key: Path, authorized: Path) -> str:
    lines = [
        f"Port {port}",
        "ListenAddress 127.0.0.1",
        f"HostKey {host_key}",
        f"PidFile {workdir / 'sshd.pid'}",
        f"AuthorizedKeysFile {authorized}",
        "StrictModes no",  # the key files live under /tmp, which strict modes refuse
        "PasswordAuthentication yes",
        "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes",
        "UsePAM yes",
        f"AllowUsers {TEST_USER}",
        # A normal shell user: the sftp subsystem, and exec sessions for the remote sha256sum.
        "Subsystem sftp internal-sftp",
        "UseDNS no",
        "PrintMotd no",
        "MaxStartups 100",  # the tests open several connections at once
        "LogLevel VERBOSE",
    ]
    if _openssh_version() >= (9, 8):
        # Newer sshd blocks a source address after failed logins; the tests fail logins on purpose.
        lines.append("PerSourcePenalties no")
    return "\n".join(lines) + "\n"


def _openssh_version() -> tuple[int, int]:
    result = subprocess.run([SSHD, "-V"], capture_output=True, text=True, check=False)
    match = re.search(r"OpenSSH_(\d+)\.(\d+)", result.stderr + result.stdout)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def _sends_banner(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        return sock.recv(4).startswith(b"SSH-")


def _run(argv: list[str], what: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SSHDUnavailable(f"{what}: {result.stderr.strip() or result.stdout.strip()}")
