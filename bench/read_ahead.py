"""Reading from a local S3 server (moto) while training: bytes fetched per corpus byte, per pass,
and tokens per second streamed (the reader alone) against tokens per second trained.

    python bench/read_ahead.py                      # 100,000 gcide lines, 1 rank, 2 epochs
    python bench/read_ahead.py --lines 20000 --epochs 1
    python bench/read_ahead.py --latency 0.05       # every request to the store 50 ms late

The corpus is prepared into the bucket (``--rows-per-row-group``); every request of the run then
goes through tests/flaky_proxy.py in counting mode (no faults), which adds up the bytes of the
server's answers. ``train`` runs with ``--token-cache-gb 0`` so that every epoch reads the store
(with the cache, epochs after the first read nothing). The vocabulary pass and the epochs are
told apart by the log line that ends the former (``--token-cache-gb 4``: the default cache). The reader alone: the run's own
``CorpusStream`` over the same shards, iterated without training, in this process.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.many_shards import BUCKET, KEY, start_moto  # noqa: E402
from tests.conftest import gcide_lines  # noqa: E402
from tests.flaky_proxy import FlakyProxy  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=100_000)
    ap.add_argument("--rows-per-row-group", type=int, default=5_000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--token-cache-gb", default="0", help="0: every epoch reads the store (default)")
    ap.add_argument("--latency", type=float, default=0.0,
                    help="seconds the proxy holds every request before forwarding it (a distant store)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_moto(Path(tmp) / "moto.log")
        proxy = FlakyProxy(url, every=1 if args.latency else 0, faults=("delay",), delay=args.latency).start()
        try:
            direct = {**KEY, "client_kwargs": {"endpoint_url": url, "region_name": "us-east-1"}}
            via = {**KEY, "client_kwargs": {"endpoint_url": proxy.url, "region_name": "us-east-1"}}
            import boto3
            import s3fs
            boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                         aws_secret_access_key="testing").create_bucket(Bucket=BUCKET)
            text = Path(tmp) / "corpus.txt"
            text.write_text("\n".join(gcide_lines(args.lines)) + "\n")
            env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
            subprocess.run([sys.executable, "-m", "w2v_dist", "-q", "prepare", str(text), "--output",
                            f"s3://{BUCKET}/shards", "--rows-per-shard", str(4 * args.rows_per_row_group),
                            "--rows-per-row-group", str(args.rows_per_row_group), "--output-storage-options",
                            json.dumps(direct)], check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
            fs = s3fs.S3FileSystem(**direct)
            corpus_bytes = fs.du(f"{BUCKET}/shards")

            cmd = [sys.executable, "-m", "w2v_dist", "train", f"s3://{BUCKET}/shards", "--output",
                   f"s3://{BUCKET}/run", "--epochs", str(args.epochs), "--dim", "100", "--token-cache-gb", args.token_cache_gb,
                   "--storage-options", json.dumps(via), "--cache-dir", str(Path(tmp) / "cache")]
            p = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
            marks: dict = {}

            def read():
                for line in p.stderr:
                    if "vocabulary:" in line and "vocab" not in marks:
                        marks["vocab"] = dict(proxy.body_bytes)
                        marks["vocab_requests"] = len(proxy.log)
            reader = threading.Thread(target=read, daemon=True)
            reader.start()
            p.wait()
            reader.join()
            if p.returncode != 0:
                raise SystemExit(f"train failed ({p.returncode})")
            end = dict(proxy.body_bytes)
            train_requests = collections.Counter(m for m, _, _ in proxy.log[marks["vocab_requests"]:])
            summary = json.loads(fs.cat_file(f"{BUCKET}/run/summary.json"))
            vocab_get = marks["vocab"].get("GET", 0)
            train_get = end.get("GET", 0) - vocab_get

            # the reader alone: the run's CorpusStream over the same shards, one epoch, no training
            from w2v_dist.config import TokenizerConfig
            from w2v_dist.corpus.dataset import CorpusStream
            from w2v_dist.corpus.shards import scan_shards
            plan = json.loads(fs.cat_file(f"{BUCKET}/run/plan.json"))
            shards = scan_shards(f"s3://{BUCKET}/shards", storage_options=via)
            stream = CorpusStream(shards, f"s3://{BUCKET}/run/vocab", TokenizerConfig(), seed=1, epochs=1,
                                  storage_options=via, cache_dir=str(Path(tmp) / "cache"),
                                  row_tokens=[[tuple(x) for x in s] for s in plan["row_tokens"]])
            before, before_requests = proxy.body_bytes["GET"], len(proxy.log)
            t0, tokens = time.perf_counter(), 0
            for chunk in stream:
                tokens += len(chunk.tokens.ids)
            streamed_s = time.perf_counter() - t0
            stream_get = proxy.body_bytes["GET"] - before
            stream_requests = collections.Counter(m for m, _, _ in proxy.log[before_requests:])
        finally:
            proxy.stop()
            proc.terminate()
            proc.wait()
    out = {"lines": args.lines, "epochs": args.epochs, "corpus_bytes": corpus_bytes,
           "vocab_pass_bytes_per_corpus_byte": vocab_get / corpus_bytes,
           "training_bytes_per_corpus_byte_per_epoch": train_get / corpus_bytes / args.epochs,
           "training_requests_per_epoch": {m: n / args.epochs for m, n in sorted(train_requests.items())},
           "reader_alone_bytes_per_corpus_byte": stream_get / corpus_bytes,
           "reader_alone_requests": dict(sorted(stream_requests.items())), "latency_s": args.latency,
           "tokens_per_s_streamed": tokens / streamed_s, "words_per_s_trained": summary["words_per_s"]}
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
