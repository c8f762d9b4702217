"""The lease file of a sweep at a storage URI, and how it is written so that one driver wins it.

An object store with conditional writes settles a race between drivers itself. On S3 (and an
S3-compatible store) the lease is created with ``PutObject`` and ``If-None-Match: *`` (only if
there is none) and replaced with ``If-Match: <etag>`` (only if it is still the version this
driver read, or last wrote): of two drivers that write at once, the store accepts one and
answers the other ``412 Precondition Failed``. On GCS, ``ifGenerationMatch`` does the same.
That needs boto3 (``pip install 'pdsweep[s3]'``) or google-cloud-storage (``'pdsweep[gcs]'``).

Every other store (a ``file://`` folder, another filesystem pyarrow opens, S3 or GCS without
that package) is written blindly through pyarrow, and :class:`~pdsweep.sweep.lock.SweepLock`
reads the lease back to see who won. The race window stays open there: two drivers that both
read the lease free (or stale) before either wrote it both win if the second write lands after
the first driver's read-back.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from pdsweep.sweep.store import SweepStore

LEASE_FILE = "driver.lease"


class LeaseConflict(Exception):
    """The lease is no longer the version a conditional write named: another driver wrote it
    (or removed it) in between."""


@dataclass(frozen=True)
class Lease:
    """One version of the lease file: its text, and the store's name for that version (an S3
    ETag, a GCS generation; empty where the store has no conditional writes)."""

    text: str
    version: str


class LeaseFile(Protocol):
    where: str  # the lease's URI, for messages
    conditional: bool  # writes name the version they replace; False: SweepLock reads back
    extra: str | None  # the pdsweep extra that would make this store's writes conditional

    def read(self) -> Lease | None:
        """The lease; None if there is none. Storage errors raise ``OSError``."""
        ...

    def write(self, text: str, replaces: str | None) -> str:
        """Write ``text`` if the lease is still version ``replaces`` (None: if there is none),
        and return the new version. ``LeaseConflict`` if it is not (a conditional store);
        ``OSError`` if the store fails."""
        ...

    def delete(self) -> None: ...


def open_lease(store: SweepStore) -> LeaseFile:
    """The lease file of a sweep at a storage URI, written conditionally where the store can."""
    filesystem, root = store._fs()
    path = f"{root.rstrip('/')}/{store.name}/{LEASE_FILE}"
    where = f"{urlsplit(store.runs_dir).scheme}://{path}"
    bucket, _, key = path.partition("/")
    if filesystem.type_name == "s3":
        try:
            return _S3Lease(_s3_client(store.runs_dir, filesystem.region), bucket, key, where)
        except ImportError:
            return _ArrowLease(filesystem, path, where, extra="s3")
    if filesystem.type_name == "gcs":
        try:
            return _GcsLease(bucket, key, where)
        except ImportError:
            return _ArrowLease(filesystem, path, where, extra="gcs")
    return _ArrowLease(filesystem, path, where, extra=None)


class _ArrowLease:
    """Written through pyarrow, last writer wins."""

    conditional = False

    def __init__(self, filesystem: Any, path: str, where: str, extra: str | None) -> None:
        self.filesystem, self.path, self.where, self.extra = filesystem, path, where, extra

    def read(self) -> Lease | None:
        from pyarrow import fs

        if self.filesystem.get_file_info(self.path).type == fs.FileType.NotFound:
            return None
        with self.filesystem.open_input_stream(self.path) as stream:
            return Lease(stream.read().decode(errors="replace"), "")

    def write(self, text: str, replaces: str | None) -> str:
        self.filesystem.create_dir(self.path.rpartition("/")[0], recursive=True)
        with self.filesystem.open_output_stream(self.path) as out:
            out.write(text.encode())
        return ""

    def delete(self) -> None:
        self.filesystem.delete_file(self.path)


# ---- S3 ------------------------------------------------------------------------------------

_S3_CLIENTS: dict[tuple[str | None, ...], Any] = {}
_S3_CLIENTS_LOCK = threading.Lock()  # boto3 creates clients thread-unsafely; using one is safe


def _s3_client(runs_dir: str, region: str) -> Any:
    """A boto3 client for the store pyarrow opened from ``runs_dir``, with pyarrow's settings:
    the endpoint (the URI's ``endpoint_override`` and ``scheme``, else ``AWS_ENDPOINT_URL_S3``
    or ``AWS_ENDPOINT_URL``) with path-style addressing, the bucket's region, and the URI's
    ``access:secret@`` (else boto3's credential chain: the environment, profiles, roles)."""
    import boto3
    from botocore.config import Config

    uri = urlsplit(runs_dir)
    query = {name: values[-1] for name, values in parse_qs(uri.query).items()}
    endpoint = query.get("endpoint_override") or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint and "://" not in endpoint:
        endpoint = f"{query.get('scheme', 'https')}://{endpoint}"
    access, secret = (unquote(uri.username), unquote(uri.password or "")) if uri.username else (None, None)
    settings = (endpoint, region or None, access, secret)
    with _S3_CLIENTS_LOCK:
        if settings not in _S3_CLIENTS:
            _S3_CLIENTS[settings] = boto3.session.Session().client(
                "s3", endpoint_url=endpoint, region_name=region or None, aws_access_key_id=access, aws_secret_access_key=secret,
                config=Config(s3={"addressing_style": "path"}) if endpoint else None)
        return _S3_CLIENTS[settings]


class _S3Lease:
    """``PutObject`` with ``If-None-Match`` / ``If-Match`` (AWS S3 since 2024). An S3-compatible
    store must honour both headers: one that ignores them lets the last writer win unseen."""

    conditional = True
    extra: str | None = None

    def __init__(self, client: Any, bucket: str, key: str, where: str) -> None:
        self.client, self.bucket, self.key, self.where = client, bucket, key, where

    def read(self) -> Lease | None:
        try:
            found = self._call(self.client.get_object, Bucket=self.bucket, Key=self.key)
        except LeaseConflict:  # no such key
            return None
        return Lease(found["Body"].read().decode(errors="replace"), found["ETag"])

    def write(self, text: str, replaces: str | None) -> str:
        condition = {"IfMatch": replaces} if replaces else {"IfNoneMatch": "*"}
        written = self._call(self.client.put_object, Bucket=self.bucket, Key=self.key, Body=text.encode(),
                             ContentType="application/json", **condition)
        return str(written["ETag"])

    def delete(self) -> None:
        self._call(self.client.delete_object, Bucket=self.bucket, Key=self.key)

    def _call(self, action: Any, **request: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return action(**request)
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", ""))
            # 412: the precondition failed; 409: a concurrent conditional write to the key won;
            # 404 (NoSuchKey, for If-Match and for a read): there is no lease
            if code in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "404"):
                raise LeaseConflict(code) from None
            hint = (" (this store has no conditional writes: use one that honours If-None-Match and If-Match, "
                    "or uninstall boto3 to write the lease and read it back)") if code == "NotImplemented" else ""
            raise OSError(f"{code}: {error.response.get('Error', {}).get('Message', error)}{hint}") from None
        except BotoCoreError as error:  # no credentials, an unreachable endpoint
            raise OSError(str(error)) from None


# ---- GCS -----------------------------------------------------------------------------------


class _GcsLease:
    """Generation preconditions of google-cloud-storage. Not tested here: CI has no GCS
    emulator; it follows the library's documented ``if_generation_match`` (0: only if absent)."""

    conditional = True
    extra: str | None = None

    def __init__(self, bucket: str, key: str, where: str) -> None:
        from google.cloud import storage

        self.blob = storage.Client().bucket(bucket).blob(key)  # credentials and project: as pyarrow's (ADC)
        self.where = where

    def read(self) -> Lease | None:
        try:
            text = self._call(self.blob.download_as_bytes).decode(errors="replace")
        except LeaseConflict:  # no such object
            return None
        return Lease(text, str(self.blob.generation))  # the download's headers carry the generation

    def write(self, text: str, replaces: str | None) -> str:
        self._call(self.blob.upload_from_string, text, content_type="application/json",
                   if_generation_match=int(replaces) if replaces else 0)
        return str(self.blob.generation)

    def delete(self) -> None:
        self._call(self.blob.delete)

    def _call(self, action: Any, *args: Any, **kwargs: Any) -> Any:
        from google.api_core import exceptions
        from google.auth.exceptions import GoogleAuthError

        try:
            return action(*args, **kwargs)
        except (exceptions.PreconditionFailed, exceptions.NotFound) as error:
            raise LeaseConflict(str(error)) from None
        except (exceptions.GoogleAPIError, GoogleAuthError) as error:
            raise OSError(str(error)) from None
