"""What an S3-compatible target is configured with: the fields every provider shares (RealtimeKit's
storage_config names first), and one settings model per provider, built from its entry."""

from __future__ import annotations

import re
from typing import ClassVar

from pydantic import Field, SecretStr, create_model, field_validator, model_validator

from storage.s3.providers import AWS, PROVIDERS, S3Provider
from storage.settings import EndpointURL, TargetSettings

MiB = 1 << 20
# S3 refuses parts under 5 MiB (except the last); s3transfer caps a file at 10,000 parts and
# grows the part size itself when a file would need more.
MIN_PART_SIZE = 5 * MiB
MAX_PART_SIZE = 5 * 1024 * MiB
# Below this a file goes in one PutObject: AWS's guidance is to consider multipart "when your
# object size reaches 100 MB" (S3 user guide, "Amazon S3 multipart upload limits"). One request
# instead of one per part plus two, and the copy carries the evidence a multipart object cannot:
# S3's own SHA-256 of the whole file and the `rtk-sha256` metadata. The price: a file below it is
# not uploaded while it downloads (overlap needs parts). Measured into moto (bench_s3_vs_rclone.py):
# a byte sent in parts costs it 10-12 ms of CPU per MiB, in one PUT 6-9 ms (moto joins the parts
# again on completion).
MULTIPART_THRESHOLD = 100 * MiB
# The part size: AWS's performance guidance is 8-16 MB; within that, part size barely changed
# moto's CPU per byte (5-32 MiB measured) and 16 MiB means fewer requests for a large file.
PART_SIZE = 16 * MiB

_REGION = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_STORAGE_CLASS = re.compile(r"^[A-Z][A-Z0-9_]*$")
_ACCOUNT_ID = re.compile(r"^[A-Za-z0-9]{1,64}$")


class S3CompatibleSettings(TargetSettings):
    """Fields shared by every S3-compatible provider; `provider` says which one."""

    provider: ClassVar[S3Provider] = AWS

    access_key: SecretStr | None = None  # access key id; absent: boto3's credential chain
    secret: SecretStr | None = None  # secret access key
    bucket: str = Field(min_length=1)
    region: str | None = None
    endpoint: EndpointURL = None  # service URL override (S3-compatible stores, test servers)
    account_id: str | None = None  # names the endpoint where the provider's pattern uses it (r2)
    storage_class: str | None = None
    multipart_threshold: int = Field(default=MULTIPART_THRESHOLD, ge=MIN_PART_SIZE)
    part_size: int = Field(default=PART_SIZE, ge=MIN_PART_SIZE, le=MAX_PART_SIZE)
    max_concurrency: int = Field(default=8, ge=1, le=64)

    @field_validator("bucket")
    @classmethod
    def _plain_bucket(cls, value: str) -> str:
        value = value.strip()
        if not value or "/" in value:
            raise ValueError("bucket must be a bucket name (put folders in `path`)")
        return value

    @field_validator("region")
    @classmethod
    def _lower_region(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().lower()  # RealtimeKit shows regions like `SGP1`; slugs are lower
        if not _REGION.match(value):
            raise ValueError(f"region {value!r} is not a region name like us-east-1 or nyc3")
        return value

    @field_validator("account_id")
    @classmethod
    def _plain_account_id(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not _ACCOUNT_ID.match(value.strip()):
            raise ValueError("account_id must be the account's id (letters and digits)")
        return value.strip()

    @field_validator("storage_class")
    @classmethod
    def _upper_storage_class(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip().upper()
        if not _STORAGE_CLASS.match(value):
            raise ValueError(f"storage_class {value!r} is not a storage class like STANDARD_IA")
        return value

    @model_validator(mode="after")
    def _check_provider_rules(self):
        _require_both_keys(self.access_key, self.secret)
        provider = self.provider
        if provider.region_fixed and self.region != provider.region:
            raise ValueError(f"region is always {provider.region} on {self.type}: leave it out")
        if provider.endpoint_required and self.endpoint is None:
            raise ValueError(f"endpoint is required for {self.type}: the URL of your {provider.title} "
                             "server, like https://minio.example.com:9000")
        uses_account_id = "{account_id}" in (provider.endpoint or "")
        if self.account_id is not None and not uses_account_id:
            raise ValueError(f"account_id is not used by {self.type} targets; leave it out")
        if uses_account_id and self.account_id is None and self.endpoint is None:
            raise ValueError(f"account_id is required for {self.type}: it names the endpoint "
                             f"{provider.endpoint} (or set endpoint)")
        return self

    def service_endpoint(self) -> str | None:
        """The URL boto3 talks to; None means AWS's own endpoint for the region."""
        pattern = self.provider.endpoint
        if self.endpoint or pattern is None:
            return self.endpoint
        return pattern.format(region=self.region, account_id=self.account_id)


def _require_both_keys(access_key: SecretStr | None, secret: SecretStr | None) -> None:
    """Half a key pair is always a mistake; silently falling back to the credential chain
    would write with somebody else's identity."""
    if access_key is not None and secret is None:
        raise ValueError("access_key is set but secret is missing: set both, or neither to use "
                         "the AWS credential chain")
    if secret is not None and access_key is None:
        raise ValueError("secret is set but access_key is missing: set both, or neither to use "
                         "the AWS credential chain")


def settings_model_for(provider: S3Provider) -> type[S3CompatibleSettings]:
    """The settings model of one provider: its `type`, its region rule (a default, or required)
    and its capabilities."""
    region = (str, ...) if provider.region is None else (str | None, provider.region)
    name = provider.title.replace(" ", "") + "Settings"
    model = create_model(name, __base__=S3CompatibleSettings, __module__=__name__,
                         type=(str, provider.type), region=region)
    model.provider = provider
    model.capabilities = provider.capabilities()
    return model


SETTINGS_MODELS: dict[str, type[S3CompatibleSettings]] = {
    name: settings_model_for(provider) for name, provider in PROVIDERS.items()}
