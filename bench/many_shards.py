"""Ten thousand shards in a local S3 server (moto): how long ``train`` takes to its first step, for
1 and 2 ranks, how many requests the server saw by then, and the size of ``plan.json``.

    python bench/many_shards.py                       # 10,000 shards, 1 and 2 ranks
    python bench/many_shards.py --shards 1000 --ranks 2

Each shard is a small Parquet file in the layout of public text datasets (``train-00000-of-10000
.parquet``) with other columns beside ``text`` (an id, a url, a metadata string longer than the
text), which the run must not read. A run is timed from its command's start to its first step's
log line (``--log-every 0``), then stopped; the requests are moto's own log lines up to then, by
method. Start-up before the first step is: list the shards, read every footer (the manifest),
count the vocabulary (every row group read once, split among the ranks), write the run's files.
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import w2v_dist_command  # noqa: E402

BUCKET = "w2v-bench"
KEY = {"key": "testing", "secret": "testing"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto(log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    for _ in range(300):
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=1).close()
            return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"moto did not start: {log.read_text()[-2000:]}")


def write_shards(options: dict, n: int, rows: int) -> int:
    import boto3
    import pyarrow as pa
    import pyarrow.parquet as pq
    import s3fs

    boto3.client("s3", endpoint_url=options["client_kwargs"]["endpoint_url"], region_name="us-east-1",
                 aws_access_key_id="testing", aws_secret_access_key="testing").create_bucket(Bucket=BUCKET)
    fs = s3fs.S3FileSystem(**options)
    words = "the of and to in a is that for it as was with be by on not he this are or his from at".split()
    total, batch = 0, {}
    for i in range(n):
        text = [" ".join(words[(i * 7 + r * 3 + k) % len(words)] for k in range(12)) + f" w{i % 997}"
                for r in range(rows)]
        table = pa.table({"id": pa.array(range(i * rows, (i + 1) * rows), pa.int64()),
                          "url": [f"https://example.org/{i}/{r}" for r in range(rows)],
                          "text": text,
                          "meta": [json.dumps({"shard": i, "row": r, "pad": "x" * 200}) for r in range(rows)]})
        buf = io.BytesIO()
        pq.write_table(table, buf)
        batch[f"{BUCKET}/shards/train-{i:05d}-of-{n:05d}.parquet"] = buf.getvalue()
        total += len(buf.getvalue())
        if len(batch) == 500 or i == n - 1:
            fs.pipe(batch)  # concurrent PUTs
            batch = {}
    return total


def requests_so_far(log: Path) -> collections.Counter:
    # werkzeug's request lines, colour codes and all: "\x1b[35m\x1b[1mGET /bucket/key HTTP/1.1\x1b[0m" 206
    return collections.Counter(m.group(1) for m in re.finditer(r'"(?:\x1b\[[0-9;]*m)*(GET|HEAD|PUT|POST|DELETE) /',
                                                              log.read_text()))


def first_step(ranks: int, options: dict, log: Path, out: str, timeout: float) -> dict:
    so = json.dumps(options)
    train = ["train", f"s3://{BUCKET}/shards/", "--output", out, "--epochs", "1", "--dim", "16", "--min-count", "1",
             "--threads", "1", "--log-every", "0", "--storage-options", so, "--overwrite"]
    cmd = [*w2v_dist_command(ranks), *train]
    before = requests_so_far(log)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                         start_new_session=True)
    result: dict = {}
    lines: list[str] = []

    def read():
        for line in p.stderr:
            lines.append(line)
            if "vocabulary:" in line and "vocab_s" not in result:
                result["vocab_s"] = time.perf_counter() - t0
            if " step " in line and "first_step_s" not in result:
                result["first_step_s"] = time.perf_counter() - t0
                return
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    os.killpg(p.pid, signal.SIGKILL)  # the run we started: its first step is all we time
    p.wait()
    if "first_step_s" not in result:
        raise SystemExit(f"{ranks} rank(s): no step within {timeout:.0f}s:\n{''.join(lines)[-3000:]}")
    after = requests_so_far(log)
    result["requests"] = dict(after - before)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shards", type=int, default=10_000)
    ap.add_argument("--rows", type=int, default=20, help="rows per shard (one row group)")
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--timeout", type=float, default=1800, help="seconds a run may take to its first step")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "moto.log"
        proc, url = start_moto(log)
        try:
            options = {**KEY, "client_kwargs": {"endpoint_url": url, "region_name": "us-east-1"}}
            t = time.perf_counter()
            size = write_shards(options, args.shards, args.rows)
            print(f"{args.shards} shards, {size / 1e6:.1f} MB, written in {time.perf_counter() - t:.0f}s", flush=True)
            import s3fs
            fs = s3fs.S3FileSystem(**options)
            rows = []
            for ranks in args.ranks:
                out = f"s3://{BUCKET}/runs/r{ranks}"
                r = first_step(ranks, options, log, out, args.timeout)
                r["ranks"] = ranks
                fs.invalidate_cache()
                r["plan_bytes"] = fs.size(f"{BUCKET}/runs/r{ranks}/plan.json")
                rows.append(r)
                print(json.dumps(r), flush=True)
        finally:
            proc.terminate()
            proc.wait()
    print("\n| ranks | to the manifest and vocabulary (s) | to the first step (s) | GET | HEAD | plan.json |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        q = r["requests"]
        print(f"| {r['ranks']} | {r.get('vocab_s', float('nan')):.1f} | {r['first_step_s']:.1f} | {q.get('GET', 0)} | "
              f"{q.get('HEAD', 0)} | {r['plan_bytes'] / 1e6:.2f} MB |")
    if args.json:
        Path(args.json).write_text(json.dumps({"shards": args.shards, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
