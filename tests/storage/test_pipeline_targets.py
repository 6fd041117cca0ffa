"""The whole pipeline against every real storage server: five targets in one run, secrets
kept out of every output, and `verify` catching tampering at each backend."""

from __future__ import annotations

import hashlib
import json
import uuid

import pytest

from pipeline.simulator import Simulator
from tests.helpers import expected_files, ledger_rows, run_cli, write_config

FIVE = ["aws", "digitalocean", "azure", "gcs", "sftp"]


@pytest.fixture
def five_rigs(request):
    return {type_name: request.getfixturevalue(f"rig_{type_name}") for type_name in FIVE}


def find(rig, prefix: str, suffix: str) -> str:
    matches = [k for k in rig.list_keys(prefix) if k.endswith(suffix)]
    assert len(matches) == 1, (suffix, rig.list_keys(prefix))
    return matches[0]


def test_run_with_five_targets_archives_every_file_to_each_verified(sim, tmp_path, five_rigs, prefix):
    for i in range(3):
        sim.add_recording(size=150_000 + i, audio=(i == 0))
    sim.add_recording(size=11_000_000)  # multipart / resumable / blocks with the rigs' small parts
    targets = [{**rig.target_settings(name, f"{prefix}/{name}"), **rig.small_parts()}
               for name, rig in five_rigs.items()]
    config = write_config(tmp_path, sim, targets=targets)
    result = run_cli("run", "--config", str(config), "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    expected = expected_files(sim)
    assert payload["archived"] == len(expected) == 5 and payload["failed"] == 0

    copies = ledger_rows(tmp_path / "ledger.db", "SELECT * FROM copies")
    media = [c for c in copies if c["kind"] != "manifest"]
    assert len(media) == len(expected) * 5 and {c["state"] for c in media} == {"archived"}
    for copy in media:  # the bytes at each server are the recording's, whatever the ledger says
        rig = five_rigs[copy["target"]]
        data = rig.raw_read(find(rig, f"{prefix}/{copy['target']}", copy["key"]))
        assert hashlib.sha256(data).hexdigest() == expected[(copy["recording_id"], copy["kind"])]
    manifests = [c for c in copies if c["kind"] == "manifest"]
    assert len(manifests) == 4 * 5
    for copy in manifests:
        rig = five_rigs[copy["target"]]
        doc = json.loads(rig.raw_read(find(rig, f"{prefix}/{copy['target']}", copy["key"])))
        for entry in doc["files"]:
            assert entry["sha256"] == expected[(doc["recording"]["id"], entry["kind"])]
            assert {c["target"] for c in entry["copies"]} == set(FIVE)

    verify = run_cli("verify", "--config", str(config), "--deep", "--json")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert json.loads(verify.stdout)["ok"] == len(copies)


def test_no_secret_reaches_any_output(tmp_path, five_rigs, prefix):
    token = "rtk-api-token-" + uuid.uuid4().hex
    s3_key, s3_secret = "AKIARTKLEAKCHECK0001", "rtk-s3-secret-" + uuid.uuid4().hex
    good = []
    for name, rig in five_rigs.items():
        settings = rig.target_settings(name, f"{prefix}/{name}")
        if name in ("aws", "digitalocean"):
            settings.update(access_key=s3_key, secret=s3_secret)  # moto takes any key pair
        good.append(settings)
    bad, bad_secrets = [], []
    for name in ("azure", "gcs", "sftp"):
        settings, secrets = five_rigs[name].bad_credentials(f"bad-{name}", f"{prefix}/bad-{name}")
        bad.append(settings)
        bad_secrets += secrets
    unreachable = {"name": "bad-s3", "type": "aws", "bucket": "b", "endpoint": "http://127.0.0.1:9",
                   "access_key": "AKIARTKUNREACHABLE01", "secret": "rtk-unreachable-" + uuid.uuid4().hex}
    with Simulator(recordings=0, seed=9, token=token) as sim:
        for i in range(3):
            sim.add_recording(size=120_000, audio=(i == 1))
        sim.faults.set(rate_limit=1, drop_downloads=1, drop_after_bytes=40_000, expired_list_urls=1)
        config = write_config(tmp_path, sim, targets=good + bad + [unreachable],
                              archive={"upload_attempts": 2, "retry_max_seconds": 20})
        outputs = []
        for args in (["run", "-v"], ["run", "--json"], ["status", "--json"], ["list", "--json"],
                     ["verify", "--deep", "--json"], ["audit", "verify"]):
            result = run_cli(*args, "--config", str(config))
            outputs += [result.stdout, result.stderr]
        report = run_cli("report", "--config", str(config), "--format", "json")
        outputs += [report.stdout, report.stderr]
        wrong = write_config(tmp_path, sim, name="wrong.toml", source={"api_token": token + "-x"})
        result = run_cli("run", "--config", str(wrong))
        outputs += [result.stdout, result.stderr]
    assert "bad-azure" in outputs[1] and "bad-gcs" in outputs[1] and "bad-sftp" in outputs[1]
    assert "X-Signature=" not in "".join(outputs)  # presigned URLs are logged without their query
    files = [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and not p.name.endswith(".toml")]
    stored = []
    for name, rig in five_rigs.items():
        stored += [rig.raw_read(k) for k in rig.list_keys(f"{prefix}/{name}") if "manifest" in k]
    assert stored, "manifests were written at the targets"
    azure_key = good[2]["access_key"].split("AccountKey=")[1].split(";")[0]
    sftp_key_lines = [line for line in good[4]["private_key"].splitlines() if len(line) > 20]
    secrets = [token, token + "-x", s3_key, s3_secret, good[2]["access_key"], azure_key, unreachable["secret"],
               unreachable["access_key"], *sftp_key_lines, *bad_secrets]
    haystacks = [text.encode() for text in outputs] + files + stored
    for secret in secrets:
        needle = secret.encode()
        leaks = [i for i, hay in enumerate(haystacks) if needle in hay]
        assert not leaks, f"secret {secret[:6]}... found in output(s) {leaks}"


def test_verify_catches_tampering_at_every_backend(rig, sim, tmp_path, prefix):
    sim.add_recording(size=100_000)
    config = write_config(tmp_path, sim, targets=[rig.target_settings("t", prefix)])
    assert run_cli("run", "--config", str(config)).returncode == 0
    video = next(k for k in rig.list_keys(prefix) if "video-" in k)
    data = bytearray(rig.raw_read(video))
    data[500] ^= 0xFF  # same size, different bytes
    rig.raw_write(video, bytes(data))
    deep = run_cli("verify", "--config", str(config), "--deep", "--json")
    problems = json.loads(deep.stdout)["problems"]
    assert deep.returncode == 1 and [p["state"] for p in problems] == ["mismatch"]
    rig.raw_delete(video)
    shallow = run_cli("verify", "--config", str(config), "--json")
    assert shallow.returncode == 1
    assert [p["state"] for p in json.loads(shallow.stdout)["problems"]] == ["missing"]
