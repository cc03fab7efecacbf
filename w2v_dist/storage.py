"""Every byte of I/O goes through here: URIs (``s3://``, ``gs://``, ``az://``, ``memory://``,
``file://`` or plain paths) resolved with fsspec.

Paths stay strings: ``pathlib.Path`` collapses the ``//`` in ``s3://bucket``.
fsspec filesystem instances are not fork-safe, so nothing here caches one across processes:
callers (DataLoader workers included) resolve ``(uri, storage_options)`` where they run.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import tempfile
from typing import IO, Iterator

import fsspec
from fsspec.core import url_to_fs as _url_to_fs


class StorageError(Exception):
    """A URI that cannot be used, with a message that says which and what to do."""


def url_to_fs(uri: str, storage_options: dict | None = None):
    """Resolve ``uri`` to ``(filesystem, path)``; a missing backend package becomes a clear error."""
    try:
        return _url_to_fs(uri, **(storage_options or {}))
    except ImportError as e:  # e.g. s3fs not installed
        raise StorageError(f"{uri}: {e} (install the matching extra, e.g. pip install 'w2v-dist[s3]')") from e
    except ValueError as e:
        if "Protocol not known" not in str(e):
            raise
        raise StorageError(_unknown_scheme(uri)) from None


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
    return fs.exists(path)


def makedirs(uri: str, storage_options: dict | None = None) -> None:
    fs, path = url_to_fs(uri, storage_options)
    fs.makedirs(path, exist_ok=True)


def open_uri(uri: str, mode: str = "rb", storage_options: dict | None = None,
             compression: str | None = None, **kwargs) -> IO:
    """Open a URI (``compression='infer'`` picks gzip/bz2/zstd from the suffix)."""
    try:
        of = fsspec.open(uri, mode, compression=compression, **(storage_options or {}), **kwargs)
    except ValueError as e:
        if "Protocol not known" not in str(e):
            raise
        raise StorageError(_unknown_scheme(uri)) from None
    return of.open()


def read_bytes(uri: str, storage_options: dict | None = None) -> bytes:
    fs, path = url_to_fs(uri, storage_options)
    return fs.cat_file(path)


def remove(uri: str, storage_options: dict | None = None, recursive: bool = False) -> None:
    fs, path = url_to_fs(uri, storage_options)
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
    if any(ch in path for ch in "*?["):
        found = [p for p in fs.glob(path) if fs.isfile(p)]
    elif fs.isfile(path):
        found = [path]
    elif fs.isdir(path):
        found = [p for p in fs.find(path) if p.endswith(suffixes)]
    else:
        raise StorageError(f"{uri}: no such file or directory (check the path; cloud URIs need a scheme like s3://)")
    return sorted(unstrip(fs, p) for p in found)


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
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-" + os.path.basename(path))
        try:
            os.fchmod(fd, 0o666 & ~umask())  # mkstemp makes 0600: the file gets what open() would give it
            with os.fdopen(fd, mode) as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
    else:
        fs, path = url_to_fs(uri, storage_options)
        buf = fs.open(path, mode)
        try:
            yield buf
        except BaseException:
            if hasattr(buf, "discard"):  # fsspec's buffered writers: drop the upload, write nothing
                buf.discard()
            raise
        buf.close()


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
