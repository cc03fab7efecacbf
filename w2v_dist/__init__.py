"""w2v_dist: streaming, distributed word2vec (skip-gram and CBOW with negative sampling) on PyTorch.

>>> import w2v_dist
>>> summary = w2v_dist.train("data/shards/", "runs/r1", model="sg", dim=100, epochs=5)  # doctest: +SKIP
>>> manifest = w2v_dist.encode("data/shards/", "data/encoded/")   # optional: tokenize once  # doctest: +SKIP
>>> vectors = w2v_dist.Vectors.load("runs/r1")                                            # doctest: +SKIP
>>> vectors.most_similar("king", topn=5)                                                  # doctest: +SKIP
"""

from __future__ import annotations

import os

__version__ = "0.1.0"


def train(corpus: str | os.PathLike, output: str | os.PathLike, **options) -> dict:
    """Train on Parquet shards at ``corpus``, writing the run to ``output``; options are the CLI's
    flags as keywords, :class:`w2v_dist.config.TrainConfig` fields (``model``, ``dim``, ``window``,
    ``epochs``, ...; the tokenizer's too: ``lowercase``, ``split_pattern``, ``normalize``,
    ``max_sentence_length``). Bad values raise :class:`w2v_dist.config.ConfigError` (a ValueError)
    before anything is written.

    Returns the run's summary (as ``summary.json``); stopped by a signal (Ctrl-C, SIGTERM) after
    writing its checkpoint, ``{"interrupted": True, "signal": N, "steps": S}``: call it again to
    resume. Reader processes (``workers``) are spawned: call it under ``if __name__ == "__main__":``."""
    from w2v_dist.config import TrainConfig
    from w2v_dist.training import train as _train

    _refuse_in_a_reader("train")
    return _train(TrainConfig(corpus=os.fspath(corpus), output=os.fspath(output), **_tokenizer(options)))


def encode(corpus: str | os.PathLike, output: str | os.PathLike, **options) -> dict:
    """Count and tokenize the Parquet shards at ``corpus`` once, writing their token ids and
    vocabulary to ``output`` (``w2v-dist encode``; ``train`` on ``output`` then skips both); options
    are :class:`w2v_dist.encoding.EncodeConfig` fields (``min_count``, ``text_column``, ...; the
    tokenizer's as for :func:`train`). Returns the manifest."""
    from w2v_dist.encoding import EncodeConfig, encode_corpus

    _refuse_in_a_reader("encode")
    return encode_corpus(EncodeConfig(corpus=os.fspath(corpus), output=os.fspath(output), **_tokenizer(options)))


def _tokenizer(options: dict) -> dict:
    """The tokenizer's keywords (the CLI's flags) gathered into ``tokenizer``, as a dict of them is."""
    from w2v_dist.config import TokenizerConfig

    names = [f for f in TokenizerConfig.__dataclass_fields__ if f in options]
    given = options.pop("tokenizer", None)
    if names or isinstance(given, dict):
        options["tokenizer"] = TokenizerConfig(**{**(given or {}), **{f: options.pop(f) for f in names}})
    elif given is not None:
        options["tokenizer"] = given
    return options


def _refuse_in_a_reader(what: str) -> None:
    """A script that calls train at import, unguarded, calls it again in every reader process it
    spawns (as it re-imports the script): say so, not a lock held by the run itself."""
    import multiprocessing

    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise RuntimeError(f"w2v_dist.{what}() was called while a reader process started: the script calls it "
                           "when it is imported. Put the call under `if __name__ == \"__main__\":` (readers are "
                           "spawned processes, as with any DataLoader)")


# what a caller may catch, by name on the package, imported when first asked for (w2v_dist.training
# loads torch: seconds): each is a user's error that the CLI says in one line
_LAZY = {"Vectors": "w2v_dist.vectors", "ConfigError": "w2v_dist.config", "CorpusError": "w2v_dist.corpus.shards",
         "StorageError": "w2v_dist.storage", "VocabError": "w2v_dist.vocab", "RunExistsError": "w2v_dist.training",
         "RunLockedError": "w2v_dist.owner", "DivergedError": "w2v_dist.progress", "PrepareError": "w2v_dist.prepare",
         "VectorsFormatError": "w2v_dist.vectors", "EvaluationError": "w2v_dist.evaluate"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'w2v_dist' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
