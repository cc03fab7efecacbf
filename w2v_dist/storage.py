"""Every byte of I/O goes through here: URIs (``s3://``, ``gs://``, ``az://``, ``memory://``,
``file://`` or plain paths) resolved with fsspec.

Paths stay strings: ``pathlib.Path`` collapses the ``//`` in ``s3://bucket``.
fsspec filesystem instances are not fork-safe, so nothing here caches one across processes:
callers (DataLoader workers included) resolve ``(uri, storage_options)`` where they run.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import posixpath
import re
import tempfile
from typing import IO, Iterator

import fsspec
from fsspec.core import url_to_fs as _url_to_fs

from w2v_dist.faults import maybe_fail


class StorageError(Exception):
    """A URI that cannot be used, with a message that says which and what to do."""


def url_to_fs(uri: str, storage_options: dict | None = None):
    """Resolve ``uri`` to ``(filesystem, path)``; a missing backend package becomes a clear error."""
    try:
        fs, path = _url_to_fs(uri, **(storage_options or {}))
    except ImportError as e:  # e.g. s3fs not installed
        raise StorageError(f"{uri}: {e} (install the matching extra, e.g. pip install 'w2v-dist[s3]')") from e
    except ValueError as e:
        if "Protocol not known" in str(e):
            raise StorageError(_unknown_scheme(uri)) from None
        if protocol(uri) in AZURE_PROTOCOLS:  # adlfs cannot build a client: no account named anywhere
            raise StorageError(f"{uri}: {str(e).rstrip('!')}; name the account and a credential in --storage-options "
                               "(account_name with account_key, sas_token or anon, or a connection_string) or in "
                               "AZURE_STORAGE_* environment variables (docs/storage.md)") from None
        raise

    if protocol(uri) in AZURE_PROTOCOLS:
        _azure_retry(uri, fs, storage_options or {})
    return fs, path


AZURE_PROTOCOLS = ("az", "abfs", "abfss")
# stores of buckets (containers) of keys: no directories, and a bucket is the account's to make
OBJECT_STORES = ("s3", "s3a", "gs", "gcs", *AZURE_PROTOCOLS)
# The Azure SDK's retry settings (azure.storage.blob.ExponentialRetry's arguments) -> the policy's
# attributes. adlfs takes them among its storage options but does not hand them to the client it
# builds (https://github.com/fsspec/adlfs/issues/502), so the SDK's default stays: 3 retries
# 18, 24 and 42 s (+-3) apart. They are set here on the client adlfs made.
AZURE_RETRY = {"retry_total": "total_retries", "retry_connect": "connect_retries", "retry_read": "read_retries",
               "retry_status": "status_retries", "initial_backoff": "initial_backoff",
               "increment_base": "increment_base", "random_jitter_range": "random_jitter_range"}


def _azure_retry(uri: str, fs, options: dict) -> None:
    settings = {AZURE_RETRY[k]: v for k, v in options.items() if k in AZURE_RETRY}
    if not settings:
        return
    pipeline = getattr(getattr(fs, "service_client", None), "_pipeline", None)
    policies = [p for p in getattr(pipeline, "_impl_policies", ()) if hasattr(p, "total_retries")
                and hasattr(p, "increment_base")]
    if not policies:
        raise StorageError(f"{uri}: cannot apply the retry settings {sorted(k for k in options if k in AZURE_RETRY)} "
                           "to this azure-storage-blob's client; leave them out to use the SDK's defaults")
    for policy in policies:
        for name, value in settings.items():
            setattr(policy, name, value)


def unavailable(e: BaseException | None) -> bool:
    """Whether ``e`` says that the store did not answer (throttled, a 5xx, a refused, reset or
    timed-out connection) rather than that an object is missing or bad. Raised after the
    backend's own retries gave up, it is never a reason to skip data: the run stops, and resumes
    once the store answers again. Looks through the causes: adlfs wraps the SDK's error in a
    RuntimeError, s3fs botocore's in an OSError."""
    for e in _causes(e):
        if isinstance(e, (StorageError, FileNotFoundError, PermissionError)):
            return False
        if isinstance(e, (ConnectionError, TimeoutError, asyncio.TimeoutError)):
            return True
        if any(c.__name__ in _CONNECTION_ERRORS for c in type(e).__mro__):
            return True
        status = _http_status(e)
        if status is not None:
            return status in (408, 429) or status >= 500
        if isinstance(e, OSError) and e.errno == errno.EBUSY:  # s3fs's SlowDown and ServiceUnavailable
            return True
    return False


def _causes(e: BaseException | None) -> Iterator[BaseException]:
    """``e``, then what it was raised from or during, each once (a cycle ends it)."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


# Connection-level failures of the backends' HTTP stacks, by name (none of them need be installed):
# aiohttp (s3fs, gcsfs, adlfs), azure-core, botocore, fsspec, http.client
_CONNECTION_ERRORS = {"ClientConnectionError", "ClientPayloadError", "ServerDisconnectedError",
                      "ServiceRequestError", "ServiceResponseError", "HTTPClientError", "EndpointConnectionError",
                      "ConnectionClosedError", "ConnectTimeoutError", "ReadTimeoutError", "FSTimeoutError",
                      "IncompleteRead"}


def _http_status(e: BaseException) -> int | None:
    for attr in ("status_code", "status", "code"):  # azure-core, aiohttp, gcsfs
        value = getattr(e, attr, None)
        if isinstance(value, int) and 100 <= value < 600:
            return value
    response = getattr(e, "response", None)  # botocore's ClientError
    if isinstance(response, dict):
        return response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return None


# the SDKs' errors for credentials missing, unusable or refused (by class name, up the causes):
# botocore, azure-core, google-auth; PermissionError is s3fs's and gcsfs's 403
_REFUSALS = {"NoCredentialsError", "PartialCredentialsError", "ClientAuthenticationError", "DefaultCredentialsError",
             "RefreshError"}


def refused(e: BaseException | None) -> str | None:
    """What the store or its SDK said where ``e`` is a credential missing, unusable or refused;
    None for any other error."""
    for e in _causes(e):
        names = {c.__name__ for c in type(e).__mro__}
        if isinstance(e, PermissionError) or names & _REFUSALS or (
                "HttpResponseError" in names and _http_status(e) in (401, 403)):
            return _said(e)
    return None


# "access_token=ya29...", "AccountKey=...;", "sig=...": what a store's error may carry of a credential
_SECRET_IN_TEXT = re.compile(r"(?i)\b([\w-]*(?:token|key|secret|sig|signature|password|credential)[\w-]*)=([^&;\s'\"]+)")


def _said(e: BaseException) -> str:
    """What a store's client said: its message's first line, its credentials redacted (a client's
    message may quote a request's URL), at most 200 characters."""
    said = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
    return _SECRET_IN_TEXT.sub(r"\1=<redacted>", said)[:200]


def unavailable_error(uri: str | None, e: BaseException) -> StorageError:
    """One line naming the object, what the store said, and what to do."""
    return StorageError(f"{uri or 'storage'}: the store did not answer ({_said(e)}) after its client's retries; "
                        "checkpoints already written are intact: run the same command again once it answers "
                        "(retries: docs/storage.md)")


@contextlib.contextmanager
def answering(uri: str) -> Iterator[None]:
    """Turn a store that stopped answering into one :class:`StorageError` naming ``uri``."""
    try:
        yield
    except Exception as e:
        if unavailable(e):
            raise unavailable_error(uri, e) from e
        raise


def _unknown_scheme(uri: str) -> str:
    return (f"{uri}: unknown URI scheme {protocol(uri) + '://'!r}; use a local path or one of s3://, gs://, az://, "
            "hf://, http(s)://, memory:// (fsspec's registry)")


def protocol(uri: str) -> str:
    return uri.split("://", 1)[0] if "://" in uri else "file"


def is_local(uri: str) -> bool:
    return protocol(uri) in ("file", "local")


def local_path(uri: str) -> str:
    """The OS path of a local URI."""
    return uri[len("file://"):] if uri.startswith("file://") else uri


def join(uri: str, *parts: str) -> str:
    if "://" in uri:
        proto, rest = uri.split("://", 1)
        return f"{proto}://" + posixpath.join(rest, *parts)
    return os.path.join(uri, *parts)


def exists(uri: str, storage_options: dict | None = None) -> bool:
    fs, path = url_to_fs(uri, storage_options)
    with answering(uri):
        return fs.exists(path)


def makedirs(uri: str, storage_options: dict | None = None) -> None:
    """A directory for ``uri``. An object store has none to make, only its bucket (container),
    which is never made here: s3fs and others would create a new one for a misspelt name."""
    fs, path = url_to_fs(uri, storage_options)
    with answering(uri):
        if protocol(uri) in OBJECT_STORES:
            bucket = path.split("/", 1)[0]
            if not fs.exists(bucket):
                raise StorageError(f"{uri}: its bucket {bucket!r} does not exist, or these credentials cannot see "
                                   "it; check the name, or create it first")
            return
        fs.makedirs(path, exist_ok=True)


def open_uri(uri: str, mode: str = "rb", storage_options: dict | None = None,
             compression: str | None = None, **kwargs) -> IO:
    """Open a URI (``compression='infer'`` picks gzip/bz2/zstd from the suffix)."""
    fs, path = url_to_fs(uri, storage_options)
    if compression == "infer":
        compression = fsspec.utils.infer_compression(uri)
    with answering(uri):
        return fsspec.core.OpenFile(fs, path, mode, compression=compression, **kwargs).open()


def decompress_errors() -> tuple[type[BaseException], ...]:
    """What a damaged compressed stream raises: gzip's EOFError/BadGzipFile (an OSError), zlib,
    bz2 (OSError, EOFError), lzma, zstandard."""
    import lzma
    import zlib

    errors: list[type[BaseException]] = [EOFError, OSError, zlib.error, lzma.LZMAError]
    with contextlib.suppress(ImportError):
        import zstandard
        errors.append(zstandard.ZstdError)
    return tuple(errors)


def read_decompressed(uri: str, storage_options: dict | None, what: str, error: type[Exception]) -> bytes:
    """The whole of ``uri``, decompressed as its suffix says (.gz, .bz2, .xz, .zst). A missing file
    is a FileNotFoundError naming ``what``; a damaged, cut or mislabelled compressed one an
    ``error`` naming it (gzip's EOFError and BadGzipFile were tracebacks)."""
    compression = fsspec.utils.infer_compression(uri)
    try:
        with answering(uri), open_uri(uri, "rb", storage_options, compression="infer") as f:
            return f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"{uri}: no such {what} (check the path; cloud URIs need a scheme like s3://)") \
            from None
    except decompress_errors() as e:
        if compression is None or isinstance(e, PermissionError) or unavailable(e):
            raise
        raise error(f"{uri}: not readable as {compression} ({_said(e)}): the file is damaged or cut short, or its "
                    "suffix does not say how it is compressed") from None


def read_bytes(uri: str, storage_options: dict | None = None) -> bytes:
    fs, path = url_to_fs(uri, storage_options)
    with answering(uri):
        return fs.cat_file(path)


def ls(uri: str, storage_options: dict | None = None) -> list[str]:
    """The names directly under ``uri`` (full URIs); empty if there is nothing there."""
    fs, path = url_to_fs(uri, storage_options)
    with answering(uri):
        fs.invalidate_cache(path)  # adlfs answered from its listing of earlier: new checkpoints unseen, none pruned
        if not fs.exists(path):
            return []
        return sorted(unstrip(fs, p.rstrip("/")) for p in fs.ls(path, detail=False))


def remove(uri: str, storage_options: dict | None = None, recursive: bool = False) -> None:
    fs, path = url_to_fs(uri, storage_options)
    with answering(uri):
        if fs.exists(path):
            fs.rm(path, recursive=recursive)


def unstrip(fs, path: str) -> str:
    """Turn a path returned by ``fs.ls``/``fs.glob`` back into a full URI."""
    return fs.unstrip_protocol(path) if not isinstance(fs, fsspec.implementations.local.LocalFileSystem) else path


def expand(uri: str, suffixes: tuple[str, ...], storage_options: dict | None = None) -> list[str]:
    """Files under a directory/prefix, or matching a glob, ending in one of ``suffixes``; sorted.

    A path that names a file is returned as is (whatever its suffix).
    """
    fs, path = url_to_fs(uri, storage_options)
    with answering(uri):
        if any(ch in path for ch in "*?["):
            found = [p for p, info in fs.glob(path, detail=True).items() if info.get("type") == "file"]
        elif (kind := _kind(fs, path)) == "file":
            found = [path]
        elif kind == "directory":
            found = [p for p in fs.find(path) if p.endswith(suffixes)]
        else:
            raise StorageError(f"{uri}: no such file or directory (check the path; cloud URIs need a scheme like s3://)")
    return sorted(unstrip(fs, p) for p in found)


def _kind(fs, path: str) -> str | None:
    """``"file"``, ``"directory"`` or None (nothing there), from one ``info``: it lets a store's
    outage through, where gcsfs's and adlfs's ``isfile`` take any error for "not a file" (a GCS
    endpoint down was said as "no such file or directory", after its retries)."""
    try:
        return fs.info(path).get("type")
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def atomic_open(uri: str, mode: str = "wb", storage_options: dict | None = None) -> Iterator[IO]:
    """Write a file so that readers see either nothing or the whole of it.

    Local disk: a temp file in the same directory, fsync, ``os.replace``; the file's mode is what
    ``open()`` would give (0666 less the umask), not the temp file's 0600. Object stores: one
    PUT when the file is closed, which is atomic there.
    """
    if is_local(uri):
        path = local_path(uri)
        d = os.path.dirname(os.path.abspath(path))
        os.makedirs(d, exist_ok=True)
        try:
            fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-" + os.path.basename(path))
        except OSError as e:
            raise cannot_write(path, e) or e
        try:
            os.fchmod(fd, 0o666 & ~umask())  # mkstemp makes 0600: the file gets what open() would give it
            with os.fdopen(fd, mode) as f:
                yield f
                f.flush()
                maybe_fail(f"write:{os.path.basename(path)}", 0, 0)  # tests: a full disk, a kill
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException as e:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            said = cannot_write(path, e) if isinstance(e, OSError) else None
            if said is None:
                raise
            raise said from e
    else:
        fs, path = url_to_fs(uri, storage_options)
        with answering(uri), _bucket_there(uri):
            buf = fs.open(path, mode)
        try:
            yield buf
        except BaseException:
            if hasattr(buf, "discard"):  # fsspec's buffered writers: drop the upload, write nothing
                buf.discard()
            raise
        with answering(uri), _bucket_there(uri):
            buf.close()  # the upload


# a disk that cannot take a write: what to say of it
_NO_ROOM = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
            errno.EROFS: "the file system is read-only"}


def cannot_write(path: str, e: BaseException) -> StorageError | None:
    """One line for a local write the disk refused (full, over quota, read-only), naming the file;
    None for any other error. numpy's writes to a full disk say only 'N requested and M written'.
    (Each was a traceback from every command, a full disk under a training run included.)"""
    if not isinstance(e, OSError):
        return None
    what = _NO_ROOM.get(e.errno) or ("the write was cut short: the disk is probably full"
                                    if e.errno is None and re.search(r"\d+ requested and \d+ written", str(e)) else None)
    if what is None:
        return None
    return StorageError(f"{path}: could not be written ({what}); free space (or make it writable), then run the same "
                        "command: what was written before is intact")


@contextlib.contextmanager
def _bucket_there(uri: str) -> Iterator[None]:
    """A write that finds no such object store bucket names the URI: s3fs said only 'The specified
    bucket does not exist' (and gcsfs names the request's HTTP URL)."""
    try:
        yield
    except Exception as e:
        missing = _missing(e)  # adlfs: a RuntimeError('Failed to upload block: ...') from azure's ResourceNotFoundError
        if missing is None:
            raise
        bucket = uri.split("://", 1)[1].split("/", 1)[0] if protocol(uri) in OBJECT_STORES else None
        raise StorageError(f"{uri}: {_said(missing)}" + (f" (bucket {bucket!r}: check the name, or create it first)"
                                                         if bucket else "")) from e


def _missing(e: BaseException | None) -> BaseException | None:
    """The 'no such object' in ``e`` or its causes: a FileNotFoundError, or azure-core's ResourceNotFoundError."""
    return next((c for c in _causes(e) if isinstance(c, FileNotFoundError)
                 or "ResourceNotFoundError" in {k.__name__ for k in type(c).__mro__}), None)


def umask() -> int:
    """This process's umask. Read from /proc where it can be: setting it to read it back (the only
    portable way) changes it for every thread meanwhile."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_bytes(uri: str, data: bytes, storage_options: dict | None = None) -> None:
    with atomic_open(uri, "wb", storage_options) as f:
        f.write(data)


def write_text(uri: str, text: str, storage_options: dict | None = None) -> None:
    write_bytes(uri, text.encode("utf-8"), storage_options)
