"""The run directory as others see it: file modes, one writer at a time, no orphan ranks."""

from __future__ import annotations

import json
import os
import stat

from tests.conftest import cli

TINY = ["--dim", "8", "--epochs", "1", "--threads", "1", "--min-count", "3"]


def _modes(root) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]}


def test_files_follow_the_umask(plain_corpus, tmp_path):
    """Guards: every file written through the atomic write was 0600 whatever the umask (mkstemp's
    mode leaked through), so other users and jobs of a shared cluster could not read the vectors."""
    run = tmp_path / "run"
    old = os.umask(0o022)
    try:
        cli("train", str(plain_corpus), "--output", str(run), *TINY, "--checkpoint-every", "1", "--log-every", "0")
    finally:
        os.umask(old)
    modes = _modes(run)
    for name in ("vectors.npy", "summary.json", "config.json", "plan.json", "metrics.jsonl", "vocab/counts.npy",
                 "vocab/vocab.json"):
        assert modes.pop(name) == 0o644, name
    assert any(n.startswith("checkpoints/step-") for n in modes)
    assert {m for n, m in modes.items() if (run / n).is_file()} == {0o644}, modes  # checkpoints too
    assert {m for n, m in modes.items() if (run / n).is_dir()} == {0o755}, modes
    old = os.umask(0o027)  # not a fixed 0644 either: the umask decides
    try:
        p = cli("export", str(run), "--format", "npy", "--output", str(tmp_path / "v.npy"))
    finally:
        os.umask(old)
    assert [stat.S_IMODE(os.stat(f).st_mode) for f in p.stdout.split()] == [0o640, 0o640]
    assert json.loads((run / "summary.json").read_text())["words"] > 0
