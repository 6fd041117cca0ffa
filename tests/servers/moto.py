"""A real moto server (S3 + IAM) on 127.0.0.1, shared by every S3/Spaces test of a session.

moto accepts any credentials until IAM authentication is switched on. At start-up we create one
IAM user with full rights and its access key (the "valid" credentials), then leave enforcement
off: moto 5.2 computes SigV4 canonical paths wrongly for keys with non-ASCII characters or
parentheses, so enforcing it would break the Unicode-key tests. Tests that need the server to
refuse bad credentials switch enforcement on for their duration (`auth_enforced()`).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.servers.process import ServerProcess, free_port, http_answers

# Any pair will do before IAM enforcement is on; these only create the real user.
_BOOTSTRAP_CREDENTIALS = {"aws_access_key_id": "bootstrap", "aws_secret_access_key": "bootstrap"}
_ALLOW_ALL = {"Version": "2012-10-17",
              "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
_STASH_KEY = pytest.StashKey["MotoServer"]()


@dataclass
class MotoServer:
    process: ServerProcess
    endpoint: str
    access_key: str = ""
    secret: str = ""
    _buckets: set[str] = field(default_factory=set)

    def client(self, service: str = "s3", region: str = "us-east-1", **credentials):
        import boto3

        credentials = credentials or {"aws_access_key_id": self.access_key,
                                      "aws_secret_access_key": self.secret}
        return boto3.session.Session().client(
            service, endpoint_url=self.endpoint, region_name=region, **credentials)

    def ensure_bucket(self, bucket: str, region: str = "us-east-1", *, object_lock: bool = False) -> None:
        """Create a bucket once per server (tests share buckets and separate by prefix)."""
        if bucket in self._buckets:
            return
        kwargs: dict = {"Bucket": bucket}
        if region != "us-east-1":  # any other region, nyc3 included, must be named
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        if object_lock:
            kwargs["ObjectLockEnabledForBucket"] = True
        self.client(region=region).create_bucket(**kwargs)
        self._buckets.add(bucket)

    def set_auth(self, enforced: bool) -> None:
        """Switch moto's IAM authentication on (bad keys refused) or off (anything accepted)."""
        # The body is the number of requests still let through unauthenticated.
        response = httpx.post(f"{self.endpoint}/moto-api/reset-auth",
                              content=b"0" if enforced else b"inf", timeout=10)
        response.raise_for_status()

    @contextlib.contextmanager
    def auth_enforced(self) -> Iterator[None]:
        self.set_auth(True)
        try:
            yield
        finally:
            self.set_auth(False)

    def stop(self) -> None:
        self.process.stop()


def start_moto(log_dir: Path) -> MotoServer:
    """Start moto_server on a free loopback port, wait for it, create the IAM user."""
    # The one installed beside this interpreter first: another moto on PATH may lack the crc32c
    # package, and then reports CRC32 where CRC32C is asked for.
    beside = Path(sys.executable).parent / "moto_server"
    executable = str(beside) if beside.exists() else shutil.which("moto_server")
    if executable is None:
        raise RuntimeError("moto_server is not installed: pip install 'moto[server]'")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    process = ServerProcess(
        "moto", [executable, "-H", "127.0.0.1", "-p", str(port)], log_dir=log_dir,
        # No enforcement at start (the user must be created first), whatever the caller's env.
        env={"INITIAL_NO_AUTH_ACTION_COUNT": "inf"},
    )
    process.wait_ready(lambda: http_answers(f"{endpoint}/moto-api/"))
    server = MotoServer(process=process, endpoint=endpoint)
    try:
        _create_user(server)
    except Exception:
        server.stop()
        raise
    return server


def _create_user(server: MotoServer) -> None:
    iam = server.client("iam", **_BOOTSTRAP_CREDENTIALS)
    iam.create_user(UserName="rtk-archive")
    iam.put_user_policy(UserName="rtk-archive", PolicyName="all",
                        PolicyDocument=json.dumps(_ALLOW_ALL))
    key = iam.create_access_key(UserName="rtk-archive")["AccessKey"]
    server.access_key, server.secret = key["AccessKeyId"], key["SecretAccessKey"]


def shared_moto(config: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> MotoServer:
    """The session's one moto server, started on first use and stopped when pytest ends.

    A helper rather than only a fixture: the conformance conftest imports just the
    `rig_<type>` fixtures, so the rigs cannot name a session fixture of their own."""
    server = config.stash.get(_STASH_KEY, None)
    if server is None:
        server = _start_or_fail(tmp_path_factory.mktemp("moto"))
        config.stash[_STASH_KEY] = server
        config.add_cleanup(server.stop)
    return server


def _start_or_fail(log_dir: Path) -> MotoServer:
    """A missing or broken moto is a broken test set-up: fail loudly, never skip."""
    try:
        return start_moto(log_dir)
    except RuntimeError as exc:
        problem = str(exc)
    pytest.fail(f"cannot start moto for the S3 tests: {problem}", pytrace=False)


@pytest.fixture(scope="session")
def moto_server(request, tmp_path_factory) -> MotoServer:
    return shared_moto(request.config, tmp_path_factory)
