"""The deploy recipes (issue 12), tested as far as this machine allows: the systemd units pass
`systemd-analyze verify` (and are parsed and checked for their hardening either way); the
Kubernetes manifests parse as YAML with the kinds and required fields Kubernetes defines, the
names that tie them together match, and the ConfigMap's configuration loads; the Dockerfile
builds from a slim Python as a non-root user with the console script as entry point and no
secret in a layer; .dockerignore keeps secrets, state and the virtualenv out of the context."""

from __future__ import annotations

import configparser
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.config import parse_config
from tests.helpers import REPO

SYSTEMD = REPO / "deploy" / "systemd"
KUBERNETES = REPO / "deploy" / "kubernetes"


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, comment_prefixes=("#", ";"))
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read(SYSTEMD / name)
    return parser


def test_the_systemd_service_is_a_hardened_oneshot():
    """A oneshot run as a dedicated user, the file system read-only except the state folder, the
    local targets and the textfile folder, no new privileges, secrets from a 0600 file; exit 5
    (a budget stop) is not a failure."""
    service = _unit("rtk-archive.service")["Service"]
    assert service["Type"] == "oneshot"
    assert service["User"] == "rtk-archive" and service["User"] != "root"
    assert service["ProtectSystem"] == "strict" and service["NoNewPrivileges"] == "yes"
    assert "/var/lib/rtk-archive" in service["ReadWritePaths"].split()
    assert service["EnvironmentFile"].startswith("/etc/rtk-archive/")
    assert service["SuccessExitStatus"] == "5"
    assert service["ExecStart"].split()[:2] == ["/usr/local/bin/rtk-archive", "run"]
    assert service["CapabilityBoundingSet"] == "" and service["UMask"] == "0077"
    sysusers = (SYSTEMD / "rtk-archive.sysusers").read_text()
    assert "\nu rtk-archive " in sysusers


def test_the_systemd_timer_is_nightly_persistent_and_spread():
    """OnCalendar nightly, Persistent (a night missed while off runs at boot), RandomizedDelaySec."""
    timer = _unit("rtk-archive.timer")
    assert timer["Timer"]["OnCalendar"] == "*-*-* 02:30:00"
    assert timer["Timer"]["Persistent"] == "true" and timer["Timer"]["RandomizedDelaySec"]
    assert timer["Timer"]["Unit"] == "rtk-archive.service"
    assert timer["Install"]["WantedBy"] == "timers.target"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verifies_the_units(tmp_path):
    """`systemd-analyze verify` finds nothing to say (an unknown key or a bad value is a warning
    on stderr, so stderr must be empty too). ExecStart points at this checkout's console script,
    since verify also checks that the program exists."""
    script = Path(sys.executable).with_name("rtk-archive")
    assert script.exists(), "the console script is installed with the project"
    for name in ("rtk-archive.service", "rtk-archive.timer"):
        text = (SYSTEMD / name).read_text().replace("/usr/local/bin/rtk-archive", str(script))
        (tmp_path / name).write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "rtk-archive.service"),
                             str(tmp_path / "rtk-archive.timer")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


def _manifests() -> dict[str, dict]:
    found = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            assert isinstance(document, dict), path
            for field in ("apiVersion", "kind", "metadata"):
                assert field in document, f"{path.name}: no {field}"
            assert document["metadata"].get("name"), f"{path.name}: metadata.name"
            found[document["kind"]] = document
    return found


def test_the_kubernetes_manifests_have_their_kinds_and_required_fields():
    """A CronJob (batch/v1: schedule, Forbid, startingDeadlineSeconds, a pod template with
    containers and restartPolicy Never/OnFailure), a PersistentVolumeClaim (accessModes, a
    storage request), a Secret and a ConfigMap; every name the CronJob refers to exists."""
    manifests = _manifests()
    assert set(manifests) == {"CronJob", "PersistentVolumeClaim", "Secret", "ConfigMap"}
    cron = manifests["CronJob"]
    assert cron["apiVersion"] == "batch/v1"
    spec = cron["spec"]
    assert len(spec["schedule"].split()) == 5
    assert spec["concurrencyPolicy"] == "Forbid"
    assert isinstance(spec["startingDeadlineSeconds"], int) and spec["startingDeadlineSeconds"] > 0
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] in ("Never", "OnFailure")
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["name"] and container["image"]
    assert container["args"][0] == "run" and container["securityContext"]["allowPrivilegeEscalation"] is False
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    for mount in container["volumeMounts"]:
        assert mount["name"] in volumes and mount["mountPath"].startswith("/")
    pvc = manifests["PersistentVolumeClaim"]
    assert pvc["apiVersion"] == "v1" and pvc["spec"]["accessModes"] and pvc["spec"]["resources"]["requests"]["storage"]
    assert volumes["state"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert volumes["config"]["configMap"]["name"] == manifests["ConfigMap"]["metadata"]["name"]
    secret = manifests["Secret"]
    assert secret["apiVersion"] == "v1" and secret["type"] == "Opaque"
    assert all(value == "" for value in secret["stringData"].values()), "the example holds no real secret"
    assert container["envFrom"][0]["secretRef"]["name"] == secret["metadata"]["name"]


def test_the_configmap_configuration_loads_with_the_secrets_and_env_of_the_pod():
    """The ConfigMap's config.toml parses with the project's own loader, with the variables the
    pod gets (Secret keys and env), and its paths are on the PersistentVolumeClaim's mount."""
    manifests = _manifests()
    cron_env = manifests["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["env"]
    environ = {name: "x-value" for name in manifests["Secret"]["stringData"]}
    environ.update({item["name"]: item["value"] for item in cron_env})
    import tomllib

    raw = tomllib.loads(manifests["ConfigMap"]["data"]["config.toml"])
    config = parse_config(raw, source=Path("/etc/rtk-archive/config.toml"), environ=environ)
    for path in (config.ledger.path, config.archive.spool_dir, config.audit.path):
        assert str(path).startswith("/var/lib/rtk-archive/")
    assert config.notify.ping_url is not None and config.logging.format == "json"


def _dockerfile() -> list[tuple[str, str]]:
    lines, current = [], ""
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.rstrip().endswith("\\"):
            instruction, _, rest = current.strip().partition(" ")
            lines.append((instruction.upper(), rest))
            current = ""
    return lines


def test_the_dockerfile_is_slim_non_root_and_secret_free():
    """FROM a slim Python; the last USER is not root; ENTRYPOINT is the console script; no
    ENV/ARG names a token, key, secret or password; nothing copies a config or state file."""
    instructions = _dockerfile()
    bases = [rest for instruction, rest in instructions if instruction == "FROM"]
    assert bases and all(base.split()[0].startswith("python:") and "-slim" in base for base in bases)
    users = [rest for instruction, rest in instructions if instruction == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    entry = [rest for instruction, rest in instructions if instruction == "ENTRYPOINT"]
    assert json.loads(entry[-1]) == ["rtk-archive"]
    for instruction, rest in instructions:
        if instruction in ("ENV", "ARG"):
            assert not any(word in rest.upper() for word in ("TOKEN", "SECRET", "PASSWORD", "KEY")), rest
        if instruction in ("COPY", "ADD"):
            assert not any(part.endswith((".db", ".jsonl", ".env")) for part in rest.split()), rest
    assert ("ENTRYPOINT", '["rtk-archive"]') in instructions
    scripts = __import__("tomllib").loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert "rtk-archive" in scripts


def test_dockerignore_keeps_secrets_state_and_the_virtualenv_out():
    """The build context never carries .git, .venv, ledgers, audit logs, env files or configs
    (only pyproject.toml and the package's demo.toml come back in)."""
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for needed in (".git", ".venv", "*.db", "*.jsonl", "*.env", "*.toml", "!pyproject.toml", "!pipeline/cli/demo.toml"):
        assert needed in patterns, needed


def test_the_scaled_out_kubernetes_set_runs_serve_workers_and_a_reconcile_on_postgresql():
    """deploy/kubernetes/scale/: a Deployment for `serve` (probes on /readyz and /healthz, a
    Service whose selector finds its pods), a Deployment of `worker`s and a nightly reconcile
    CronJob (Forbid); every pod runs a real rtk-archive command and mounts the ConfigMap, whose
    configuration loads with the project's loader and names a PostgreSQL ledger; every name a
    pod refers to exists (the Secret is the one of deploy/kubernetes/)."""
    from pipeline.cli.parser import COMMANDS

    documents = [doc for path in sorted((KUBERNETES / "scale").glob("*.yaml"))
                 for doc in yaml.safe_load_all(path.read_text())]
    by_kind: dict[str, list[dict]] = {}
    for doc in documents:
        for field in ("apiVersion", "kind", "metadata"):
            assert field in doc
        by_kind.setdefault(doc["kind"], []).append(doc)
    assert sorted(by_kind) == ["ConfigMap", "CronJob", "Deployment", "PersistentVolumeClaim", "Service"]
    (configmap,) = by_kind["ConfigMap"]
    (cron,) = by_kind["CronJob"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    pods = {d["metadata"]["name"]: d["spec"]["template"]["spec"] for d in by_kind["Deployment"]}
    pods["reconcile"] = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    commands = {}
    secret = _manifests()["Secret"]
    claims = {pvc["metadata"]["name"] for pvc in by_kind["PersistentVolumeClaim"]}
    for name, pod in pods.items():
        assert pod["securityContext"]["runAsNonRoot"] is True
        (container,) = pod["containers"]
        assert container["args"][0] in COMMANDS
        commands[name] = container["args"][0]
        assert container["envFrom"][0]["secretRef"]["name"] == secret["metadata"]["name"]
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        assert volumes["config"]["configMap"]["name"] == configmap["metadata"]["name"]
        claim = volumes["state"].get("persistentVolumeClaim")
        assert claim is None or claim["claimName"] in claims
    assert sorted(commands.values()) == ["run", "serve", "worker"]
    serve = next(d for d in by_kind["Deployment"] if commands[d["metadata"]["name"]] == "serve")
    container = serve["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    (service,) = by_kind["Service"]
    labels = serve["spec"]["template"]["metadata"]["labels"]
    assert all(labels.get(key) == value for key, value in service["spec"]["selector"].items())
    import tomllib

    environ = {name: "x-value" for name in secret["stringData"]}
    environ.update({item["name"]: item["value"] for item in container["env"]}, HOSTNAME="pod-1")
    raw = tomllib.loads(configmap["data"]["config.toml"])
    config = parse_config(raw, source=Path("/etc/rtk-archive/config.toml"), environ=environ)
    assert config.ledger.shared and "PGPASSWORD" in secret["stringData"]
    assert config.serve.port == container["ports"][0]["containerPort"]
