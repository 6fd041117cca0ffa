"""SFTP behaviour beyond the conformance suite, against the real sshd of `rig_sftp`:
host-key verification, the ways to log in, connection reuse, create-only renames, clean-up."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import stat
import subprocess
import threading

import paramiko
import pytest
from pydantic import ValidationError

import storage.sftp.remote as sftp_remote
import storage.sftp.target as sftp_target
from storage import (
    NotFound,
    ObjectConflict,
    PermanentStorageError,
    RetryableStorageError,
    build_target,
    settings_model,
)
from storage.target import PARTIAL_MARKER, PROBE_PREFIX
from tests.servers.process import free_port
from tests.storage.files import source as local_file

KEY = "rec-1/video.mp4"


def target_for(rig, prefix: str, **overrides):
    raw = {**rig.target_settings("sftp-test", prefix), **overrides}
    raw = {name: value for name, value in raw.items() if value is not None}
    return build_target(settings_model("sftp").model_validate(raw))


def settings(rig, prefix: str = "x", **overrides):
    raw = {**rig.target_settings("sftp-test", prefix), **overrides}
    return settings_model("sftp").model_validate({k: v for k, v in raw.items() if v is not None})


def fingerprint(key_line: str) -> str:
    kind, blob = key_line.split()
    return paramiko.PKey.from_type_string(kind, base64.b64decode(blob)).fingerprint


def count_transports(monkeypatch) -> list[int]:
    opened = [0]
    original = paramiko.transport.Transport.start_client

    def counting(self, *args, **kwargs):
        opened[0] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(paramiko.transport.Transport, "start_client", counting)
    return opened


# --------------------------------------------------------------------------- host keys


def test_unknown_host_key_is_refused_with_pinning_advice(rig_sftp, prefix, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    server = rig_sftp.server
    with target_for(rig_sftp, prefix, known_hosts=str(empty)) as target:
        with pytest.raises(PermanentStorageError) as info:
            target.put(local_file(tmp_path, b"secret recording"), KEY)
    message = str(info.value)
    assert f'host_key = "{server.host_key_line}"' in message
    assert fingerprint(server.host_key_line) in message and "ssh-ed25519" in message
    assert f"ssh-keyscan -p {server.port} 127.0.0.1 >> {empty}" in message
    assert not info.value.retryable
    assert rig_sftp.list_keys(prefix) == []
    assert not (server.home / rig_sftp.base / prefix).exists()


def test_mismatched_pinned_key_is_refused(rig_sftp, prefix, tmp_path):
    server = rig_sftp.server
    with target_for(rig_sftp, prefix, known_hosts=None, host_key=server.other_host_key_line) as target:
        with pytest.raises(PermanentStorageError) as info:
            target.put(local_file(tmp_path, b"data"), KEY)
    message = str(info.value)
    assert "CHANGED" in message
    assert fingerprint(server.other_host_key_line) in message  # what we expected
    assert fingerprint(server.host_key_line) in message  # what the server offers
    assert f'host_key = "{server.host_key_line}"' in message
    assert rig_sftp.list_keys(prefix) == []


def test_pinned_key_with_a_known_hosts_host_field_is_accepted(rig_sftp, prefix, tmp_path):
    server = rig_sftp.server
    line = f"[127.0.0.1]:{server.port} {server.host_key_line} a comment"
    with target_for(rig_sftp, prefix, known_hosts=None, host_key=line) as target:
        assert target.put(local_file(tmp_path, b"pinned"), KEY).size == 6


def test_hashed_known_hosts_file_is_accepted(rig_sftp, prefix, tmp_path):
    hashed = tmp_path / "known_hosts"
    hashed.write_text(rig_sftp.server.known_hosts.read_text())
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(hashed)], check=True, capture_output=True)
    assert "127.0.0.1" not in hashed.read_text()
    with target_for(rig_sftp, prefix, known_hosts=str(hashed)) as target:
        assert target.put(local_file(tmp_path, b"hashed"), KEY).size == 6


# --------------------------------------------------------------------------- logging in


def test_password_login(rig_sftp, prefix, tmp_path):
    with target_for(rig_sftp, prefix, auth_method="PASSWORD", password=rig_sftp.server.password,
                    private_key=None) as target:
        assert target.put(local_file(tmp_path, b"by password"), KEY).size == 11


@pytest.mark.parametrize("which", ["ed25519_key", "rsa_pem_key"])
def test_key_login(rig_sftp, prefix, tmp_path, which):
    key = getattr(rig_sftp.server, which)
    if which == "rsa_pem_key":
        assert "BEGIN RSA PRIVATE KEY" in key.text
    else:
        assert "BEGIN OPENSSH PRIVATE KEY" in key.text
    with target_for(rig_sftp, prefix, private_key=key.text) as target:
        assert target.put(local_file(tmp_path, which.encode()), KEY).size == len(which)


def test_passphrase_protected_key_uses_password_as_passphrase(rig_sftp, prefix, tmp_path):
    key = rig_sftp.server.encrypted_key
    with target_for(rig_sftp, prefix, private_key=None, private_key_file=str(key.path),
                    password=key.passphrase) as target:
        assert target.put(local_file(tmp_path, b"protected"), KEY).size == 9


def test_wrong_passphrase_is_a_clear_permanent_error(rig_sftp, prefix, tmp_path):
    key = rig_sftp.server.encrypted_key
    wrong = "not-" + key.passphrase
    with target_for(rig_sftp, prefix, private_key=key.text, password=wrong) as target:
        with pytest.raises(PermanentStorageError) as info:
            target.put(local_file(tmp_path, b"x"), KEY)
    message = str(info.value)
    assert "private_key" in message and "password" in message and "sftp-test" in message
    for secret in (wrong, key.passphrase, key.text.splitlines()[1]):
        assert secret not in message and secret not in repr(info.value)
    assert info.value.__cause__ is None or wrong not in str(info.value.__cause__)


def test_encrypted_key_without_passphrase_says_so(rig_sftp, prefix, tmp_path):
    with target_for(rig_sftp, prefix, private_key=rig_sftp.server.encrypted_key.text) as target:
        with pytest.raises(PermanentStorageError, match="passphrase.*password"):
            target.put(local_file(tmp_path, b"x"), KEY)


def test_unreachable_server_is_retryable(rig_sftp, prefix, tmp_path):
    with target_for(rig_sftp, prefix, port=free_port(), timeout=3) as target:
        with pytest.raises(RetryableStorageError):
            target.stat(KEY)


# --------------------------------------------------------------------------- settings


def test_key_auth_without_private_key_is_a_validation_error(rig_sftp):
    with pytest.raises(ValidationError, match="private_key"):
        settings(rig_sftp, private_key=None)


def test_host_key_verification_is_required(rig_sftp):
    with pytest.raises(ValidationError, match="known_hosts.*host_key"):
        settings(rig_sftp, known_hosts=None)
    with pytest.raises(ValidationError, match="exactly one"):
        settings(rig_sftp, host_key=rig_sftp.server.host_key_line)


def test_validation_errors_never_echo_secrets(rig_sftp):
    with pytest.raises(ValidationError) as info:
        settings(rig_sftp, known_hosts=None, password="hunter2-secret")
    assert "hunter2-secret" not in str(info.value)
    assert "PRIVATE KEY" not in str(info.value)


def test_settings_refusals(rig_sftp, tmp_path):
    with pytest.raises(ValidationError, match="private_key_file"):
        settings(rig_sftp, private_key=None, private_key_file=str(tmp_path / "missing"))
    with pytest.raises(ValidationError, match="READ_ONLY"):
        settings(rig_sftp, retention_mode="COMPLIANCE")
    with pytest.raises(ValidationError, match="host_key"):
        settings(rig_sftp, known_hosts=None, host_key="ssh-ed25519 bm90IGEga2V5")
    with pytest.raises(ValidationError, match="PASSWORD needs password"):
        settings(rig_sftp, auth_method="PASSWORD", private_key=None)
    assert settings(rig_sftp, path="/srv/recordings/").path == "/srv/recordings"
    assert settings(rig_sftp, path="~/recordings").path == "recordings"
    assert settings(rig_sftp, port=None).port == 22
    assert set(settings(rig_sftp, password="pw").secret_values()) == {
        "pw", rig_sftp.server.ed25519_key.text}


# --------------------------------------------------------------------------- behaviour


def test_missing_nested_path_is_created(rig_sftp, prefix, tmp_path):
    with target_for(rig_sftp, f"{prefix}/a/b/c") as target:
        stored = target.put(local_file(tmp_path, b"nested"), KEY)
    assert (rig_sftp.server.home / rig_sftp.base / prefix / "a/b/c" / KEY).read_bytes() == b"nested"
    assert stored.key == f"{rig_sftp.base}/{prefix}/a/b/c/{KEY}"


def test_absolute_path_stays_absolute(rig_sftp, prefix, tmp_path):
    folder = f"{rig_sftp.server.home}/{rig_sftp.base}/{prefix}/absolute"
    with target_for(rig_sftp, prefix, path=folder) as target:
        stored = target.put(local_file(tmp_path, b"abs"), KEY)
    assert stored.key == f"{folder}/{KEY}"
    server = rig_sftp.server
    assert stored.uri == f"sftp://{server.user}@127.0.0.1:{server.port}{folder}/rec-1/video.mp4"
    assert rig_sftp.raw_read(stored.key) == b"abs"


def test_one_connection_serves_many_files(rig_sftp, prefix, tmp_path, monkeypatch):
    opened = count_transports(monkeypatch)
    with target_for(rig_sftp, prefix) as target:
        for number in range(4):
            target.put(local_file(tmp_path, os.urandom(1000)), f"rec-{number}/video.mp4")
            target.stat(f"rec-{number}/video.mp4")
    assert opened[0] == 1


def drop_idle_connections(target, how: str) -> None:
    for session in target._pool._idle:  # as if the server had restarted meanwhile
        transport = session.client.get_transport()
        if how == "transport noticed":
            transport.close()  # found dead when leased
        else:
            transport.sock.close()  # found dead by the next request: retried once


@pytest.mark.parametrize("how", ["socket dies unnoticed", "transport noticed"])
def test_dropped_connection_is_reopened(rig_sftp, prefix, tmp_path, monkeypatch, how):
    opened = count_transports(monkeypatch)
    with target_for(rig_sftp, prefix) as target:
        target.put(local_file(tmp_path, b"one"), "one.mp4")
        drop_idle_connections(target, how)
        assert target.stat("one.mp4").size == 3
        target.put(local_file(tmp_path, b"two!", "two"), "two.mp4")
        drop_idle_connections(target, how)
        with target.open_read("two.mp4") as stream:
            assert stream.read() == b"two!"
    assert opened[0] == 3


def test_concurrent_puts_share_a_few_connections(rig_sftp, prefix, tmp_path, monkeypatch):
    opened = count_transports(monkeypatch)
    files = [local_file(tmp_path, os.urandom(200_000), f"s{n}") for n in range(8)]
    errors: list[BaseException] = []
    with target_for(rig_sftp, prefix) as target:
        def put(number: int) -> None:
            try:
                target.put(files[number], f"rec-{number}/video.mp4")
            except Exception as exc:  # noqa: BLE001 - collected, asserted below
                errors.append(exc)

        threads = [threading.Thread(target=put, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert errors == []
    assert 1 <= opened[0] <= sftp_target.MAX_CONNECTIONS
    assert len(rig_sftp.list_keys(prefix)) == 8


def test_read_only_retention_sets_0444(rig_sftp, prefix, tmp_path):
    with target_for(rig_sftp, prefix, retention_mode="READ_ONLY") as target:
        stored = target.put(local_file(tmp_path, b"keep me"), KEY)
    mode = rig_sftp.local_path(stored.key).stat().st_mode
    assert stat.S_IMODE(mode) == 0o444
    assert stored.retention is not None and stored.retention.mode == "READ_ONLY"


def test_sweep_partials_removes_stale_temporaries(rig_sftp, prefix):
    """Temporaries anywhere below the target's folder, and the probe object a run killed
    during its start-up probe left (with the probe's folder); nothing else."""
    base = f"{rig_sftp.base}/{prefix}"
    stale = [f"{base}/.video.mp4{PARTIAL_MARKER}0123", f"{base}/rec-2/deep/.audio.m4a{PARTIAL_MARKER}abcd",
             f"{base}/{PROBE_PREFIX}/0123456789abcdef"]
    kept = [f"{base}/rec-1/video.mp4", f"{base}/not-hidden{PARTIAL_MARKER}1", f"{base}/.hidden",
            f"{base}/rec-1/{PROBE_PREFIX}/not-the-probes-folder"]
    for key in stale + kept:
        rig_sftp.plant(key, b"leftover")
    with target_for(rig_sftp, prefix) as target:
        assert target.sweep_partials() == 3
        assert target.sweep_partials() == 0
    assert rig_sftp.list_keys(prefix) == sorted(kept)
    assert not rig_sftp.local_path(f"{base}/{PROBE_PREFIX}").exists()


def test_sweep_of_a_folder_never_used_is_empty(rig_sftp, prefix):
    with target_for(rig_sftp, f"{prefix}/never") as target:
        assert target.sweep_partials() == 0


def test_remote_sha256_is_the_servers_own_hash(rig_sftp, prefix, tmp_path):
    data = os.urandom(100_000)
    with target_for(rig_sftp, prefix) as target:
        stored = target.put(local_file(tmp_path, data), KEY)
        assert stored.sha256 == stored.native["sha256"] == hashlib.sha256(data).hexdigest()
        rig_sftp.raw_write(stored.key, b"tampered")  # the server's hash follows the bytes
        assert target.stat(KEY).sha256 == hashlib.sha256(b"tampered").hexdigest()


def test_without_remote_checksum_sha256_is_unknown(rig_sftp, prefix, tmp_path):
    with target_for(rig_sftp, prefix, remote_checksum=False) as target:
        stored = target.put(local_file(tmp_path, b"size only"), KEY)
    assert (stored.size, stored.sha256, dict(stored.native)) == (9, None, {})


def test_server_without_sha256sum_degrades_to_size_only(rig_sftp, prefix, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(sftp_remote, "run_command", lambda channel, command, timeout: (127, b""))
    with caplog.at_level(logging.WARNING, logger="storage.sftp"):
        with target_for(rig_sftp, prefix) as target:
            target.put(local_file(tmp_path, b"a"), "a.mp4")
            assert target.stat("a.mp4").sha256 is None
    assert sum("sha256sum unavailable" in r.getMessage() for r in caplog.records) == 1


def test_existing_different_file_is_refused(rig_sftp, prefix, tmp_path):
    path = rig_sftp.plant(f"{rig_sftp.base}/{prefix}/{KEY}", b"already here")
    with target_for(rig_sftp, prefix) as target, pytest.raises(ObjectConflict):
        target.put(local_file(tmp_path, b"something else"), KEY)
    assert path.read_bytes() == b"already here"
    assert rig_sftp.list_keys(prefix) == [f"{rig_sftp.base}/{prefix}/{KEY}"]


def writer_racing_us(monkeypatch, rig, final: str, data: bytes) -> None:
    """Another writer lands `data` at `final` just after our last look before the rename."""
    real_exists = sftp_remote.exists
    looks = []

    def late_writer(sftp, path):
        looks.append(path)
        if len(looks) == 1:
            rig.plant(final, data)
            return False
        return real_exists(sftp, path)

    monkeypatch.setattr(sftp_remote, "exists", late_writer)


def test_rename_never_overwrites_a_file_that_appeared_meanwhile(rig_sftp, prefix, tmp_path, monkeypatch):
    """The race is lost after our last look: SFTP RENAME itself must refuse."""
    final = f"{rig_sftp.base}/{prefix}/{KEY}"
    writer_racing_us(monkeypatch, rig_sftp, final, b"the other writer")
    with target_for(rig_sftp, prefix) as target:
        with pytest.raises(ObjectConflict, match="appeared while uploading"):
            target.put(local_file(tmp_path, b"ours"), KEY)
    assert rig_sftp.raw_read(final) == b"the other writer"
    assert rig_sftp.list_keys(prefix) == [final]  # our temporary was removed


def test_identical_file_appearing_meanwhile_is_accepted(rig_sftp, prefix, tmp_path, monkeypatch):
    """E.g. our own rename whose reply a dropped connection lost: same bytes, no conflict."""
    final = f"{rig_sftp.base}/{prefix}/{KEY}"
    writer_racing_us(monkeypatch, rig_sftp, final, b"same bytes")
    with target_for(rig_sftp, prefix) as target:
        stored = target.put(local_file(tmp_path, b"same bytes"), KEY)
    assert stored.sha256 == hashlib.sha256(b"same bytes").hexdigest()
    assert rig_sftp.list_keys(prefix) == [final]


def test_open_read_of_a_missing_key_is_not_found(rig_sftp, prefix):
    with target_for(rig_sftp, prefix) as target, pytest.raises(NotFound):
        with target.open_read("nothing/here.mp4"):
            pass


def test_permission_denied_is_permanent_and_names_the_path(rig_sftp, prefix, tmp_path):
    locked = rig_sftp.server.home / rig_sftp.base / prefix / "locked"
    locked.mkdir(parents=True)  # owned by root: the test user cannot write in it
    with target_for(rig_sftp, f"{prefix}/locked") as target:
        with pytest.raises(PermanentStorageError, match="permission denied at .*locked"):
            target.put(local_file(tmp_path, b"x"), KEY)


def test_one_unreadable_file_does_not_turn_checksums_off(rig_sftp, prefix, tmp_path):
    path = rig_sftp.plant(f"{rig_sftp.base}/{prefix}/unreadable.mp4", b"locked away")
    os.chmod(path, 0)
    with target_for(rig_sftp, prefix) as target:
        assert target.stat("unreadable.mp4").sha256 is None
        assert target.put(local_file(tmp_path, b"fine"), KEY).sha256 == hashlib.sha256(b"fine").hexdigest()


def test_a_sweep_with_an_age_leaves_temporaries_still_being_written(rig_sftp, prefix):
    """The SFTP sweep with `older_than` (a shared ledger: other workers upload now) removes only
    temporaries whose modification time is older than that."""
    base = f"{rig_sftp.base}/{prefix}"
    old = rig_sftp.plant(f"{base}/.video.mp4{PARTIAL_MARKER}0123", b"leftover")
    rig_sftp.plant(f"{base}/.audio.m4a{PARTIAL_MARKER}4567", b"being written")
    rig_sftp.plant(f"{base}/{PROBE_PREFIX}/0123456789abcdef", b"another worker's probe, in progress")
    an_hour_ago = old.stat().st_mtime - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))
    with target_for(rig_sftp, prefix) as target:
        assert target.sweep_partials(older_than=900) == 1
        assert target.sweep_partials(older_than=900) == 0
        assert target.sweep_partials() == 2
