"""Parquet shards -> token ids: tokenization (tokenize), the shard manifest (shards), the
streaming dataset and its per-epoch plan (dataset)."""
