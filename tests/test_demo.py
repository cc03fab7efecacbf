"""`w2v-dist demo`: the whole pipeline on the generated language, through the real entry point."""

from __future__ import annotations

import json

from tests.conftest import cli


def test_demo_runs_and_finds_the_planted_relations(tmp_path):
    p = cli("demo", "--output", str(tmp_path), "--tokens", "400000", "--epochs", "2")
    out = p.stdout
    assert "Total accuracy" in out and "spearman" in out and f"everything is in {tmp_path}" in out
    results = json.loads((tmp_path / "results.json").read_text())
    (analogies,) = results["analogies"].values()
    (similarity,) = results["similarity"].values()
    # a small corpus (the default demo uses 2M tokens and reaches ~100%); chance is ~0 for both
    assert analogies["accuracy"] > 0.25 and similarity["spearman"] > 0.5
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
