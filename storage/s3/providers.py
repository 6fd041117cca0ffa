"""S3-compatible providers as data: one entry each (endpoint, region rule, addressing style and
the quirks that change what an upload sends). Adding a provider is one entry here plus one rig
line in tests/storage/rig_s3.py; the adapter and the conformance suite take it from there.

Each quirk is taken from the provider's own documentation where it says so (cited beside it).
Where the documentation is silent, the entry takes the safe setting and says so: no header the
provider might refuse or silently ignore, no digest that might not be one, no retention the
upload could not satisfy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from storage.capabilities import Capabilities


@dataclass(frozen=True)
class S3Provider:
    type: str  # the [[targets]] type
    title: str  # how messages name the service
    label: str  # describe(): a format over bucket, path, region, endpoint
    # The service URL as a pattern over the settings ({region}, {account_id}); None: boto3's own
    # AWS endpoint, or (endpoint_required) no public one at all.
    endpoint: str | None = None
    endpoint_required: bool = False
    # The default region; None: `region` is required. region_fixed: the only region it answers to.
    region: str | None = None
    region_fixed: bool = False
    # Addressing style whenever an endpoint is configured or derived ("auto" without one).
    addressing: Literal["auto", "path", "virtual"] = "path"
    # Honours `If-None-Match: *` on PutObject and CompleteMultipartUpload. Without it the header
    # is not sent, and create-only rests on the look before each put (the probe says so).
    conditional_writes: bool = False
    # Takes S3 Object Lock headers on upload (retention_mode GOVERNANCE/COMPLIANCE, legal_hold).
    object_lock: bool = False
    # The flexible checksum sent with each upload, computed by botocore over the bytes sent and
    # checked by the server. None: botocore sends no flexible checksum at all (its
    # request_checksum_calculation "when_required"), for providers that refuse those headers.
    checksum: Literal["SHA256"] | None = None
    # A single-part object's ETag is the MD5 of its bytes (unencrypted or SSE-S3 only; a
    # multipart ETag "…-N" never is).
    etag_is_md5: bool = False
    # Takes a full-object CRC32C on a multipart upload (ChecksumType FULL_OBJECT: the server
    # combines the parts' CRC32Cs into the whole object's), the only whole-file digest a
    # multipart object can carry: what an overlapped upload (storage/stream.py) is verified by.
    full_object_crc32c: bool = False

    def capabilities(self) -> Capabilities:
        """What a target of this provider can do, derived from the entry."""
        digests = ({"sha256"} if self.checksum == "SHA256" else set()) | ({"md5"} if self.etag_is_md5 else set())
        return Capabilities(
            digests=frozenset(digests),
            multipart_digests=frozenset(),  # a checksum of part checksums, an ETag of part MD5s
            # Without a flexible checksum, the ETag's MD5 is the only digest to verify a copy by.
            uses_md5=self.checksum is None and self.etag_is_md5,
            retention_modes=("GOVERNANCE", "COMPLIANCE") if self.object_lock else (),
            retention_note=" (S3 Object Lock; the bucket must have it enabled)" if self.object_lock else "",
            legal_hold=self.object_lock,
            conditional_create=self.conditional_writes,
            overlapped_upload=self.full_object_crc32c,
            overlapped_digests=frozenset({"crc32c"}) if self.full_object_crc32c else None,
            overlapped_sha256=False,
        )


AWS = S3Provider(
    type="aws", title="Amazon S3", label="s3://{bucket}/{path}", region="us-east-1",
    # An `endpoint` makes it any S3-compatible server: path style is what most of them (MinIO,
    # Ceph, moto) need; boto3 uses it for IP endpoints anyway.
    addressing="path",
    conditional_writes=True,  # S3 conditional writes (PutObject, CompleteMultipartUpload)
    object_lock=True, checksum="SHA256", etag_is_md5=True,
    full_object_crc32c=True,  # S3 "Checking object integrity": full object checksums (CRC-based)
)

DIGITALOCEAN = S3Provider(
    type="digitalocean", title="DigitalOcean Spaces", label="do://{bucket}/{path} @ {region}",
    # The endpoint DigitalOcean documents per region (docs.digitalocean.com, Spaces S3
    # compatibility); RealtimeKit's docs do not name it, so an explicit `endpoint` wins.
    endpoint="https://{region}.digitaloceanspaces.com",
    addressing="auto",  # Spaces serves virtual-hosted URLs on its own domain
    # As before this table existed: the AWS settings. DigitalOcean's compatibility page does not
    # list conditional writes, SHA-256 checksums or Object Lock either way.
    conditional_writes=True, object_lock=True, checksum="SHA256", etag_is_md5=True,
    full_object_crc32c=False,  # nor full-object checksums: overlapped uploads are not offered
)

R2 = S3Provider(
    type="r2", title="Cloudflare R2", label="r2://{bucket}/{path}",
    endpoint="https://{account_id}.r2.cloudflarestorage.com",  # R2 "S3 API compatibility"
    region="auto", region_fixed=True,  # "the region for an R2 bucket is auto" (same page)
    addressing="path",  # rclone's Cloudflare profile forces path style
    # R2 "Conditional operations": PutObject and CompleteMultipartUpload accept If-None-Match.
    conditional_writes=True,
    # R2's CreateBucket does not implement x-amz-bucket-object-lock-enabled (S3 API
    # compatibility): no S3 Object Lock (R2's bucket locks are configured outside the S3 API).
    object_lock=False,
    # R2 lists SHA-256 as a composite (multipart) checksum only, and botocore's default
    # checksums broke R2 uploads in January 2025: none is sent.
    checksum=None,
    etag_is_md5=True,  # rclone's Cloudflare profile: only multipart ETags are not MD5s
)

B2 = S3Provider(
    type="b2", title="Backblaze B2", label="b2://{bucket}/{path} @ {region}",
    endpoint="https://s3.{region}.backblazeb2.com",  # B2 "Call the S3-Compatible API"
    addressing="path",  # B2 accepts path and virtual-hosted style alike
    # B2's S3 Put Object reference lists no If-None-Match: not sent (not confirmed).
    conditional_writes=False,
    # B2 refused the SDK's x-amz-sdk-checksum-algorithm header (boto/s3transfer#327): none sent.
    checksum=None,
    # B2 has Object Lock, but refuses an Object Lock upload without Content-MD5 or an
    # x-amz-checksum header (zmanda/amanda#275), neither of which is sent here: not offered.
    object_lock=False,
    # Whether a single-part ETag is the MD5 is not documented: not used as a digest.
    etag_is_md5=False,
)

WASABI = S3Provider(
    type="wasabi", title="Wasabi", label="wasabi://{bucket}/{path} @ {region}",
    endpoint="https://s3.{region}.wasabisys.com",  # the service URLs Wasabi lists per region
    addressing="path",  # Wasabi's REST API introduction recommends path-style requests
    conditional_writes=False,  # not documented by Wasabi: not sent
    checksum=None,  # flexible checksums not documented by Wasabi: none sent
    # Wasabi documents Object Lock, but S3 requires Content-MD5 or a checksum with Object Lock
    # uploads and none is sent here: not offered until that is confirmed.
    object_lock=False,
    etag_is_md5=True,  # rclone's Wasabi profile has no ETag quirk: single-part ETags are MD5s
)

MINIO = S3Provider(
    type="minio", title="MinIO", label="minio://{bucket}/{path} @ {endpoint}",
    endpoint_required=True,  # a server of your own: no public endpoint
    region="us-east-1",  # MinIO's default region
    addressing="path",  # rclone's MinIO profile forces path style
    conditional_writes=True,  # If-None-Match: * on PutObject (minio/minio#20346, #19681)
    object_lock=True,  # MinIO implements S3 Object Lock, retention and legal hold
    checksum="SHA256",  # MinIO returns flexible checksums (minio/minio#21526)
    etag_is_md5=True,  # MinIO's single-part ETag is the content MD5 (minio internal/etag)
    # Not taken: MinIO accepted ChecksumType FULL_OBJECT but did not honour it (minio/minio#20944),
    # and FULL_OBJECT CRC uploads were reported failing on MinIO again in 2026 (pgsty/silo#31).
    full_object_crc32c=False,
)

PROVIDERS: dict[str, S3Provider] = {p.type: p for p in (AWS, DIGITALOCEAN, R2, B2, WASABI, MINIO)}
