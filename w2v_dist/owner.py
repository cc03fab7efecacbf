"""Who writes a run directory: one live owner at a time, and ranks that die with their launcher.

Rank 0 creates ``<run>/.lock`` (JSON: host, pid, the process's start time, when, the command)
before it writes anything and removes it when the run stops, finished or not. A second ``train``
into the directory while that process lives is refused in one line that names it; a lock whose
process is gone (same host, and no such pid, or the pid now belongs to another process) is broken
with a warning: a run killed with SIGKILL (the OOM killer, ``kill -9``) leaves its lock behind.

Limits, kept simple rather than clever:

- a lock taken on another host cannot be checked from here, so it is taken as live: once that
  run is gone, delete the file (the refusal says which);
- on local and network file systems the lock is created with ``O_EXCL`` (of two launches racing,
  one wins); object stores have no create-if-absent, so there the check and the write are two
  requests and two launches within the same moment can both pass. The common case, a relaunch
  while the first run still trains, is caught everywhere.

Ranks under ``torchrun`` also ask Linux to SIGKILL them when their parent, the torchrun agent,
dies (:func:`die_with_parent`): an agent killed with SIGKILL cannot stop its ranks, which would
otherwise train on as orphans, writing the run beside a relaunch.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import signal
import socket
import sys
import uuid

from w2v_dist import storage
from w2v_dist.config import redact

log = logging.getLogger(__name__)

LOCK = ".lock"


class RunLockedError(ValueError):
    """The run directory is in use by a live ``train``."""


def die_with_parent(parent: int | None = None) -> None:
    """Have Linux SIGKILL this process when its parent dies (prctl ``PR_SET_PDEATHSIG``); exit at
    once if the parent already died (``parent``: the parent's pid as first seen, else any
    re-parenting to init counts). Elsewhere: nothing (no such call)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    now = os.getppid()
    if now == 1 or (parent is not None and now != parent):  # the parent died before prctl took effect
        os._exit(1)


def _start_time(pid: int) -> int | None:
    """The process's start (clock ticks since boot, /proc/<pid>/stat field 22): a pid that was
    reused by another process has another. ``None``: no such process, or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else int(fields[19])


def _alive(owner: dict) -> bool:
    if owner.get("host") != socket.gethostname():
        return True  # cannot tell from here
    pid = int(owner.get("pid", 0))
    if os.path.isdir("/proc/self"):
        started = _start_time(pid)
        recorded = owner.get("pid_start")
        return started is not None and (recorded is None or started == recorded)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Lock:
    """The lock this process holds on a run directory; :meth:`release` gives it up."""

    def __init__(self, run_uri: str, info: dict, created_dir: bool, storage_options: dict | None):
        self.run_uri, self.info, self.created_dir, self.storage_options = run_uri, info, created_dir, storage_options
        self.uri = storage.join(run_uri, LOCK)

    def held(self) -> bool:
        """Whether the lock is still there and this process's: a run directory removed or moved
        while it trains has lost it (its next write would make a new directory, holding a run's
        last files and nothing else)."""
        try:
            return json.loads(storage.read_bytes(self.uri, self.storage_options)).get("token") == self.info["token"]
        except FileNotFoundError:
            return False

    def release(self) -> None:
        """Remove the lock if it is still this process's; remove the run directory too if this
        process created it and left nothing in it (a run that failed before writing)."""
        so = self.storage_options
        try:
            if json.loads(storage.read_bytes(self.uri, so)).get("token") == self.info["token"]:
                storage.remove(self.uri, so)
        except (OSError, ValueError) as e:
            log.warning("%s: could not remove the lock (%s)", self.uri, e)
        if self.created_dir:
            fs, path = storage.url_to_fs(self.run_uri, so)
            try:
                if not fs.ls(path, detail=False):
                    fs.rmdir(path)
            except OSError:
                pass


def _redacted(arg: str) -> str:
    """A command-line word as the lock shows it: a JSON object (``--storage-options``' value, alone
    or after ``=``) with its secrets redacted, as config.json has them. The lock lies in the run
    directory for the whole run, and stays behind a killed one."""
    flag, eq, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
    if not value.lstrip().startswith("{"):
        return arg
    try:
        value = json.dumps(redact(json.loads(value)))
    except ValueError:
        value = "<redacted>"
    return flag + eq + value


def acquire(run_uri: str, storage_options: dict | None = None) -> Lock:
    """Take ``<run>/.lock`` for this process, breaking a lock whose process is gone; raises
    :class:`RunLockedError` naming the owner while it lives."""
    so = storage_options
    fs, path = storage.url_to_fs(run_uri, so)
    created_dir = not fs.exists(path)
    storage.makedirs(run_uri, so)
    info = {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": _start_time(os.getpid()),
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(map(_redacted, sys.argv)), "token": uuid.uuid4().hex}
    uri = storage.join(run_uri, LOCK)
    for _ in range(2):  # a second try after breaking a stale lock
        if _create(uri, json.dumps(info, indent=2), so):
            return Lock(run_uri, info, created_dir, so)
        try:
            owner = json.loads(storage.read_bytes(uri, so))
        except FileNotFoundError:
            continue  # released meanwhile
        except ValueError:
            owner = {}
        who = f"pid {owner.get('pid', '?')} on {owner.get('host', '?')}, since {owner.get('started', '?')}"
        if not owner or _alive(owner):  # unreadable: being written this moment
            where = "" if owner.get("host") == socket.gethostname() else " (another host: it cannot be checked from here)"
            raise RunLockedError(f"{run_uri}: in use by another w2v-dist train ({who}){where}; wait for it or stop "
                                 f"it, or choose another --output (if that process is gone, delete {uri})")
        log.warning("%s: breaking the lock of a run that is gone (%s)", run_uri, who)
        storage.remove(uri, so)
    raise RunLockedError(f"{run_uri}: could not take {uri}: another process keeps taking it")


def _create(uri: str, text: str, so: dict | None) -> bool:
    """Create the file if it does not exist; whether this call created it."""
    if storage.is_local(uri):
        try:
            fd = os.open(storage.local_path(uri), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            return False
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
        except BaseException:  # a full disk: an empty lock left behind read as a live run's, forever
            os.unlink(storage.local_path(uri))
            raise
        return True
    if storage.exists(uri, so):  # object stores: no create-if-absent (see the module's limits)
        return False
    storage.write_text(uri, text, so)
    return True
