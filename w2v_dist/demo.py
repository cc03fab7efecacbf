"""``w2v-dist demo``: the whole pipeline on a corpus the package generates (no download).

A synthetic language with planted relations (see :mod:`w2v_dist.synthetic`) is written as
Parquet shards, trained on, exported, evaluated on its planted analogies and similarities; the
results (each number with what it means) and a few nearest-neighbour lists are printed after the
last log line, with where everything was written.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time

import pyarrow as pa
import pyarrow.parquet as pq

from w2v_dist.config import TrainConfig
from w2v_dist.evaluate import evaluate_analogies, evaluate_similarity, format_report
from w2v_dist.progress import FINAL_LOSS_WORDS
from w2v_dist.synthetic import generate
from w2v_dist.training import train
from w2v_dist.vectors import Vectors

log = logging.getLogger(__name__)


def demo(output: str | None = None, tokens: int = 2_000_000, model: str = "sg", epochs: int = 2,
         seed: int = 1, dim: int = 64, shards: int = 4) -> dict:
    out = output or tempfile.mkdtemp(prefix="w2v_dist-demo-")
    os.makedirs(out, exist_ok=True)
    t0 = time.perf_counter()
    corpus = generate(n_tokens=tokens, seed=seed)
    data_dir = os.path.join(out, "shards")
    os.makedirs(data_dir, exist_ok=True)
    n = len(corpus.sentences)
    per = -(-n // shards)
    for i in range(shards):
        part = corpus.sentences[i * per:(i + 1) * per]
        pq.write_table(pa.table({"text": part}), os.path.join(data_dir, f"part-{i:05d}.parquet"),
                       row_group_size=20_000, compression="zstd")
    files = corpus.write(out)
    log.info("demo: generated %d sentences (~%d tokens) in %.1fs -> %s", n, tokens, time.perf_counter() - t0, data_dir)

    run_dir = os.path.join(out, "run")
    cfg = TrainConfig(corpus=data_dir, output=run_dir, model=model, dim=dim, epochs=epochs, seed=seed,
                      min_count=5, overwrite=True, workers=1, log_every=0.25)  # points enough for the curves
    summary = train(cfg)
    vectors = Vectors.load(run_dir)
    bin_path = os.path.join(out, "vectors.bin")
    vectors.save(bin_path, "word2vec-binary")
    results = {"analogies": {files["analogies"]: evaluate_analogies(vectors, files["analogies"])},
               "similarity": {files["similarity"]: evaluate_similarity(vectors, files["similarity"])}}
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    # the results after every log line, and what each number means
    (analogies,) = results["analogies"].values()
    (similarity,) = results["similarity"].values()
    start_loss = (1 + cfg.negative) * math.log(2)
    print(f"""
== w2v-dist demo: results ==
corpus    {n:,} sentences of a generated language (~{tokens:,} tokens) with planted relations (seed {seed})
trained   {model} d={dim}, {epochs} epoch{"s" if epochs != 1 else ""}: {summary["words"]:,} words (in-vocabulary, all epochs) in {summary["elapsed_s"]:.1f}s = {summary["words_per_s"]:,.0f} words/s
loss      {summary["final_loss"]:.3f}: the mean negative-sampling loss per training example over the last {min(FINAL_LOSS_WORDS, summary["words"]):,} words; it starts at {start_loss:.3f} ((1 + negative) ln 2) and lower means the model predicts its contexts better
analogies {analogies["correct"]} of {analogies["correct"] + analogies["incorrect"]} planted questions "a is to b as c is to ?" answered right ({100 * analogies["accuracy"]:.1f}%; chance is about 0%)
similarity Spearman {similarity["spearman"]:.3f} between the vectors' cosines and the planted similarity grades of {similarity["pairs"]} word pairs (1: the same order, 0: unrelated)

{format_report(results)}

nearest neighbours (cosine similarity, 1 = same direction) of a few words:""")
    for word in corpus.probes:
        if word in vectors:
            near = ", ".join(f"{w} ({s:.2f})" for w, s in vectors.most_similar(word, topn=5))
            print(f"  {word:>12}: {near}")
    print(f"\neverything is in {out}: shards/, run/ (config, vocab, checkpoints, metrics.jsonl, vectors.npy, "
          f"summary.json), vectors.bin, {os.path.basename(files['analogies'])}, "
          f"{os.path.basename(files['similarity'])}, results.json")
    show(run_dir, os.path.join(out, "plots"), corpus.probes)
    print(f"total {time.perf_counter() - t0:.1f}s")
    return {"output": out, "summary": summary, "results": results}


def show(run_dir: str, plots_dir: str, probes: list[str]) -> dict[str, str]:
    """Draw the run's curves and a map of the probe words (when matplotlib is installed) and say
    where they and the TensorBoard scalars are, or how to get them."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("curves and a map of the words: pip install 'w2v-dist[viz]', then w2v-dist plot "
              f"{run_dir} --output {plots_dir}")
        return {}
    from w2v_dist.plot import plot_run
    from w2v_dist.vectors import Vectors

    vectors = Vectors.load(run_dir)
    chosen = [w for w in probes if w in vectors]
    for word in list(chosen):  # each probe with its nearest neighbours: the clusters to look for
        chosen += [w for w, _ in vectors.most_similar(word, topn=3)]
    paths = plot_run(run_dir, plots_dir, words=list(dict.fromkeys(chosen)) if len(chosen) >= 3 else None)
    print(f"training curves: {paths['curves']}\nmap of the words: {paths['map']}")
    tensorboard = os.path.join(run_dir, "tensorboard")
    if os.path.isdir(tensorboard):
        print(f"TensorBoard:      tensorboard --logdir {tensorboard}")
    return paths
