"""Shared fixtures: small real corpora written as Parquet by the tests themselves."""

from __future__ import annotations

import gzip
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _shared_data() -> Path:
    """The shared data directory beside the repo (``../shared/data``), or, in a local clone (CI's
    ``git clone . "$(mktemp -d)"``), beside the repository it was cloned from."""
    here = ROOT.parent / "shared" / "data"
    if here.exists():
        return here
    try:
        origin = subprocess.run(["git", "-C", str(ROOT), "config", "--get", "remote.origin.url"],
                                capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        origin = ""
    if origin and Path(origin).is_absolute():  # a local path, not a URL
        there = Path(origin).resolve().parent / "shared" / "data"
        if there.exists():
            return there
    return here


DATA = _shared_data()
GCIDE = DATA / "gcide_en.txt.gz"


def shared_file(path: Path) -> Path:
    """``path`` in the shared data directory beside the repo. Missing: fatal under CI (a third of
    the suite would skip and CI pass: seen with a clone that had no ``../shared``), a skip elsewhere,
    as tests/stores.py does for the emulators."""
    if not path.exists():
        reason = f"{path} not found (the shared data directory beside the repo)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; CI=true: the data is required", pytrace=False)
        pytest.skip(reason)
    return path


def gcide_lines(n: int, start: int = 0) -> list[str]:
    shared_file(GCIDE)
    out = []
    with gzip.open(GCIDE, "rt", encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i >= start + n:
                break
            if i >= start:
                out.append(line.rstrip("\n"))
    return out


def write_shards(directory: Path, lines: list[str], shards: int = 2, row_group: int = 2000,
                 column: str = "text") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    per = -(-len(lines) // shards)
    for i in range(shards):
        pq.write_table(pa.table({column: lines[i * per:(i + 1) * per]}), directory / f"part-{i:05d}.parquet",
                       row_group_size=row_group)
    return directory


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory) -> Path:
    """20k lines of real English (about 150k words) in 2 shards of 2k-row row groups."""
    return write_shards(tmp_path_factory.mktemp("corpus"), gcide_lines(20_000))


def plain_lines(n: int, start: int = 0) -> list[str]:
    """GCIDE lines as lowercase ASCII words separated by single spaces: text that ``str.split``
    tokenizes exactly as the trainer's tokenizer does, so a test can count tokens without it."""
    return [" ".join(re.findall(r"[a-z]+", line.lower())) for line in gcide_lines(n, start)]


def parquet_token_counts(directory: Path, column: str = "text") -> Counter:
    """Token counts of every row of every Parquet file under ``directory``, read with pyarrow and
    split with ``str.split``: an oracle that shares no code with the reader or the tokenizer."""
    counts: Counter = Counter()
    for f in sorted(directory.glob("*.parquet")):
        for row in pq.read_table(f, columns=[column]).column(column).to_pylist():
            counts.update(row.split() if row is not None else ())
    return counts


def run_vocab(run: Path) -> tuple[list[str], np.ndarray]:
    """The words and counts of ``<run>/vocab/``, read with numpy alone (layout: w2v_dist/vocab.py):
    word i is ``word_bytes[word_offsets[i]:word_offsets[i + 1]]`` in UTF-8."""
    offsets = np.load(run / "vocab" / "word_offsets.npy")
    data = np.load(run / "vocab" / "word_bytes.npy").tobytes()
    words = [data[a:b].decode("utf-8") for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]
    return words, np.load(run / "vocab" / "counts.npy")


# The runs that the oracle tests share: two epochs, so a row read in one epoch only shows too.
PLAIN_EPOCHS = 2
PLAIN_TRAIN = ["--epochs", str(PLAIN_EPOCHS), "--dim", "16", "--min-count", "3", "--threads", "1", "--log-every", "1"]


@pytest.fixture(scope="session")
def plain_corpus(tmp_path_factory) -> Path:
    """6000 rows of :func:`plain_lines` (about 40k words) in 3 shards of 700-row row groups."""
    return write_shards(tmp_path_factory.mktemp("plain"), plain_lines(6000), shards=3, row_group=700)


@pytest.fixture(scope="session")
def plain_run(plain_corpus, tmp_path_factory) -> Path:
    """A finished run on ``plain_corpus``: one process, two reader workers."""
    run = tmp_path_factory.mktemp("plain-runs") / "one"
    cli("train", str(plain_corpus), "--output", str(run), *PLAIN_TRAIN, "--workers", "2")
    return run


@pytest.fixture(scope="session")
def two_ranks(plain_corpus, tmp_path_factory) -> Path:
    """The same training as ``plain_run``, as 2 ranks of one reader each under torchrun."""
    from tests.test_distributed import torchrun

    run = tmp_path_factory.mktemp("ranks") / "two"
    torchrun("train", str(plain_corpus), "--output", str(run), *PLAIN_TRAIN, "--workers", "1")
    return run


def _sigint_as_on_a_terminal() -> None:
    """A shell that runs a job in the background (``bash .ci/run &``, nohup) starts it with SIGINT
    ignored, and Python then never turns SIGINT into KeyboardInterrupt: the Ctrl-C tests would
    test nothing. The entry point runs as a user's terminal would run it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def cli(*args: str, check: bool = True, env: dict | None = None, timeout: float = 300,
        cpus: set[int] | None = None) -> subprocess.CompletedProcess:
    """Run the real entry point: ``python -m w2v_dist ...`` (``cpus``: on these CPUs only, as
    ``taskset`` or a container's limit would run it)."""

    def start() -> None:
        _sigint_as_on_a_terminal()
        if cpus is not None:
            os.sched_setaffinity(0, cpus)

    p = subprocess.run([sys.executable, "-m", "w2v_dist", *args], capture_output=True, text=True,
                       env={**os.environ, **(env or {})}, timeout=timeout, cwd=ROOT, preexec_fn=start)
    if check and p.returncode != 0:
        raise AssertionError(f"w2v-dist {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


# gcsfs's default file system asks GCS over gRPC whether a bucket is hierarchical; an emulator
# does not answer and every open waits out a 60 s timeout (docs/storage.md). Set before gcsfs is
# imported, here and in every process the tests start.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")


def _store(name, tmp_path_factory):
    from tests import stores
    store = stores.START[name](tmp_path_factory.mktemp(f"store-{name}"))
    yield store
    store.stop()


@pytest.fixture(scope="session")
def s3_store(tmp_path_factory):
    """moto's S3 server on 127.0.0.1 with an empty bucket (tests/stores.py)."""
    yield from _store("s3", tmp_path_factory)


@pytest.fixture(scope="session")
def gs_store(tmp_path_factory):
    """fake-gcs-server on 127.0.0.1 with an empty bucket."""
    yield from _store("gs", tmp_path_factory)


@pytest.fixture(scope="session")
def az_store(tmp_path_factory):
    """Azurite's blob service on 127.0.0.1 with an empty container."""
    yield from _store("az", tmp_path_factory)
