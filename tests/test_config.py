"""Configuration: `${VAR}` expansion, defaults, and one clear line per problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import DEFAULT_BASE_URL, load_config, parse_config
from pipeline.demo import DEMO_CONFIG
from pipeline.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def base(**over) -> dict:
    data = {"source": {"account_id": "acc", "app_id": "app"},
            "targets": [{"name": "nas", "type": "local", "path": "/srv/rec"}]}
    data.update(over)
    return data


def error_of(data: dict, environ: dict | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data, source=Path("/etc/rtk.toml"), environ=environ or {})
    return str(info.value)


def test_defaults_and_environment():
    config = parse_config(base(), source=Path("/etc/rtk/config.toml"),
                          environ={"CLOUDFLARE_API_TOKEN": "tok-123", "CLOUDFLARE_BASE_URL": "http://x/v4/"})
    assert config.api_token == "tok-123" and config.base_url == "http://x/v4"
    assert config.ledger.path == Path("/etc/rtk/rtk-archive.db")  # relative to the config file
    assert config.archive.concurrency == 4
    assert parse_config(base(), environ={}).base_url == DEFAULT_BASE_URL


def test_variables_are_expanded_everywhere():
    data = base(targets=[{"name": "s3", "type": "aws", "bucket": "${BUCKET}", "access_key": "${AK}",
                          "secret": "${SK}", "path": "rec/${ENV}"}])
    config = parse_config(data, environ={"BUCKET": "b", "AK": "ak", "SK": "sk-secret", "ENV": "prod"})
    target = config.targets[0]
    assert target.bucket == "b" and target.path == "rec/prod"
    assert "sk-secret" in config.secret_values() and "sk-secret" not in repr(target)


def test_missing_variable_names_it_and_the_key():
    message = error_of(base(source={"account_id": "a", "app_id": "${APP_ID}"}))
    assert message == "/etc/rtk.toml: source.app_id: environment variable APP_ID is not set"


@pytest.mark.parametrize("data, expected", [
    (base(source={"app_id": "x"}), "source.account_id: required key is missing"),
    (base(source={"account_id": "a", "app_id": "b", "colour": 1}), "source.colour: unknown key"),
    (base(targets=[{"name": "n", "type": "dropbox", "path": "x"}]), "unknown target type 'dropbox'"),
    (base(targets=[{"name": "n", "path": "x"}]), "targets[0] (n).type: missing"),
    (base(archive={"concurrency": "many"}), "archive.concurrency: Input should be a valid integer"),
    (base(targets=[]), "no [[targets]] configured"),
    (base(extra={"a": 1}), "unknown section [extra]"),
    (base(targets=[{"name": "n", "type": "local", "path": "/a"}, {"name": "n", "type": "local", "path": "/b"}]),
     "the name 'n' is used twice"),
    (base(archive={"key_template": "{file_name}"}), "must contain {recording_id} and {kind}"),
    (base(archive={"key_template": "{recording_id}/{kind}/{nope}"}), "unknown field(s) ['nope']"),
    (base(audit={"ship_to": ["elsewhere"]}), "audit.ship_to: no target named 'elsewhere'"),
    (base(targets=[{"name": "n", "type": "local", "path": "/a", "retention_mode": "COMPLIANCE"}]),
     "retention_mode COMPLIANCE is not available on local: use READ_ONLY"),
    (base(targets=[{"name": "n", "type": "local", "path": "/a", "legal_hold": True}]),
     "local cannot enforce legal_hold"),
])
def test_each_problem_is_one_clear_line(data, expected):
    message = error_of(data)
    assert expected in message
    assert message.startswith("/etc/rtk.toml: ")
    assert "Traceback" not in message and "pydantic" not in message.lower()


def test_secret_values_are_never_echoed_in_errors():
    data = base(targets=[{"name": "s3", "type": "aws", "bucket": "b", "access_key": "AKIAVERYSECRET",
                          "secret": 12345}])
    message = error_of(data)
    assert "AKIAVERYSECRET" not in message and "12345" not in message


def test_broken_toml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[source\naccount_id = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(tmp_path / "absent.toml")


def test_example_configuration_documents_every_target_type_and_parses():
    text = (REPO / "config" / "example.toml").read_text()
    for type_name in ("local", "aws", "digitalocean", "azure", "gcs", "sftp"):
        assert f'type = "{type_name}"' in text
    environ = {name: "x" for name in ("CLOUDFLARE_ACCOUNT_ID", "CLOUDFLARE_APP_ID", "CLOUDFLARE_API_TOKEN")}
    config = load_config(REPO / "config" / "example.toml", environ=environ)
    assert config.targets


def test_demo_toml_is_the_embedded_demo_configuration():
    assert (REPO / "config" / "demo.toml").read_text() == DEMO_CONFIG
