"""`check` and `run`'s preflight against every real storage server: a healthy target of each
type passes every check; targets with refused credentials, a missing bucket or a retention the
bucket cannot honour are found before anything is downloaded for them, reported once each, left
out of the run while the healthy ones get every file, and no secret appears anywhere."""

from __future__ import annotations

import hashlib
import json

import pytest

from pipeline.simulator import Simulator
from tests.helpers import expected_files, ledger_rows, run_cli, write_config

CLOUDS = ["aws", "digitalocean", "azure", "gcs", "sftp"]


@pytest.fixture
def rigs(request):
    return {type_name: request.getfixturevalue(f"rig_{type_name}") for type_name in CLOUDS}


def test_check_passes_on_a_healthy_target_of_every_type(sim, tmp_path, rigs, prefix):
    """`check` against every real server: access, retention and write all ok, and no probe
    object left at any of them."""
    targets = [rig.target_settings(name, f"{prefix}/{name}") for name, rig in rigs.items()]
    targets.append({"name": "local", "type": "local", "path": str(tmp_path / "nas")})
    config = write_config(tmp_path, sim, targets=targets)
    result = run_cli("check", "--config", str(config), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    for name in [*CLOUDS, "local"]:
        for step in ("access", "retention", "write"):
            assert checks[f"target '{name}' {step}"]["status"] == "ok", checks[f"target '{name}' {step}"]
    assert checks["target 'aws' retention"]["detail"] == "Object Lock: not enabled"
    for name, rig in rigs.items():
        assert rig.list_keys(f"{prefix}/{name}") == [], name  # every probe object removed


def test_broken_targets_are_left_out_once_each_and_reveal_no_secret(tmp_path, rigs, prefix):
    """Refused credentials (azure, gcs, sftp), a missing bucket (aws) and a retention_mode on a
    bucket without Object Lock (digitalocean) next to one healthy S3 target: `check` fails each
    broken target once; `run` downloads each file once, archives it at the healthy target,
    reports one line per broken target, records nothing for them, exits 1; the next run tries
    them again. No secret in any output."""
    good = rigs["aws"].target_settings("good", f"{prefix}/good")
    missing = {**rigs["aws"].target_settings("nobucket", f"{prefix}/nobucket"), "bucket": "rtk-no-such-bucket"}
    unlocked = {**rigs["digitalocean"].target_settings("nolock", f"{prefix}/nolock"),
                "retention_mode": "GOVERNANCE", "retention_days": 7}
    broken = {"nobucket": missing, "nolock": unlocked}
    secrets = [good["secret"]]
    for type_name in ("azure", "gcs", "sftp"):
        settings, values = rigs[type_name].bad_credentials(f"bad-{type_name}", f"{prefix}/bad-{type_name}")
        broken[f"bad-{type_name}"] = settings
        secrets += values
    with Simulator(recordings=0, seed=11) as sim:
        for i in range(2):
            sim.add_recording(size=90_000 + i)
        config = write_config(tmp_path, sim, targets=[good, *broken.values()])
        secrets.append(sim.token)

        check = run_cli("check", "--config", str(config))
        failing = [line for line in check.stdout.splitlines() if line.startswith("FAIL")]
        assert check.returncode == 1
        assert sorted(line.split("'")[1] for line in failing) == sorted(broken), failing
        assert "FAIL  target 'nolock' retention: Object Lock: not enabled; retention_mode needs Object Lock" \
            in check.stdout
        assert "'rtk-no-such-bucket' does not exist" in check.stdout

        run = run_cli("run", "--config", str(config), "--json", "-v")
        payload = json.loads(run.stdout)
        assert run.returncode == 1, run.stderr
        assert sorted(p.split("'")[1] for p in payload["problems"]) == sorted(broken)
        assert all(p.startswith(f"target '{p.split(chr(39))[1]}' skipped for this run: ") for p in payload["problems"])
        assert len([r for r in sim.requests if r.path.startswith("/files/")]) == 2  # each file once
        expected = expected_files(sim)
        copies = ledger_rows(tmp_path / "ledger.db", "SELECT * FROM copies WHERE kind != 'manifest'")
        assert {c["target"] for c in copies} == {"good"} and {c["state"] for c in copies} == {"archived"}
        for copy in copies:
            data = rigs["aws"].raw_read(f"{prefix}/good/{copy['key']}")
            assert hashlib.sha256(data).hexdigest() == expected[(copy["recording_id"], copy["kind"])]
        for name, settings in broken.items():
            if name != "nobucket":  # that bucket does not exist to be listed
                assert rigs[settings["type"]].list_keys(f"{prefix}/{name}") == [], name

        again = run_cli("run", "--config", str(config), "--json")
        assert again.returncode == 1
        assert len(json.loads(again.stdout)["problems"]) == len(broken)  # tried again, reported again
        outputs = [check.stdout, check.stderr, run.stdout, run.stderr, again.stdout, again.stderr]
    for secret in secrets:
        assert not [i for i, text in enumerate(outputs) if secret in text], secret[:12]
