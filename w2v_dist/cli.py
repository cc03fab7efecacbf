"""``w2v-dist`` (also ``python -m w2v_dist``): parse, build a config, call the library.

    w2v-dist demo
    w2v-dist prepare corpus.txt.gz --output data/shards/
    w2v-dist encode data/shards/ --output data/encoded/      # optional: tokenize once, for many runs
    w2v-dist train data/shards/ --output runs/r1 --model sg --dim 100 --epochs 5
    w2v-dist export runs/r1 --format word2vec-binary --output r1.bin
    w2v-dist export runs/r1 --format projector --output r1-projector/
    w2v-dist plot runs/r1 --output r1-plots/
    w2v-dist eval r1.bin --analogies questions-words.txt --similarity wordsim353.tsv
    w2v-dist similar r1.bin king --top 10
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import signal
import sys
import time

from w2v_dist.config import DEFAULT_SPLIT_PATTERN, NORMALIZE_FORMS, ConfigError, TokenizerConfig, TrainConfig, alike

# Errors a user can fix: one line, no traceback, exit code 2. Only the modules already loaded can
# have raised theirs, so none is imported here (importing w2v_dist.training would load torch: seconds).
_USER_ERRORS = [("w2v_dist.corpus.shards", "CorpusError"), ("w2v_dist.storage", "StorageError"),
                ("w2v_dist.training", "RunExistsError"), ("w2v_dist.vocab", "VocabError"),
                ("w2v_dist.prepare", "PrepareError"), ("w2v_dist.vectors", "VectorsFormatError"),
                ("w2v_dist.evaluate", "EvaluationError"), ("w2v_dist.plot", "PlotError"),
                ("w2v_dist.owner", "RunLockedError"),
                ("w2v_dist.distributed", "StartError")]


def _user_errors() -> tuple[type[BaseException], ...]:
    loaded = [getattr(sys.modules[m], name) for m, name in _USER_ERRORS if m in sys.modules]
    return (ConfigError, FileNotFoundError, FileExistsError, *loaded)


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows every default, except where the text already says it or there is none."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        d = action.default
        if action.nargs == 0 or d is None or d == [] or "default" in (action.help or ""):  # nargs 0: a switch
            return action.help
        return super()._get_help_string(action)


class _NotRaised(Exception):
    """Stands in for an error class whose module is not loaded (so it cannot have been raised)."""


def _diverged() -> type[BaseException]:
    progress = sys.modules.get("w2v_dist.progress")
    return progress.DivergedError if progress else _NotRaised


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
    if level != "debug":  # gcsfs logs each request out of retries with its traceback; our one line says it
        logging.getLogger("gcsfs").addFilter(_without_traceback)


def _without_traceback(record: logging.LogRecord) -> bool:
    record.exc_info, record.exc_text = None, None
    return True


def _add_tokenizer_args(p: argparse.ArgumentParser, sentences: bool = True) -> None:
    """The tokenizer's flags; ``sentences=False`` leaves out --max-sentence-length (``encode``
    keeps rows whole: a run cuts them, with its own)."""
    g = p.add_argument_group("tokenizer")
    g.add_argument("--no-lowercase", dest="lowercase", action="store_false", help="keep case")
    g.add_argument("--split-pattern", default=DEFAULT_SPLIT_PATTERN,
                   help="RE2 regex of separators (default: %(default)s, i.e. anything but letters, combining "
                        "marks, digits, _ and zero-width joiners)")
    g.add_argument("--normalize", choices=NORMALIZE_FORMS, default="NFC",
                   help="Unicode normalization before lowercasing and splitting (default: %(default)s; "
                        "NFKC also folds compatibility forms such as full-width letters and ligatures)")
    if sentences:
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
        ("slice_words", int, "words a kernel thread trains in word2vec.c's order before the threads' updates merge "
                             "(0: 1,024 / --threads, at least 64: a step of the threads covers about 1,024 words)"),
        ("batch_pairs", int, "--kernel torch (CUDA): examples per summed mini-batch update; larger is faster on a GPU "
                             "but sums more stale updates, which diverged on repetitive text"),
        ("sync_every", int, "several ranks: steps between syncs of the frequent rows (0: 64 at 2 ranks, 16 at more); "
                            "--replicas: steps between averages (0: 64)"),
        ("sync_rows", int, "several ranks: rows in the smallest sync"),
        ("sync_node_every", int, "several nodes: steps between syncs among the ranks of each node, between the "
                                 "syncs of all ranks every --sync-every steps (0: none; needs --sync-combine mean)"),
        ("sync_lr_scale", float, "several ranks, --sync-combine mean: each rank trains at this x the rate "
                                 "(0: the number of ranks, but no rank above a rate of 0.2), and the ranks' summed "
                                 "changes are divided by it, kept between ranks / 2 and ranks"),
        ("workers", int, "DataLoader reader processes (0: read in the trainer)"),
        ("replicas", int, "copies of the tables in this process, each trained by one kernel thread on its part of "
                          "every chunk at replicas x the rate, averaged every --sync-every steps (64 by default): "
                          "local SGD without ranks, repeatable (0: 2 on a CPU of 2-4 cores with --threads 0 and "
                          "--alpha up to 0.1, else 1)"),
        ("threads", int, "kernel threads (0: the rank's share of the cores, less one for its reader; 1, not 2); "
                         "--kernel cuda: warps (0: one per multiprocessor)"),
        ("log_every", float, "seconds between log lines"),
    ]:
        p.add_argument("--" + name.replace("_", "-"), type=typ, default=d[name].default,
                       help=f"{help_} (default: %(default)s)")
    p.add_argument("--sync", choices=("local", "step"), default="local",
                   help="several ranks: local (train locally, sync frequent rows every --sync-every steps; default) "
                        "or step (every step, all rows, the ranks' changes summed: the exact mode, for checking; "
                        "docs/distributed.md)")
    p.add_argument("--sync-combine", choices=("mean", "rowmean", "sum"), default="mean",
                   help="several ranks: how the ranks' changes of a row combine (default: mean, with the learning rate times the number of ranks; docs/distributed.md)")
    p.add_argument("--sync-overlap", action="store_true",
                   help="several ranks, --sync local: sum a sync's changes while the ranks train on, and apply them "
                        "at the next sync (one interval late): the collective's time is hidden, not waited for "
                        "(docs/distributed.md)")
    p.add_argument("--sync-dtype", choices=("float32", "bfloat16"), default="float32",
                   help="several ranks, --sync local: the type the tables' changes travel in; bfloat16 sends half "
                        "the bytes, each change rounded to 8 significant bits (default: float32; docs/distributed.md)")
    p.add_argument("--no-share-negatives", dest="share_negatives", action="store_false",
                   help="skip-gram: draw negatives for every (context, centre) example as word2vec.c does, "
                        "not once per centre word (slower; docs/training.md)")
    p.add_argument("--nondeterministic", action="store_true",
                   help="threads update the tables in place, racing (gensim's Hogwild); on CUDA, the fused kernel's "
                        "warps race (--kernel auto picks it), and the torch kernel adds rows with atomics: faster, not "
                        "repeatable")
    p.add_argument("--alpha", type=float, default=None, help="initial learning rate (default: 0.025 sg, 0.05 cbow)")
    p.add_argument("--max-vocab", type=int, default=None, help="keep only the N most frequent words")
    p.add_argument("--max-vocab-size", type=int, default=None,
                   help="at least 1000: bound the count table while counting, by gensim's max_vocab_size rule (drop the "
                        "rarest, counts <= n, n growing by one a pruning) checked after each row group, not each "
                        "sentence: where it prunes, the words kept differ from gensim's")
    p.add_argument("--text-column", default="text", help="string or list<string> column (default: text)")
    p.add_argument("--kernel", choices=("auto", "numba", "cuda", "torch"), default="auto",
                   help="hot-step implementation: numba (the CPU's fused kernel), cuda (the GPU's, warps racing: needs "
                        "--nondeterministic, or --threads 1), torch (reference, mini-batches, any device); auto: numba "
                        "on the CPU, on a GPU cuda with --nondeterministic, else torch")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu); under torchrun cuda means cuda:LOCAL_RANK")
    p.add_argument("--backend", default=None, help="process-group backend (default: nccl on cuda, gloo on cpu)")
    p.add_argument("--cache-dir", default=None,
                   help="node-local directory for a copy of a remote vocabulary and the token cache "
                        "(default: under the system temp dir)")
    p.add_argument("--token-cache-gb", type=float, default=4.0,
                   help="token ids this process may cache in --cache-dir, so later epochs skip reading and "
                        "tokenizing (0: off; default: %(default)s)")
    p.add_argument("--log-all-ranks", action="store_true", help="log from every rank, not only rank 0")
    p.add_argument("--storage-options", default=None,
                   help="JSON object passed to fsspec for the corpus (and --output); docs/storage.md")
    p.add_argument("--output-storage-options", default=None, help=OUTPUT_OPTIONS_HELP)
    p.add_argument("--overwrite", action="store_true", help="replace an existing run in --output")
    p.add_argument("--force-resume", action="store_true",
                   help="resume even if settings that change the result differ from the run's (they are listed)")
    p.add_argument("--checkpoint-every", type=int, default=None,
                   help="steps between checkpoints (several ranks or replicas: each waits for the next step where "
                        "their tables are equal, said at the start)")
    p.add_argument("--checkpoint-minutes", type=float, default=None,
                   help="minutes between checkpoints (several ranks or replicas: each waits as --checkpoint-every)")
    p.add_argument("--keep-checkpoints", type=int, default=2, help="newest checkpoints kept (>= 2; default: 2)")
    p.add_argument("--on-bad-shard", choices=("error", "skip"), default="error",
                   help="unreadable files, row groups or rows: stop with an error (default) or skip and count them")
    p.add_argument("--allow-incomplete", action="store_true",
                   help="train on a directory whose `w2v-dist prepare` did not finish (no _SUCCESS), on the shards it wrote")
    _add_tokenizer_args(p)


def config_from_args(a: argparse.Namespace) -> TrainConfig:
    tok = TokenizerConfig(lowercase=a.lowercase, split_pattern=a.split_pattern, max_sentence_length=a.max_sentence_length,
                          normalize=a.normalize)
    return TrainConfig(
        corpus=a.corpus, output=a.output, model=a.model, dim=a.dim, window=a.window, negative=a.negative,
        sample=a.sample, min_count=a.min_count, max_vocab=a.max_vocab, max_vocab_size=a.max_vocab_size,
        epochs=a.epochs, alpha=a.alpha, min_alpha=a.min_alpha, batch_words=a.batch_words, batch_pairs=a.batch_pairs,
        slice_words=a.slice_words, share_negatives=a.share_negatives, nondeterministic=a.nondeterministic,
        sync=a.sync, sync_every=a.sync_every, sync_rows=a.sync_rows, sync_combine=a.sync_combine,
        sync_lr_scale=a.sync_lr_scale, sync_overlap=a.sync_overlap,
        sync_node_every=a.sync_node_every, sync_dtype=a.sync_dtype,
        seed=a.seed, text_column=a.text_column, tokenizer=tok, kernel=a.kernel, threads=a.threads, replicas=a.replicas,
        workers=a.workers,
        device=a.device, backend=a.backend, cache_dir=a.cache_dir, token_cache_gb=a.token_cache_gb,
        log_every=a.log_every, storage_options=_storage_options(a.storage_options),
        output_storage_options=_output_storage_options(a.output_storage_options),
        overwrite=a.overwrite, force_resume=a.force_resume, checkpoint_every=a.checkpoint_every,
        checkpoint_minutes=a.checkpoint_minutes, keep_checkpoints=a.keep_checkpoints, on_bad_shard=a.on_bad_shard,
        allow_incomplete=a.allow_incomplete)


class _Parser(argparse.ArgumentParser):
    """Under torchrun every rank parses the same command line: rank 0 alone prints a usage error
    (the subcommands' parsers are of this class too)."""

    def error(self, message: str):
        try:
            _start_refused(ConfigError(message))
        except ConfigError as e:
            if not e.alike:  # not every rank's command line: said as the ranks' meeting says it
                raise
        if _rank()[0] != 0:  # rank 0 parses the same line and says it
            def say():
                self.print_usage(sys.stderr)
                print(f"{self.prog}: error: {message}", file=sys.stderr)
            _leave_it_to_rank_0(say)
            sys.exit(2)
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    from w2v_dist import __version__

    parser = _Parser(prog="w2v-dist", description="Streaming, distributed word2vec on PyTorch.", formatter_class=_Help)
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    # -q after the subcommand too; SUPPRESS: a subcommand without it leaves the main parser's value
    quiet = argparse.ArgumentParser(add_help=False)
    quiet.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="warnings and errors only")
    level_help = ("w2v-dist's own log (default: info); other libraries log warnings and errors only, except with "
                  "debug, which shows everything (every HTTP request, say)")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info", help=level_help)
    quiet.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default=argparse.SUPPRESS,
                       help=level_help)  # after the subcommand too, as -q
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", parents=[quiet], formatter_class=_Help, help="generate a synthetic corpus, train, evaluate, print results")
    p.add_argument("--output", default=None, help="where to write everything (default: a new temp directory)")
    p.add_argument("--tokens", type=int, default=2_000_000, help="corpus size (default: %(default)s)")
    p.add_argument("--model", choices=("sg", "cbow"), default="sg", help="skip-gram or CBOW")
    p.add_argument("--epochs", type=int, default=2, help="passes over the corpus")
    p.add_argument("--seed", type=int, default=1, help="random seed (corpus and training)")

    p = sub.add_parser("prepare", parents=[quiet], formatter_class=_Help, help="text / JSONL / Parquet -> Parquet shards with a `text` column")
    p.add_argument("inputs", nargs="+", help="files, directories or globs (any fsspec URI; .gz/.bz2/.zst read as such)")
    p.add_argument("--output", required=True, help="directory for part-NNNNN.parquet")
    p.add_argument("--rows-per-shard", type=int, default=1_000_000, help="rows (lines, records) per output file")
    p.add_argument("--rows-per-row-group", type=int, default=100_000,
                   help="rows per Parquet row group, the unit train's readers are dealt")
    p.add_argument("--text-field", default="text", help="JSONL field / Parquet column to take (default: text)")
    p.add_argument("--storage-options", default=None, help="JSON object passed to fsspec for the inputs (and --output)")
    p.add_argument("--overwrite", action="store_true", help="replace the shards of an earlier prepare in --output")
    p.add_argument("--on-bad-input", choices=("error", "skip"), default="error",
                   help="input that cannot be read (a truncated or corrupt compressed file, an unreadable Parquet "
                        "file, UTF-16, a JSONL file without --text-field values): stop with an error naming it "
                        "(default), or leave it out, keeping the lines before any damage, and count it")
    p.add_argument("--max-invalid-utf8", type=float, default=0.1,
                   help="fraction of a file's bytes that may be invalid UTF-8 (replaced with U+FFFD) before it is "
                        "refused as not text (default: %(default)s)")
    p.add_argument("--output-storage-options", default=None, help=OUTPUT_OPTIONS_HELP)

    p = sub.add_parser("encode", parents=[quiet], formatter_class=_Help,
                       help="count and tokenize Parquet shards once: token ids that train reads without tokenizing")
    p.add_argument("corpus", help="Parquet shards: a directory/prefix, a file or a glob (any fsspec URI)")
    p.add_argument("--output", required=True, help="directory for the encoded corpus (any fsspec URI)")
    p.add_argument("--min-count", type=int, default=5,
                   help="drop words rarer than this; a run on the result may ask for more, not fewer")
    p.add_argument("--max-vocab", type=int, default=None, help="keep only the N most frequent words")
    p.add_argument("--max-vocab-size", type=int, default=None,
                   help="at least 1000: bound the count table while counting, by gensim's max_vocab_size rule (drop the "
                        "rarest, counts <= n, n growing by one a pruning) checked after each row group, not each "
                        "sentence: where it prunes, the words kept differ from gensim's")
    p.add_argument("--text-column", default="text", help="string or list<string> column (default: text)")
    p.add_argument("--storage-options", default=None, help="JSON object passed to fsspec for the corpus (and --output)")
    p.add_argument("--output-storage-options", default=None, help=OUTPUT_OPTIONS_HELP)
    p.add_argument("--on-bad-shard", choices=("error", "skip"), default="error",
                   help="unreadable files, row groups or rows: stop with an error (default) or skip and count them")
    p.add_argument("--overwrite", action="store_true", help="replace an encoded corpus in --output")
    _add_tokenizer_args(p, sentences=False)

    _add_train_args(sub.add_parser("train", parents=[quiet], formatter_class=_Help, help="train word vectors on Parquet shards"))

    p = sub.add_parser("export", parents=[quiet], formatter_class=_Help,
                       help="write a run's vectors as word2vec text/binary, .npy or Embedding Projector files")
    p.add_argument("run", help="run directory")
    p.add_argument("--format", choices=("word2vec", "word2vec-binary", "npy", "projector"), default="word2vec-binary",
                   help="word2vec.c's text or binary format, float32 .npy with the words in <name>.vocab.txt, or "
                        "projector: a directory of vectors.tsv, metadata.tsv and projector_config.pbtxt "
                        "(tensorboard --logdir DIR)")
    p.add_argument("--output", required=True, help="file (directory for projector) to write (any fsspec URI; "
                                                   ".gz/.bz2/.xz/.zst compress)")
    p.add_argument("--max-words", type=int, default=None,
                   help="only the N most frequent words (default: all; projector: 10000, so the browser copes)")
    p.add_argument("--storage-options", default=None, help="JSON object passed to fsspec for the run (and --output)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    p.add_argument("--output-storage-options", default=None, help=OUTPUT_OPTIONS_HELP)

    p = sub.add_parser("plot", parents=[quiet], formatter_class=_Help,
                       help="curves.png (loss, learning rate, words/s) and map.png (a 2-D PCA map of words) "
                            "of a run (needs the viz extra)")
    p.add_argument("run", help="run directory (finished or not: an unfinished run gets its curves only)")
    p.add_argument("--output", required=True, help="directory for curves.png and map.png")
    p.add_argument("--words", nargs="+", default=None, help="words to map (default: the --top most frequent)")
    p.add_argument("--top", type=int, default=200, help="how many of the most frequent words to map")
    p.add_argument("--storage-options", default=None, help="JSON object passed to fsspec")

    p = sub.add_parser("eval", parents=[quiet], formatter_class=_Help, help="analogy accuracy and word-similarity correlation")
    p.add_argument("vectors", help="a run directory, a word2vec .bin/.txt or a .npy")
    p.add_argument("--analogies", action="append", default=[], help="Google analogy file (repeatable)")
    p.add_argument("--similarity", action="append", default=[], help="word-pair similarity file (repeatable)")
    p.add_argument("--restrict-vocab", type=int, default=300_000, help="only the N most frequent words (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--storage-options", default=None, help="JSON object passed to fsspec for the vectors and the files")

    p = sub.add_parser("similar", parents=[quiet], formatter_class=_Help, help="nearest neighbours of a word (or of a+b-c)")
    p.add_argument("vectors", help="a run directory, a word2vec .bin/.txt or a .npy")
    p.add_argument("words", nargs="+", help="positive words; a word not in the vocabulary as written is looked up "
                                            "ignoring case, as eval does (its most frequent case variant)")
    p.add_argument("--negative", nargs="*", default=[], help="words to subtract")
    p.add_argument("--top", type=int, default=10, help="neighbours to print")
    p.add_argument("--restrict-vocab", type=int, default=None,
                   help="search only the N most frequent words (gensim's restrict_vocab; default: all)")
    p.add_argument("--storage-options", default=None, help="JSON object passed to fsspec for the vectors")
    return parser


# the command line this process runs (for a rank that refuses it: does it meet the other ranks?)
_argv: list[str] = []


def _start_refused(e: ConfigError) -> None:
    """Under torchrun, for ``train`` and ``encode`` (whose ranks meet at the start): a rank whose
    command line is refused meets the others (``distributed.start_refused``), so that no rank waits
    in the process group's rendezvous for one that stopped, and raises what every rank raises then."""
    if _rank()[1] > 1 and {"train", "encode"} & set(_argv):
        from w2v_dist.distributed import start_refused
        start_refused(e)


def run(argv: list[str] | None = None) -> int:
    global _argv
    _argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    rank, world = _rank()
    quiet = args.quiet or (rank != 0 and not getattr(args, "log_all_ranks", False))
    setup_logging(args.log_level, quiet, rank, world)
    if args.command == "demo":
        from w2v_dist.demo import demo
        demo(output=args.output, tokens=args.tokens, model=args.model, epochs=args.epochs, seed=args.seed)
    elif args.command == "prepare":
        from w2v_dist.prepare import prepare
        try:
            summary = prepare(args.inputs, args.output, rows_per_shard=args.rows_per_shard,
                              rows_per_row_group=args.rows_per_row_group, text_field=args.text_field,
                              storage_options=_storage_options(args.storage_options),
                              output_storage_options=_output_storage_options(args.output_storage_options),
                              overwrite=args.overwrite,
                              on_bad_input=args.on_bad_input, max_invalid_utf8=args.max_invalid_utf8)
        except KeyboardInterrupt:
            print(f"w2v-dist: prepare interrupted; {args.output} is unfinished (no _SUCCESS: train refuses it). "
                  "Run the same command with --overwrite to start again.", file=sys.stderr)
            return 130
        _out(json.dumps({k: v for k, v in summary.items() if k != "shards"} | {"shards": len(summary["shards"])}))
    elif args.command == "encode":
        from w2v_dist.encoding import EncodeConfig, encode_corpus
        tok = TokenizerConfig(lowercase=args.lowercase, split_pattern=args.split_pattern, normalize=args.normalize)
        try:
            with alike(ConfigError):  # from the command line alone: the same on every rank (if they run one)
                cfg = EncodeConfig(args.corpus, args.output, args.text_column, tok, args.min_count, args.max_vocab,
                                   args.max_vocab_size, _storage_options(args.storage_options),
                                   _output_storage_options(args.output_storage_options), args.on_bad_shard,
                                   args.overwrite)
        except ConfigError as e:
            _start_refused(e)
            raise
        manifest = encode_corpus(cfg)  # under torchrun, by every rank
        if rank == 0:
            _out(json.dumps({k: manifest[k] for k in ("vocab_size", "raw_tokens", "total_words")}
                             | {"files": len(manifest["files"]), "output": args.output}))
    elif args.command == "train":
        try:
            with alike(ConfigError):  # bad flags fail here, before torch is loaded, alike on every rank (if they
                cfg = config_from_args(args)  # run one command: under torchrun the ranks meet to see)
        except ConfigError as e:
            _start_refused(e)
            raise
        try:
            from w2v_dist.training import train  # torch: seconds of imports, where a Ctrl-C lands first
            summary = train(cfg)
        except KeyboardInterrupt:  # before training (the imports, the vocabulary pass), or a second Ctrl-C
            if rank == 0:  # under torchrun every rank got it: said once
                print(f"w2v-dist: train interrupted; {args.output} keeps its last checkpoint, if it has one (interrupted "
                      "before training: nothing was written). Run the same command to resume or start again.",
                      file=sys.stderr)
            return 130
        if summary.get("interrupted"):
            if rank == 0:
                print(f"w2v-dist: stopped at step {summary['steps']}; a checkpoint is in {args.output}. "
                      "Run the same command to resume.", file=sys.stderr)
            return 128 + int(summary["signal"])
    elif args.command == "export":
        from w2v_dist.vectors import Vectors
        if args.max_words is not None and args.max_words < 1:
            raise ConfigError(f"--max-words must be >= 1, got {args.max_words}")
        so = _storage_options(args.storage_options)
        out_so = _output_storage_options(args.output_storage_options)
        for uri in Vectors.load(args.run, so).save(args.output, args.format, so if out_so is None else out_so,
                                                   overwrite=args.overwrite, max_words=args.max_words):
            _out(uri)  # an .npy's words go to a second file, a projector's to three: say so
    elif args.command == "plot":
        from w2v_dist.plot import plot_run
        if args.top < 3:  # checked before curves.png is written (a map of 2 words failed after it)
            raise ConfigError(f"--top must be >= 3 (the most frequent words to map), got {args.top}")
        paths = plot_run(args.run, args.output, words=args.words, top=args.top,
                         storage_options=_storage_options(args.storage_options))
        _out("\n".join(paths.values()))
    elif args.command == "eval":
        from w2v_dist.evaluate import evaluate_analogies, evaluate_similarity, format_report
        from w2v_dist.vectors import Vectors
        if not args.analogies and not args.similarity:
            raise ConfigError("eval needs --analogies FILE and/or --similarity FILE")
        so = _storage_options(args.storage_options)
        vectors = Vectors.load(args.vectors, so)
        results = {"vectors": args.vectors,
                   "analogies": {f: evaluate_analogies(vectors, f, restrict_vocab=args.restrict_vocab, storage_options=so)
                                 for f in args.analogies},
                   "similarity": {f: evaluate_similarity(vectors, f, restrict_vocab=args.restrict_vocab,
                                                         storage_options=so) for f in args.similarity}}
        _out(json.dumps(results, indent=2, allow_nan=False) if args.json else format_report(results))
    elif args.command == "similar":
        from w2v_dist.vectors import Vectors
        if args.top < 1:
            raise ConfigError(f"--top must be >= 1 (the neighbours to print), got {args.top}")
        if args.restrict_vocab is not None and args.restrict_vocab < 1:
            raise ConfigError(f"--restrict-vocab must be >= 1 (the most frequent words to search), got "
                              f"{args.restrict_vocab}")
        vectors = Vectors.load(args.vectors, _storage_options(args.storage_options))
        positive, negative = ([_resolve(vectors, w) for w in ws] for ws in (args.words, args.negative))
        for word, score in vectors.most_similar(positive=positive, negative=negative, topn=args.top,
                                                restrict_vocab=args.restrict_vocab):
            _out(f"{word}\t{score:.4f}")
    return 0


def _out(text: str) -> None:
    """A result on stdout, whose reader may close it early (``w2v-dist similar ... | head -3``):
    then quiet, as Unix tools are, exit 141 (128 + SIGPIPE), not a store's "did not answer"."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's flush at exit would fail too
        raise SystemExit(141) from None


def _rank() -> tuple[int, int]:
    """(this process's rank, the world size) under torchrun; (0, 1) without."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


# how long a rank that leaves an error to rank 0 waits for torchrun to stop it. On rank 0's node its
# agent stops the rank as soon as rank 0 exits, so waiting long costs nothing there (10 s was once too
# short: 3 ranks beside the test suite on 2 loaded cores, and a rank said its own copy of the error);
# another node's agent learns of it later, and that node's log should say why it stopped
RANK_0_GRACE_S = 30.0
OTHER_NODE_GRACE_S = 10.0


def _error(e: BaseException, msg: str) -> None:
    """One line on stderr. Under torchrun an error that every rank raised alike (a bad flag, rank
    0's look at the corpus or the run directory handed to all) is said by rank 0 only, not once
    per rank; any other names the rank that met it."""
    rank, world = _rank()
    if world > 1 and getattr(e, "every_rank", False):
        if rank == 0:
            print(f"w2v-dist: error: {msg}", file=sys.stderr)
            return
        _leave_it_to_rank_0(lambda: print(f"w2v-dist: error: {msg} [rank {rank}]", file=sys.stderr))
        return
    print(f"w2v-dist: error: {msg}" + (f" [rank {rank}]" if world > 1 else ""), file=sys.stderr)


def _speaks_for_its_node() -> bool:
    """On another node than rank 0's, an error every rank met alike is said once in that node's
    log, by its first rank (each rank said it: 2 lines from a node of 2 ranks)."""
    return os.environ.get("GROUP_RANK", "0") == "0" or os.environ.get("LOCAL_RANK", "0") == "0"


def _leave_it_to_rank_0(say) -> None:
    """A rank that leaves an error to rank 0 does not exit first: torchrun stops every rank as soon
    as one fails, and rank 0 could be stopped before it says it. It waits, and is stopped when rank
    0 has exited with the error: by SIGTERM's default action, not by the training's handler, which
    would take it for a preemption and keep waiting. A rank that is still here after
    ``RANK_0_GRACE_S`` met the error alone (rank 0 is waiting for it somewhere) and says it
    (``say()``). On another node than rank 0's (torchrun's ``GROUP_RANK``) the node's first rank
    says it at once, in that node's log: its agent may stop it any moment (when rank 0's agent,
    which hosts the rendezvous, is gone), and the log should say why it stopped; it waits
    ``OTHER_NODE_GRACE_S``."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if os.environ.get("GROUP_RANK", "0") != "0":
        if _speaks_for_its_node():
            say()
        time.sleep(OTHER_NODE_GRACE_S)
        return
    time.sleep(RANK_0_GRACE_S)
    say()


def _resolve(vectors, word: str) -> str:
    found = vectors.resolve(word)
    if found != word:
        logging.getLogger("w2v_dist").info("%r is not in the vocabulary; using %r (case ignored, as eval does)",
                                           word, found)
    return found


def main(argv: list[str] | None = None) -> int:
    if "RANK" in os.environ:  # a rank under torchrun: die with the agent, not live on as an orphan
        from w2v_dist.owner import die_with_parent
        die_with_parent()
    # Under torchrun, torch's @record writes a rank's uncaught exception into the agent's error file.
    # Imported only there: torch costs ~2 s of start-up that prepare/export/similar never need.
    if os.environ.get("TORCHELASTIC_ERROR_FILE"):
        from torch.distributed.elastic.multiprocessing.errors import record
        code = record(_main)(argv)
    else:
        code = _main(argv)
    # The process exits next: the interpreter's last cycle collection over every object torch,
    # numba and pyarrow made would take 0.3-0.7 s of a command that has finished its work.
    gc.freeze()
    from w2v_dist.kernels import still_warming
    if still_warming():
        # a run that stopped early (a one-line error) while numba still compiles the kernel in its
        # thread (a fresh install: a minute or two): the interpreter's shutdown under that thread
        # aborted the process ("terminate called without an active exception", exit -6 for 2).
        # Everything is written and said; leave without the shutdown.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _main(argv: list[str] | None) -> int:
    try:
        return run(argv)
    except _user_errors() as e:
        lines = [line for line in str(e).strip().splitlines() if line.strip()] or [type(e).__name__]
        msg = lines[0]
        if msg.startswith("Caught ") and len(lines) > 1:  # re-raised from a DataLoader worker
            msg = lines[-1].split(": ", 1)[-1]
        _error(e, msg)
        return 2
    except _diverged() as e:  # the run stopped itself: the vectors would be useless
        _error(e, str(e))  # every rank stops with it: rank 0 says it, naming the ranks where it happened
        return 3
    except KeyError as e:  # an unknown word in `similar`
        print(f"w2v-dist: error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    except Exception as e:  # a store that refused or stopped answering, where no caller named the object
        from w2v_dist.storage import cannot_write, refused, unavailable, unavailable_error
        full = cannot_write(getattr(e, "filename", None) or "a file", e)  # a disk that took no more
        if full is not None:
            _error(e, str(full))
            return 2
        said = refused(e)
        if said is not None:
            _error(e, f"access refused ({said}): check the store's credentials (--storage-options, "
                      "--output-storage-options or the backend's environment variables: docs/storage.md) or the "
                      "path's permissions")
            return 2
        if not unavailable(e):
            raise
        _error(e, unavailable_error(None, e))
        return 2
