"""Encoded units on node-local disk: a unit of the corpus is tokenized once per node, not once
per epoch.

The first time a reader encodes a unit (row group or row range) it writes the token ids and the
sentence starts to ``<cache dir>/tokens-<key>/`` (an ``.npz`` per unit, written under a temporary
name and renamed); later epochs, and other ranks and readers of the node, load it instead of
reading and tokenizing the text again. The key covers the vocabulary's fingerprint, the
tokenizer settings and the tokenizer's rules (``tokenize.VERSION``: an upgrade that changes them
gets a fresh cache); a unit's file name covers its shard's URI, row groups and a hash of its
Parquet footer (sizes and column statistics), so a rewritten shard is not served stale data. Units in which reading skipped anything (``--on-bad-shard skip``) are
not cached: reading them again counts again. The cache stops growing at ``limit_bytes`` written
by this process or when the disk has under 1 GiB free (the regex tokenizer is then used as
before: correct, slower).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import zipfile

import numpy as np

from w2v_dist.corpus.tokenize import VERSION, Tokenized

log = logging.getLogger(__name__)

MIN_FREE = 1 << 30


class TokenCache:
    def __init__(self, root: str | None, fingerprint: str, tokenizer: dict, limit_bytes: float):
        self.limit, self.written = limit_bytes, 0
        self.dir = None
        if limit_bytes > 0:
            key = hashlib.sha256(json.dumps([fingerprint, tokenizer, VERSION], sort_keys=True).encode()).hexdigest()[:20]
            self.dir = os.path.join(root or os.path.join(tempfile.gettempdir(), "w2v_dist-cache"), f"tokens-{key}")

    def _path(self, shard, unit) -> str:
        name = f"{shard.uri}|{shard.footer}|{shard.row_groups}|{unit.row_group}|{unit.start}|{unit.stop}"
        return os.path.join(self.dir, hashlib.sha256(name.encode()).hexdigest()[:32] + ".npz")

    def has(self, shard, unit) -> bool:
        """Whether the unit is cached (a reader then need not fetch it)."""
        return self.dir is not None and os.path.exists(self._path(shard, unit))

    def get(self, shard, unit) -> Tokenized | None:
        if self.dir is None:
            return None
        try:
            with np.load(self._path(shard, unit)) as z:
                ids, starts = z["ids"], z["starts"]
        except FileNotFoundError:
            return None
        # a half-written file of a process that died, or a damaged one (zipfile's BadZipFile for a bad
        # CRC, EOFError for an empty file: each a traceback in every later run until the cache was
        # deleted): read the unit again, and let put() replace the file
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            log.info("token cache %s: unreadable (%s); reading the unit again", self._path(shard, unit), e)
            return None
        sentence = np.repeat(np.arange(len(starts) - 1, dtype=np.int64), np.diff(starts))
        return Tokenized(ids, sentence, len(ids))

    def put(self, shard, unit, tok: Tokenized) -> None:
        if self.dir is None or self.written >= self.limit:
            return
        starts = np.r_[np.flatnonzero(np.r_[True, tok.sentence[1:] != tok.sentence[:-1]]) if len(tok) else [], len(tok)]
        buf = io.BytesIO()
        np.savez(buf, ids=tok.ids.astype(np.int32, copy=False), starts=starts.astype(np.int64))
        data = buf.getvalue()
        try:
            os.makedirs(self.dir, exist_ok=True)
            if shutil.disk_usage(self.dir).free < MIN_FREE + len(data):
                self.written = self.limit  # stop trying
                _said_once_a_node("token cache %s: under 1 GiB free, not caching more", self.dir)
                return
            fd, tmp = tempfile.mkstemp(dir=self.dir, suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, self._path(shard, unit))
            except OSError:
                with contextlib.suppress(OSError):  # a full disk: no half-written file left behind
                    os.unlink(tmp)
                raise
        except OSError as e:  # a cache is an optimisation: never fail training for it
            _said_once_a_node("token cache %s: %s; not caching more", self.dir, e)
            self.written = self.limit
            return
        self.written += len(data)


def _said_once_a_node(msg: str, *args) -> None:
    """A warning about the node's cache disk, which every reader of every rank of the node meets
    alike: said by the node's first rank's first reader, at INFO by the others (with 8 ranks it
    was 8 identical lines, times --workers)."""
    from torch.utils.data import get_worker_info

    worker = get_worker_info()
    first = os.environ.get("LOCAL_RANK", "0") == "0" and (worker is None or worker.id == 0)
    log.log(logging.WARNING if first else logging.INFO, msg, *args)
