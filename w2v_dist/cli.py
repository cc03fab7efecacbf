"""``w2v-dist`` (also ``python -m w2v_dist``): parse, build a config, call the library.

    w2v-dist demo
    w2v-dist prepare corpus.txt.gz --output data/shards/
    w2v-dist train data/shards/ --output runs/r1 --model sg --dim 100 --epochs 5
    w2v-dist export runs/r1 --format word2vec-binary --output r1.bin
    w2v-dist eval r1.bin --analogies questions-words.txt --similarity wordsim353.tsv
    w2v-dist similar r1.bin king --top 10
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from torch.distributed.elastic.multiprocessing.errors import record

from w2v_dist.config import DEFAULT_SPLIT_PATTERN, ConfigError, TokenizerConfig, TrainConfig

# Errors a user can fix: one line, no traceback, exit code 2.
def _user_errors() -> tuple[type[BaseException], ...]:
    from w2v_dist.corpus.shards import CorpusError
    from w2v_dist.storage import StorageError
    from w2v_dist.train import RunExistsError
    from w2v_dist.vocab import VocabError
    errors = [ConfigError, CorpusError, VocabError, RunExistsError, StorageError, FileNotFoundError]
    try:
        from w2v_dist.prepare import PrepareError
        errors.append(PrepareError)
    except ImportError:
        pass
    return tuple(errors)


def _diverged() -> type[BaseException]:
    from w2v_dist.progress import DivergedError
    return DivergedError


def _storage_options(text: str | None, flag: str = "--storage-options") -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{flag} must be a JSON object, e.g. '{{\"anon\": true}}' ({e})") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{flag} must be a JSON object, e.g. '{{\"anon\": true}}'")
    return value


def _output_storage_options(text: str | None) -> dict | None:
    """``--output-storage-options``; None when not given (the output then shares --storage-options)."""
    return None if text is None else _storage_options(text, "--output-storage-options")


OUTPUT_OPTIONS_HELP = "JSON object passed to fsspec for --output when it is on another store (default: --storage-options)"


def setup_logging(level: str, quiet: bool, rank: int, world: int) -> None:
    """w2v_dist's loggers at ``level`` (at least WARNING with ``quiet``); every other library's at
    WARNING (azure-core logs every HTTP request and response at INFO), except with ``debug``,
    which turns on everything."""
    ours = getattr(logging, level.upper())
    if quiet:
        ours = max(ours, logging.WARNING)
    logging.basicConfig(level=logging.DEBUG if level == "debug" else max(ours, logging.WARNING), datefmt="%H:%M:%S",
                        format=("%(asctime)s " + (f"[rank {rank}] " if world > 1 else "") + "%(levelname)s %(message)s"))
    logging.getLogger("w2v_dist").setLevel(ours)


def _add_tokenizer_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("tokenizer")
    g.add_argument("--no-lowercase", dest="lowercase", action="store_false", help="keep case")
    g.add_argument("--split-pattern", default=DEFAULT_SPLIT_PATTERN,
                   help="RE2 regex of separators (default: %(default)s, i.e. non-word characters)")
    g.add_argument("--max-sentence-length", type=int, default=1000,
                   help="cut longer rows into pieces of this many words (default: %(default)s, as word2vec.c)")


def _add_train_args(p: argparse.ArgumentParser) -> None:
    d = TrainConfig.__dataclass_fields__
    p.add_argument("corpus", help="Parquet shards: a directory/prefix, a file or a glob (any fsspec URI)")
    p.add_argument("--output", required=True, help="run directory (any fsspec URI)")
    p.add_argument("--model", choices=("sg", "cbow"), default="sg", help="skip-gram or CBOW (default: sg)")
    for name, typ, help_ in [
        ("dim", int, "vector size"), ("window", int, "max window (drawn uniformly in [1, window])"),
        ("negative", int, "negatives per example"), ("sample", float, "subsampling threshold (0: off)"),
        ("min_count", int, "drop words rarer than this"), ("epochs", int, "passes over the corpus"),
        ("min_alpha", float, "final learning rate"),
        ("batch_words", int, "words per chunk from the reader: one training step"), ("seed", int, "random seed"),
        ("slice_words", int, "words a kernel thread trains in word2vec.c's order before the threads' updates merge"),
        ("batch_pairs", int, "--kernel torch: examples per summed mini-batch update"),
        ("sync_every", int, "several ranks: steps between syncs of the frequent rows"),
        ("sync_rows", int, "several ranks: rows in the smallest sync"),
        ("workers", int, "DataLoader reader processes (0: read in the trainer)"),
        ("threads", int, "kernel threads (0: the rank's share of the cores, less one for its reader)"), ("log_every", float, "seconds between log lines"),
    ]:
        p.add_argument("--" + name.replace("_", "-"), type=typ, default=d[name].default,
                       help=f"{help_} (default: %(default)s)")
    p.add_argument("--sync", choices=("local", "step"), default="local",
                   help="several ranks: local (train locally, sync frequent rows every --sync-every steps; default) "
                        "or step (every step, all rows, changes summed: N ranks act as one process's N threads; "
                        "docs/distributed.md)")
    p.add_argument("--sync-combine", choices=("mean", "rowmean", "sum"), default="mean",
                   help="several ranks: how the ranks' changes of a row combine (default: mean, with the learning rate times the number of ranks; docs/distributed.md)")
    p.add_argument("--no-share-negatives", dest="share_negatives", action="store_false",
                   help="skip-gram: draw negatives for every (context, centre) example as word2vec.c does, "
                        "not once per centre word (slower; docs/training.md)")
    p.add_argument("--nondeterministic", action="store_true",
                   help="threads update the tables in place, racing (gensim's Hogwild): faster, not repeatable")
    p.add_argument("--alpha", type=float, default=None, help="initial learning rate (default: 0.025 sg, 0.05 cbow)")
    p.add_argument("--max-vocab", type=int, default=None, help="keep only the N most frequent words")
    p.add_argument("--max-vocab-size", type=int, default=None,
                   help="prune the raw count table above this many distinct tokens while counting (gensim's max_vocab_size)")
    p.add_argument("--text-column", default="text", help="string or list<string> column (default: text)")
    p.add_argument("--kernel", choices=("auto", "numba", "torch"), default="auto", help="hot-step implementation")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu); under torchrun cuda means cuda:LOCAL_RANK")
    p.add_argument("--backend", default=None, help="process-group backend (default: nccl on cuda, gloo on cpu)")
    p.add_argument("--cache-dir", default=None,
                   help="node-local directory for a copy of a remote vocabulary and the encoded corpus "
                        "(default: under the system temp dir)")
    p.add_argument("--token-cache-gb", type=float, default=4.0,
                   help="encoded corpus this process may cache in --cache-dir, so later epochs skip reading and "
                        "tokenizing (0: off; default: %(default)s)")
    p.add_argument("--log-all-ranks", action="store_true", help="log from every rank, not only rank 0")
    p.add_argument("--storage-options", default=None,
                   help="JSON object passed to fsspec for the corpus (and --output); docs/storage.md")
    p.add_argument("--output-storage-options", default=None, help=OUTPUT_OPTIONS_HELP)
    p.add_argument("--overwrite", action="store_true", help="replace an existing run in --output")
    p.add_argument("--force-resume", action="store_true",
                   help="resume even if settings that change the result differ from the run's (they are listed)")
    p.add_argument("--checkpoint-every", type=int, default=None, help="optimizer steps between checkpoints")
    p.add_argument("--checkpoint-minutes", type=float, default=None, help="minutes between checkpoints")
    p.add_argument("--keep-checkpoints", type=int, default=2, help="newest checkpoints kept (>= 2; default: 2)")
    p.add_argument("--on-bad-shard", choices=("error", "skip"), default="error",
                   help="unreadable files, row groups or rows: stop with an error (default) or skip and count them")
    _add_tokenizer_args(p)


def config_from_args(a: argparse.Namespace) -> TrainConfig:
    tok = TokenizerConfig(lowercase=a.lowercase, split_pattern=a.split_pattern, max_sentence_length=a.max_sentence_length)
    return TrainConfig(
        corpus=a.corpus, output=a.output, model=a.model, dim=a.dim, window=a.window, negative=a.negative,
        sample=a.sample, min_count=a.min_count, max_vocab=a.max_vocab, max_vocab_size=a.max_vocab_size,
        epochs=a.epochs, alpha=a.alpha, min_alpha=a.min_alpha, batch_words=a.batch_words, batch_pairs=a.batch_pairs,
        slice_words=a.slice_words, share_negatives=a.share_negatives, nondeterministic=a.nondeterministic,
        sync=a.sync, sync_every=a.sync_every, sync_rows=a.sync_rows, sync_combine=a.sync_combine,
        seed=a.seed, text_column=a.text_column, tokenizer=tok, kernel=a.kernel, threads=a.threads, workers=a.workers,
        device=a.device, backend=a.backend, cache_dir=a.cache_dir, token_cache_gb=a.token_cache_gb,
        log_every=a.log_every, storage_options=_storage_options(a.storage_options),
        output_storage_options=_output_storage_options(a.output_storage_options),
        overwrite=a.overwrite, force_resume=a.force_resume, checkpoint_every=a.checkpoint_every,
        checkpoint_minutes=a.checkpoint_minutes, keep_checkpoints=a.keep_checkpoints, on_bad_shard=a.on_bad_shard)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="w2v-dist", description="Streaming, distributed word2vec on PyTorch.")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info",
                        help="w2v-dist's own log (default: %(default)s); other libraries log warnings and errors "
                             "only, except with debug, which shows everything (every HTTP request, say)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="generate a synthetic corpus, train, evaluate, print results")
    p.add_argument("--output", default=None, help="where to write everything (default: a new temp directory)")
    p.add_argument("--tokens", type=int, default=2_000_000, help="corpus size (default: %(default)s)")
    p.add_argument("--model", choices=("sg", "cbow"), default="sg")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--seed", type=int, default=1)

    p = sub.add_parser("prepare", help="text / JSONL / Parquet -> Parquet shards with a `text` column")
    p.add_argument("inputs", nargs="+", help="files, directories or globs (any fsspec URI; .gz/.bz2/.zst read as such)")
    p.add_argument("--output", required=True, help="directory for part-NNNNN.parquet")
    p.add_argument("--rows-per-shard", type=int, default=1_000_000)
    p.add_argument("--rows-per-row-group", type=int, default=100_000)
    p.add_argument("--text-field", default="text", help="JSONL field / Parquet column to take (default: text)")
    p.add_argument("--storage-options", default=None, help="JSON object passed to fsspec for the inputs (and --output)")
    p.add_argument("--output-storage-options", default=None, help=OUTPUT_OPTIONS_HELP)
    p.add_argument("--overwrite", action="store_true")

    _add_train_args(sub.add_parser("train", help="train word vectors on Parquet shards"))

    p = sub.add_parser("export", help="write a run's vectors as word2vec text/binary or .npy")
    p.add_argument("run", help="run directory")
    p.add_argument("--format", choices=("word2vec", "word2vec-binary", "npy"), default="word2vec-binary")
    p.add_argument("--output", required=True)
    p.add_argument("--storage-options", default=None, help="JSON object passed to fsspec for the run (and --output)")
    p.add_argument("--output-storage-options", default=None, help=OUTPUT_OPTIONS_HELP)

    p = sub.add_parser("eval", help="analogy accuracy and word-similarity correlation")
    p.add_argument("vectors", help="a run directory, a word2vec .bin/.txt or a .npy")
    p.add_argument("--analogies", action="append", default=[], help="Google analogy file (repeatable)")
    p.add_argument("--similarity", action="append", default=[], help="word-pair similarity file (repeatable)")
    p.add_argument("--restrict-vocab", type=int, default=300_000, help="only the N most frequent words (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = sub.add_parser("similar", help="nearest neighbours of a word (or of a+b-c)")
    p.add_argument("vectors", help="a run directory, a word2vec .bin/.txt or a .npy")
    p.add_argument("words", nargs="+", help="positive words")
    p.add_argument("--negative", nargs="*", default=[], help="words to subtract")
    p.add_argument("--top", type=int, default=10)
    return parser


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    quiet = args.quiet or (rank != 0 and not getattr(args, "log_all_ranks", False))
    setup_logging(args.log_level, quiet, rank, world)
    if args.command == "demo":
        from w2v_dist.demo import demo
        demo(output=args.output, tokens=args.tokens, model=args.model, epochs=args.epochs, seed=args.seed)
    elif args.command == "prepare":
        from w2v_dist.prepare import prepare
        summary = prepare(args.inputs, args.output, rows_per_shard=args.rows_per_shard,
                          rows_per_row_group=args.rows_per_row_group, text_field=args.text_field,
                          storage_options=_storage_options(args.storage_options),
                          output_storage_options=_output_storage_options(args.output_storage_options),
                          overwrite=args.overwrite)
        print(json.dumps({k: v for k, v in summary.items() if k != "shards"} | {"shards": len(summary["shards"])}))
    elif args.command == "train":
        from w2v_dist.train import train
        summary = train(config_from_args(args))
        if summary.get("interrupted"):
            print(f"w2v-dist: stopped at step {summary['steps']}; a checkpoint is in {args.output}. "
                  "Run the same command to resume.", file=sys.stderr)
            return 128 + int(summary["signal"])
    elif args.command == "export":
        from w2v_dist.vectors import Vectors
        so = _storage_options(args.storage_options)
        out_so = _output_storage_options(args.output_storage_options)
        Vectors.load(args.run, so).save(args.output, args.format, so if out_so is None else out_so)
        print(args.output)
    elif args.command == "eval":
        from w2v_dist.evaluate import evaluate_analogies, evaluate_similarity, format_report
        from w2v_dist.vectors import Vectors
        if not args.analogies and not args.similarity:
            raise ConfigError("eval needs --analogies FILE and/or --similarity FILE")
        vectors = Vectors.load(args.vectors)
        results = {"vectors": args.vectors,
                   "analogies": {f: evaluate_analogies(vectors, f, restrict_vocab=args.restrict_vocab) for f in args.analogies},
                   "similarity": {f: evaluate_similarity(vectors, f, restrict_vocab=args.restrict_vocab) for f in args.similarity}}
        print(json.dumps(results, indent=2) if args.json else format_report(results))
    elif args.command == "similar":
        from w2v_dist.vectors import Vectors
        vectors = Vectors.load(args.vectors)
        for word, score in vectors.most_similar(positive=args.words, negative=args.negative, topn=args.top):
            print(f"{word}\t{score:.4f}")
    return 0


@record
def main(argv: list[str] | None = None) -> int:
    try:
        return run(argv)
    except _user_errors() as e:
        lines = [line for line in str(e).strip().splitlines() if line.strip()] or [type(e).__name__]
        msg = lines[0]
        if msg.startswith("Caught ") and len(lines) > 1:  # re-raised from a DataLoader worker
            msg = lines[-1].split(": ", 1)[-1]
        print(f"w2v-dist: error: {msg}", file=sys.stderr)
        return 2
    except _diverged() as e:  # the run stopped itself: the vectors would be useless
        print(f"w2v-dist: error: {e}", file=sys.stderr)
        return 3
    except KeyError as e:  # an unknown word in `similar`
        print(f"w2v-dist: error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    except Exception as e:  # a store that stopped answering where no caller named the object
        from w2v_dist.storage import unavailable, unavailable_error
        if not unavailable(e):
            raise
        print(f"w2v-dist: error: {unavailable_error(None, e)}", file=sys.stderr)
        return 2
