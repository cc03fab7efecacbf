"""Typed, validated configuration. Every error names the flag and says how to fix it.

The resolved :class:`TrainConfig` is written as ``config.json`` into every run directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import numbers
import re
from dataclasses import dataclass, field


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the flag and the fix."""


def raised_alike(e: BaseException) -> BaseException:
    """Marks ``e`` as raised by every rank alike (it follows from the command line, or from what
    rank 0 looked at and handed to all), so that the CLI says it once, on rank 0, not once per rank."""
    e.every_rank = True
    return e


@contextlib.contextmanager
def alike(*errors: type[BaseException]):
    """One of ``errors`` raised inside is :func:`raised_alike`. Only around checks whose inputs
    every rank shares: a rank whose own read failed must say so itself."""
    try:
        yield
    except errors as e:
        raise raised_alike(e)


# Split on anything that is not a letter, a combining mark, a digit, an underscore or a zero-width
# (non-)joiner (Unicode-aware, RE2 syntax). Marks (category M) are parts of words: Devanagari vowel
# signs and viramas, Thai vowels and tones, Arabic harakat, the accents of decomposed Latin; ZWNJ
# and ZWJ sit inside Persian and Indic words. Splitting on them cut "हिन्दी" into "ह न द".
DEFAULT_SPLIT_PATTERN = r"[^\p{L}\p{M}\p{N}_\x{200C}\x{200D}]+"
NORMALIZE_FORMS = ("NFC", "NFKC", "none")


# storage options whose values are secrets: AWS keys and tokens, Azure account keys, SAS tokens and
# connection strings (which hold the account key), GCS tokens and credentials files
_SECRET = re.compile(r"key|secret|token|password|credential|connection_string|sas", re.IGNORECASE)


def redact(options):
    """``options`` with the value of every secret-looking key replaced by ``"<redacted>"``."""
    if isinstance(options, dict):
        return {k: "<redacted>" if _SECRET.search(str(k)) and not isinstance(v, dict) else redact(v)
                for k, v in options.items()}
    if isinstance(options, list):
        return [redact(v) for v in options]
    return options


_KINDS = {"int": ((int,), "an integer"), "float": ((int, float), "a number"), "bool": ((bool,), "True or False"),
          "str": ((str,), "a string")}


def check_types(settings) -> None:
    """Every field of a settings dataclass holds what its annotation says (the CLI's parser makes
    sure of it; the Python API's keywords did not: ``window=2.5`` failed in the kernel after the run
    directory was written, ``nondeterministic="false"`` was taken as true)."""
    for f in dataclasses.fields(settings):
        value, kinds = getattr(settings, f.name), [k.strip() for k in str(f.type).split("|")]
        if value is None and "None" in kinds or not all(k in _KINDS or k == "None" for k in kinds):
            continue  # (a dict, a nested config: checked where they are)
        wanted = [t for k in kinds if k in _KINDS for t in _KINDS[k][0]]
        if isinstance(value, numbers.Integral) and not isinstance(value, bool) and int in wanted:
            value = int(value)  # numpy's integers too (json writes them into config.json no other way)
        elif isinstance(value, numbers.Real) and float in wanted and not isinstance(value, bool):
            value = float(value) if not isinstance(value, int) else value
        setattr(settings, f.name, value)
        if not isinstance(value, tuple(wanted)) or (isinstance(value, bool) and bool not in wanted):
            said = " or ".join(_KINDS[k][1] for k in kinds if k in _KINDS) + (" or None" if "None" in kinds else "")
            raise ConfigError(f"--{f.name.replace('_', '-')} must be {said}, got {value!r}")


@dataclass
class TokenizerConfig:
    """How a string column becomes tokens (a list<string> column is taken as already tokenized)."""

    lowercase: bool = True
    split_pattern: str = DEFAULT_SPLIT_PATTERN
    max_sentence_length: int = 1000  # word2vec.c's MAX_SENTENCE_LENGTH: longer rows are cut in pieces
    # Unicode normalization before anything else: "é" typed as e + U+0301 (NFD, as macOS file
    # names and some corpora have it) and as U+00E9 become one word. "none" takes the bytes as they are.
    normalize: str = "NFC"

    def __post_init__(self):
        check_types(self)
        if self.max_sentence_length < 2:
            raise ConfigError(f"--max-sentence-length must be >= 2, got {self.max_sentence_length}")
        if not self.split_pattern:
            raise ConfigError("--split-pattern must not be empty (default: %s)" % DEFAULT_SPLIT_PATTERN)
        if self.normalize not in NORMALIZE_FORMS:
            raise ConfigError(f"--normalize must be one of {', '.join(NORMALIZE_FORMS)}, got {self.normalize!r}")
        _check_pattern(self.split_pattern)


def _check_pattern(pattern: str) -> None:
    """Compile ``pattern`` with the engine that will use it (pyarrow's RE2) now, not hours into a
    vocabulary pass; RE2 has no look-arounds or back-references."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        pc.split_pattern_regex(pa.array([""]), pattern=pattern)
    except pa.ArrowInvalid as e:
        raise ConfigError(f"--split-pattern {pattern!r} is not a valid RE2 regex ({str(e).splitlines()[0]}); "
                          f"RE2 syntax has no look-arounds or back-references (default: {DEFAULT_SPLIT_PATTERN})") from None


@dataclass
class TrainConfig:
    corpus: str
    output: str
    model: str = "sg"  # "sg" (skip-gram) or "cbow"
    dim: int = 100
    window: int = 5
    negative: int = 5
    sample: float = 1e-3
    min_count: int = 5
    max_vocab: int | None = None  # keep at most this many most frequent words
    max_vocab_size: int | None = None  # gensim's max_vocab_size: prune the raw count table above this
    epochs: int = 5
    alpha: float | None = None  # None: 0.025 for sg, 0.05 for cbow (word2vec.c defaults)
    min_alpha: float = 1e-4
    batch_words: int = 10_000  # words per chunk handed from the reader to the trainer (one step)
    slice_words: int = 0  # words a kernel thread trains in order before the threads merge; 0: 1,024 / threads, >= 64
    share_negatives: bool = True  # skip-gram: one draw of negatives per centre word, shared by its examples
    nondeterministic: bool = False  # threads update the tables in place, racing (gensim's Hogwild): not repeatable
    batch_pairs: int = 256  # --kernel torch: examples per summed mini-batch update
    sync: str = "local"  # several ranks: "local" (local SGD, rare prefix syncs) or "step" (every step, exact)
    sync_every: int = 0  # several ranks: steps between syncs of frequent rows; 0: sync.auto_sync_every
    sync_rows: int = 1024  # rows of the smallest sync (the prefix doubles on every other sync, ...)
    sync_combine: str = "mean"  # how ranks' changes of a row combine: mean (lr x world size), rowmean or sum
    sync_lr_scale: float = 0  # under mean: each rank trains at this x the rate; 0: min(world size, 0.2 / alpha)
    # (the summed changes are divided by it, between world size / 2 and world size: sync.mean_divisor)
    sync_overlap: bool = False  # several ranks: train on while a sync is summed; its result lands one interval late
    sync_node_every: int = 0  # several nodes: steps between syncs among a node's ranks (0: none; below sync_every)
    sync_dtype: str = "float32"  # several ranks, --sync local: the type the changes travel in (float32 or bfloat16)
    seed: int = 1
    text_column: str = "text"
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    # "auto", "numba" (fused CPU), "cuda" (fused GPU, racing warps) or "torch" (reference, any device)
    kernel: str = "auto"
    # kernel threads; 0: the rank's share of the node's cores, less one for its reader (1, not 2)
    threads: int = 0
    workers: int = 0  # DataLoader reader processes; 0: one reader thread in the trainer
    # copies of the tables in this process, a kernel thread each, averaged every --sync-every steps;
    # 0: two on a CPU of 2-4 cores with --threads 0 and --alpha up to 0.1, else one (training.resolve_replicas)
    replicas: int = 0
    device: str = "cpu"
    backend: str | None = None  # process-group backend; None: nccl on CUDA, gloo on CPU
    cache_dir: str | None = None  # node-local: a remote vocabulary's copy, encoded units; None: under the temp dir
    token_cache_gb: float = 4.0  # encoded units this process may write to cache_dir (0: tokenize every epoch)
    log_every: float = 10.0  # seconds between log lines
    storage_options: dict = field(default_factory=dict)  # the corpus's (and the run's, unless the next is set)
    output_storage_options: dict | None = None  # the run directory's; None: storage_options
    overwrite: bool = False
    force_resume: bool = False  # resume even if result-changing settings differ (they are listed)
    checkpoint_every: int | None = None  # optimizer steps between checkpoints
    checkpoint_minutes: float | None = None  # minutes between checkpoints
    keep_checkpoints: int = 2
    on_bad_shard: str = "error"  # "error" or "skip" for unreadable files, row groups and rows
    allow_incomplete: bool = False  # train on a directory whose `w2v-dist prepare` did not finish

    def __post_init__(self):
        if isinstance(self.tokenizer, dict):
            self.tokenizer = TokenizerConfig(**self.tokenizer)
        check_types(self)
        if self.model not in ("sg", "cbow"):
            raise ConfigError(f"--model must be 'sg' or 'cbow', got {self.model!r}")
        for name in ("sample", "alpha", "min_alpha", "log_every", "checkpoint_minutes", "token_cache_gb",
                     "sync_lr_scale"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)):
                raise ConfigError(f"--{name.replace('_', '-')} must be a finite number, got {value!r}")
        positive = dict(dim=self.dim, window=self.window, epochs=self.epochs, min_count=self.min_count,
                        batch_words=self.batch_words, batch_pairs=self.batch_pairs,
                        sync_rows=self.sync_rows)
        for name, value in positive.items():
            if value <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
        if not 0 <= self.seed < 2**64:  # numpy's and torch's generators take what fits 64 bits, unsigned
            raise ConfigError(f"--seed must be an integer in [0, 2**64), got {self.seed}")
        if self.log_every < 0:
            raise ConfigError(f"--log-every must be >= 0 seconds (0: a line every step), got {self.log_every}")
        if self.slice_words < 0:
            raise ConfigError(f"--slice-words must be >= 0 (0: 1,024 / --threads, at least 64), got {self.slice_words}")
        if self.sync_every < 0:
            raise ConfigError(f"--sync-every must be >= 0 (0: chosen by the number of ranks), got {self.sync_every}")
        if self.negative < 1:
            raise ConfigError(f"--negative must be >= 1 (negative sampling is the only objective), got {self.negative}")
        if self.sample < 0:
            raise ConfigError(f"--sample must be >= 0 (0 disables subsampling), got {self.sample}")
        if self.max_vocab is not None and self.max_vocab <= 0:
            raise ConfigError(f"--max-vocab must be a positive integer, got {self.max_vocab}")
        if self.max_vocab_size is not None and self.max_vocab_size < 1000:
            raise ConfigError(f"--max-vocab-size must be >= 1000, got {self.max_vocab_size}")
        if self.alpha is None:
            self.alpha = 0.025 if self.model == "sg" else 0.05
        if not 0 < self.alpha <= 1:
            raise ConfigError(f"--alpha must be in (0, 1], got {self.alpha}")
        if not 0 <= self.min_alpha <= self.alpha:
            raise ConfigError(f"--min-alpha must be in [0, alpha={self.alpha}], got {self.min_alpha}")
        if self.kernel not in ("auto", "numba", "cuda", "torch"):
            raise ConfigError(f"--kernel must be auto, numba, cuda or torch, got {self.kernel!r}")
        if not re.fullmatch(r"cpu|cuda(:\d+)?", self.device):
            raise ConfigError(f"--device must be cpu, cuda or cuda:N, got {self.device!r}")
        if self.kernel == "numba" and self.device != "cpu":
            raise ConfigError(f"--kernel numba runs on the CPU only; use --kernel cuda or torch (or auto) with --device "
                              f"{self.device}")
        if self.kernel == "cuda" and self.device == "cpu":
            raise ConfigError("--kernel cuda runs on a GPU: add --device cuda (on the CPU, --kernel numba is the fused kernel)")
        if self.kernel == "cuda" and self.threads != 1 and not self.nondeterministic:
            raise ConfigError("--kernel cuda races its warps on the rows they share, so a run is not repeatable: add "
                              "--nondeterministic (or --threads 1: one warp, repeatable and slow)")
        if self.token_cache_gb < 0:
            raise ConfigError(f"--token-cache-gb must be >= 0 (0 turns the cache off), got {self.token_cache_gb}")
        if self.workers < 0 or self.threads < 0:
            raise ConfigError("--workers and --threads must be >= 0")
        if self.replicas < 0:
            raise ConfigError(f"--replicas must be >= 0 (0: chosen by the cores), got {self.replicas}")
        if self.replicas > 1 and (self.device != "cpu" or self.kernel not in ("auto", "numba")):
            raise ConfigError("--replicas runs the CPU's fused kernel (--kernel numba, --device cpu)")
        if self.replicas > 1 and (self.threads > 1 or self.nondeterministic):
            raise ConfigError("--replicas trains each replica with one kernel thread: drop --threads and "
                              "--nondeterministic (or use --threads alone)")
        if self.keep_checkpoints < 2:
            raise ConfigError(f"--keep-checkpoints must be >= 2, got {self.keep_checkpoints}: the newest may be "
                              "in the middle of being written when a process dies, so an older one must remain")
        if self.checkpoint_every is not None and self.checkpoint_every < 1:
            raise ConfigError(f"--checkpoint-every must be >= 1 step, got {self.checkpoint_every}")
        if self.checkpoint_minutes is not None and self.checkpoint_minutes <= 0:
            raise ConfigError(f"--checkpoint-minutes must be > 0, got {self.checkpoint_minutes}")
        if self.sync not in ("local", "step"):
            raise ConfigError(f"--sync must be local or step, got {self.sync!r}")
        if self.sync == "step" and self.sync_overlap:
            raise ConfigError("--sync-overlap needs --sync local: --sync step syncs every step, before the next")
        if self.sync_node_every < 0:
            raise ConfigError(f"--sync-node-every must be >= 0 (0: every sync is of all ranks), got {self.sync_node_every}")
        if self.sync_node_every and self.sync == "step":
            raise ConfigError("--sync-node-every needs --sync local: --sync step syncs all ranks every step")
        if self.sync_node_every and self.sync_overlap:
            raise ConfigError("--sync-node-every and --sync-overlap do not go together (yet): pick one")
        if self.sync == "step":  # it syncs every row after every step and sums: these would be ignored
            ignored = [f"--{name.replace('_', '-')} {getattr(self, name)}" for name, default in
                       (("sync_every", 0), ("sync_rows", 1024), ("sync_combine", "mean"), ("sync_lr_scale", 0))
                       if getattr(self, name) != default]
            if ignored:
                raise ConfigError(f"{', '.join(ignored)}: --sync step syncs every row after every step and sums the "
                                  "ranks' changes at the plain rate; drop them, or use --sync local")
        if self.backend is not None and not re.fullmatch(r"(gloo|nccl|mpi|ucc|xccl)|([a-z]+:[a-z]+)(,[a-z]+:[a-z]+)*",
                                                         self.backend):
            raise ConfigError(f"--backend must be a torch.distributed backend (gloo, nccl, mpi, ucc, xccl, or "
                              f"'cpu:gloo,cuda:nccl'), got {self.backend!r}")
        if self.sync_dtype not in ("float32", "bfloat16"):
            raise ConfigError(f"--sync-dtype must be float32 or bfloat16, got {self.sync_dtype!r}")
        if self.sync_dtype != "float32" and self.sync == "step":
            raise ConfigError("--sync-dtype bfloat16 needs --sync local: --sync step sums the ranks' changes exactly, "
                              "in float32")
        if self.sync_combine not in ("mean", "rowmean", "sum"):
            raise ConfigError(f"--sync-combine must be mean, rowmean or sum, got {self.sync_combine!r}")
        if self.sync_lr_scale < 0 or (0 < self.sync_lr_scale < 1):
            raise ConfigError(f"--sync-lr-scale must be 0 (automatic) or >= 1, got {self.sync_lr_scale}")
        if self.on_bad_shard not in ("error", "skip"):
            raise ConfigError(f"--on-bad-shard must be error or skip, got {self.on_bad_shard!r}")
        if not self.text_column:
            raise ConfigError("--text-column must name a column")
        for name in ("storage_options", "output_storage_options"):
            value = getattr(self, name)
            if not isinstance(value, dict) and not (value is None and name == "output_storage_options"):
                raise ConfigError(f"--{name.replace('_', '-')} must be a JSON object, e.g. '{{\"anon\": true}}', "
                                  f"got {value!r}")

    @property
    def output_options(self) -> dict:
        """fsspec options for the run directory (``--output``): ``--output-storage-options`` if
        given, else ``--storage-options`` (one store for both)."""
        return self.storage_options if self.output_storage_options is None else self.output_storage_options

    def to_dict(self) -> dict:
        """The settings as written into the run (``config.json``, every checkpoint): secrets in
        the storage options (keys, tokens, connection strings) are left out."""
        d = dataclasses.asdict(self)
        for name in ("storage_options", "output_storage_options"):
            d[name] = redact(d[name])
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
