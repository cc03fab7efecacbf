"""Checkpoints: ``<run>/checkpoints/step-N/`` with CPU tensors and JSON, written by rank 0.

Payload first (``model.pt``: tensors only, loadable with ``torch.load(weights_only=True)``;
``state.json``: counters and positions), then ``manifest.json`` with the size and sha256 of each
payload file, written last as the commit marker. A step without a valid manifest does not exist.
Tensors are moved to CPU before saving, so a checkpoint written on a GPU loads on a machine
without one (torch records each storage's device and would otherwise try to restore it there).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re

import torch

from w2v_dist import storage
from w2v_dist.faults import maybe_fail

log = logging.getLogger(__name__)

_STEP = re.compile(r"step-(\d+)$")


def cpu_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU tensors that own exactly their data: torch.save writes a view's whole storage (the fused
    kernel's tables are views of stores that also hold the threads' overlay rows)."""
    out = {}
    for k, v in state.items():
        v = v.detach().to("cpu").contiguous()
        out[k] = v if v.untyped_storage().nbytes() == v.numel() * v.element_size() else v.clone()
    return out


# Settings that do not change the result: they may differ between a run and its resumption.
OPERATIONAL = {"output", "overwrite", "force_resume", "log_every", "threads", "storage_options",
               "output_storage_options", "cache_dir", "token_cache_gb", "device", "backend", "checkpoint_every",
               "checkpoint_minutes", "keep_checkpoints", "allow_incomplete"}

# what the first attempt made the run's vocabulary (and so its rows) and its tables' width with:
# a resumed run cannot change them, not even with --force-resume (the checkpoint is built on them)
FIXED_AT_START = {"dim", "min_count", "max_vocab", "max_vocab_size", "sample", "tokenizer", "text_column"}

# settings added since runs began writing config.json, with the value a run from before them had
ADDED = {"sync_overlap": False, "sync_node_every": 0, "sync_dtype": "float32", "replicas": 1}


def save(run_uri: str, step: int, tensors: dict[str, torch.Tensor], state: dict, keep: int = 2,
         storage_options: dict | None = None) -> str:
    """Write ``checkpoints/step-<step>/``: payload, then the manifest (the commit), then prune."""
    ckpt = storage.join(run_uri, "checkpoints", f"step-{step}")
    buf = io.BytesIO()
    torch.save(cpu_state(tensors), buf)
    payload = {"model.pt": buf.getvalue(), "state.json": json.dumps(state, indent=2).encode()}
    manifest = {"step": step, "files": {}}
    for name, data in payload.items():
        storage.write_bytes(storage.join(ckpt, name), data, storage_options)
        manifest["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    maybe_fail("save", 0, step)
    storage.write_text(storage.join(ckpt, "manifest.json"), json.dumps(manifest, indent=2), storage_options)
    _prune(run_uri, keep, storage_options)
    return ckpt


def latest(run_uri: str, storage_options: dict | None = None) -> tuple[int, dict, dict] | None:
    """The newest committed checkpoint that verifies, as ``(step, tensors, state)``; a corrupt one
    is reported and the one before it is tried. ``None`` if there is no checkpoint at all;
    ``ValueError`` if there are some and none is usable."""
    steps = committed_steps(run_uri, storage_options)
    problems = []
    for step in reversed(steps):
        try:
            tensors, state = load(run_uri, step, storage_options)
        except (ValueError, OSError, RuntimeError, KeyError, json.JSONDecodeError) as e:
            log.warning("checkpoint step-%d is not usable (%s); trying the previous one", step, e)
            problems.append(f"step-{step}: {e}")
            continue
        return step, tensors, state
    if problems:
        raise ValueError(f"{run_uri}: no usable checkpoint ({'; '.join(problems)}); pass --overwrite to start again")
    return None


def config_diff(saved: dict, current: dict, ignore: frozenset[str] | set[str] = OPERATIONAL) -> dict[str, tuple]:
    """Settings that differ, but for ``ignore`` (by default those that would not change the result),
    ``{name: (saved, current)}``."""
    keys = (set(saved) | set(current)) - ignore
    saved = {**ADDED, **saved}
    return {k: (saved.get(k), current.get(k)) for k in sorted(keys) if saved.get(k) != current.get(k)}


def committed_steps(run_uri: str, storage_options: dict | None = None) -> list[int]:
    """Steps with a manifest, oldest first."""
    steps = []
    for uri in storage.ls(storage.join(run_uri, "checkpoints"), storage_options):
        m = _STEP.search(uri)
        if m and storage.exists(storage.join(uri, "manifest.json"), storage_options):
            steps.append(int(m.group(1)))
    return sorted(steps)


def load(run_uri: str, step: int, storage_options: dict | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Load and verify one committed step; raises ``ValueError`` on a checksum mismatch."""
    ckpt = storage.join(run_uri, "checkpoints", f"step-{step}")
    try:
        manifest = json.loads(storage.read_bytes(storage.join(ckpt, "manifest.json"), storage_options))
    except ValueError as e:  # (the warning that follows named no file)
        raise ValueError(f"{ckpt}/manifest.json: not JSON ({e})") from None
    if manifest.get("step") != step:  # a step directory renamed (step-999 was taken for the newest)
        raise ValueError(f"{ckpt}/manifest.json: written for step {manifest.get('step')}, not {step}: the directory "
                         "was renamed")
    data = {}
    for name, info in manifest["files"].items():
        b = storage.read_bytes(storage.join(ckpt, name), storage_options)
        if len(b) != info["bytes"] or hashlib.sha256(b).hexdigest() != info["sha256"]:
            raise ValueError(f"{ckpt}/{name}: size or checksum does not match its manifest (corrupt checkpoint)")
        data[name] = b
    tensors = torch.load(io.BytesIO(data["model.pt"]), weights_only=True)
    return tensors, json.loads(data["state.json"])


def _prune(run_uri: str, keep: int, storage_options: dict | None) -> None:
    steps = committed_steps(run_uri, storage_options)
    for s in steps[:-keep]:
        storage.remove(storage.join(run_uri, "checkpoints", f"step-{s}"), storage_options, recursive=True)
