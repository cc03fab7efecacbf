"""`w2v-dist demo`: the whole pipeline on the generated language, through the real entry point."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from tests.conftest import ROOT


def test_demo_runs_and_finds_the_planted_relations(tmp_path):
    """Also guards: the demo not saying how many epochs it ran or what its numbers mean, and its
    results interleaved with its log lines (stdout and stderr as a terminal shows them: one
    stream, unbuffered)."""
    p = subprocess.run([sys.executable, "-m", "w2v_dist", "demo", "--output", str(tmp_path), "--tokens", "400000",
                        "--epochs", "2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                       env={**os.environ, "PYTHONUNBUFFERED": "1"}, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:]
    lines = p.stdout.splitlines()
    logs = [i for i, line in enumerate(lines) if re.match(r"\d\d:\d\d:\d\d (INFO|WARNING) ", line)]
    first = lines.index("== w2v-dist demo: results ==")
    assert logs and max(logs) < first and all(re.match(r"\d\d:\d\d:\d\d ", line) or not line.strip()
                                               for line in lines[:first]), p.stdout  # nothing printed before
    out = "\n".join(lines[first:])
    assert "sg d=64, 2 epochs:" in out and "mean negative-sampling loss per training example over the last" in out
    assert "planted questions" in out and "chance is about 0%" in out and "(1: the same order, 0: unrelated)" in out
    assert "Total accuracy" in out and "spearman" in out and f"everything is in {tmp_path}" in out
    results = json.loads((tmp_path / "results.json").read_text())
    (analogies,) = results["analogies"].values()
    (similarity,) = results["similarity"].values()
    # a small corpus (the default demo uses 2M tokens and reaches ~100%); chance is ~0 for both
    assert analogies["accuracy"] > 0.25 and similarity["spearman"] > 0.5
    summary = json.loads((tmp_path / "run/summary.json").read_text())
    assert f"loss      {summary['final_loss']:.3f}: " in out and summary["epochs"] == 2
    for name in ("shards/part-00000.parquet", "run/summary.json", "run/vectors.npy", "vectors.bin",
                 "analogies.txt", "similarity.tsv"):
        assert (tmp_path / name).exists(), name
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "pip install 'w2v-dist[viz]'" in out
    else:  # the demo says where its pictures are, and they are there
        for name in ("curves", "map"):
            assert f"{tmp_path / 'plots' / name}.png" in out and (tmp_path / "plots" / f"{name}.png").exists()
