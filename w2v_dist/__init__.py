"""w2v_dist: streaming, distributed word2vec (skip-gram and CBOW with negative sampling) on PyTorch.

>>> import w2v_dist
>>> summary = w2v_dist.train("data/shards/", "runs/r1", model="sg", dim=100, epochs=5)  # doctest: +SKIP
>>> manifest = w2v_dist.encode("data/shards/", "data/encoded/")   # optional: tokenize once  # doctest: +SKIP
>>> vectors = w2v_dist.Vectors.load("runs/r1")                                            # doctest: +SKIP
>>> vectors.most_similar("king", topn=5)                                                  # doctest: +SKIP
"""

from __future__ import annotations

__version__ = "0.1.0"


def train(corpus: str, output: str, **options) -> dict:
    """Train on Parquet shards at ``corpus``, writing the run to ``output``; options are
    :class:`w2v_dist.config.TrainConfig` fields (``model``, ``dim``, ``window``, ``epochs``, ...)."""
    from w2v_dist.config import TokenizerConfig, TrainConfig
    from w2v_dist.training import train as _train

    if isinstance(options.get("tokenizer"), dict):
        options["tokenizer"] = TokenizerConfig(**options["tokenizer"])
    return _train(TrainConfig(corpus=corpus, output=output, **options))


def encode(corpus: str, output: str, **options) -> dict:
    """Count and tokenize the Parquet shards at ``corpus`` once, writing their token ids and
    vocabulary to ``output`` (``w2v-dist encode``; ``train`` on ``output`` then skips both); options
    are :class:`w2v_dist.encoding.EncodeConfig` fields (``min_count``, ``text_column``, ...).
    Returns the manifest."""
    from w2v_dist.config import TokenizerConfig
    from w2v_dist.encoding import EncodeConfig, encode_corpus

    if isinstance(options.get("tokenizer"), dict):
        options["tokenizer"] = TokenizerConfig(**options["tokenizer"])
    return encode_corpus(EncodeConfig(corpus=corpus, output=output, **options))


def __getattr__(name: str):
    if name == "Vectors":
        from w2v_dist.vectors import Vectors
        return Vectors
    raise AttributeError(name)
