"""s3:// end to end against a real S3-compatible server (moto in server mode, started here)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import cli, gcide_lines

moto_server = pytest.importorskip("moto.server")
s3fs = pytest.importorskip("s3fs")


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    options = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": f"http://{host}:{port}",
                                                                        "region_name": "us-east-1"}}
    import boto3  # comes with moto
    boto3.client("s3", endpoint_url=f"http://{host}:{port}", region_name="us-east-1", aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(Bucket="corpus-bucket")
    fs = s3fs.S3FileSystem(**options)
    lines = gcide_lines(8000)
    for i in range(2):
        with fs.open(f"corpus-bucket/shards/part-{i:05d}.parquet", "wb") as f:
            pq.write_table(pa.table({"text": lines[i * 4000:(i + 1) * 4000]}), f, row_group_size=1000)
    yield fs, options
    server.stop()


def test_train_export_from_and_to_s3(s3, tmp_path):
    fs, options = s3
    so = json.dumps(options)
    cli("train", "s3://corpus-bucket/shards/", "--output", "s3://corpus-bucket/runs/r1", "--epochs", "1",
        "--dim", "16", "--min-count", "3", "--workers", "1", "--storage-options", so,
        "--cache-dir", str(tmp_path / "cache"), "--checkpoint-every", "20")
    names = set(fs.ls("corpus-bucket/runs/r1"))
    for name in ("config.json", "plan.json", "vocab", "checkpoints", "metrics.jsonl", "tensorboard", "vectors.npy",
                 "summary.json"):
        assert f"corpus-bucket/runs/r1/{name}" in names, name
    # the remote vocabulary was mapped from one node-local copy
    assert list((tmp_path / "cache").glob("vocab-*/counts.npy"))
    cli("export", "s3://corpus-bucket/runs/r1", "--format", "word2vec-binary", "--output", str(tmp_path / "v.bin"),
        "--storage-options", so)
    with fs.open("corpus-bucket/runs/r1/vectors.npy", "rb") as f:
        vectors = np.load(f)
    gensim = pytest.importorskip("gensim")
    kv = gensim.models.KeyedVectors.load_word2vec_format(str(tmp_path / "v.bin"), binary=True)
    np.testing.assert_array_equal(kv.vectors, vectors)
