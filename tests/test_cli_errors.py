"""Every mistake a user can fix is one line on stderr that names the file or flag, exit code 2.

Guards: tracebacks escaping where a one-line error belongs (a file that is not vectors given to
eval/similar, an unreadable benchmark file, an unknown URI scheme), a benchmark file that is not
one accepted silently, an --output that is a file found only after the vocabulary pass, a
--split-pattern RE2 cannot compile found only inside the reader, NaN/inf accepted for float flags,
--device cuda without a GPU as a traceback from inside torch.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from tests.conftest import ROOT, cli


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("errors")
    (d / "corpus").mkdir()
    pq.write_table(pa.table({"text": ["alpha beta gamma delta"] * 10}), d / "corpus" / "part-00000.parquet")
    (d / "vec.txt").write_text("3 2\nalpha 0.1 0.2\nbeta 0.3 -0.1\ngamma -0.2 0.4\n")
    (d / "notvec.txt").write_text("hello world\nthis is prose\n")
    (d / "rand.bin").write_bytes(random.Random(0).randbytes(3000))
    (d / "latin1.txt").write_bytes(b": capital\nathens greece m\xfcnchen germany\n")
    (d / "noquestions.txt").write_text(": capital-common-countries\n\n")
    (d / "analogies.txt").write_text(": family\nalpha beta gamma delta\n")
    (d / "pairs.tsv").write_text("alpha\tbeta\t5.0\n")
    (d / "many").mkdir()  # 1,500 distinct words, 3 times each: more than --max-vocab-size 1000 can hold
    pq.write_table(pa.table({"text": [" ".join(f"w{i}" for i in range(1500))] * 3}), d / "many" / "part-00000.parquet")
    (d / "afile").write_text("not a directory\n")
    (d / "a.txt").write_text("alpha beta\n")
    (d / "exists.bin").write_bytes(b"precious")
    return d


CASES = [  # (argv, what stderr must say); "{d}" is the fixture's directory
    (["eval", "{d}/notvec.txt", "--similarity", "{d}/pairs.tsv"], "{d}/notvec.txt: not a word2vec file"),
    (["similar", "{d}/rand.bin", "alpha"], "{d}/rand.bin: not a word2vec file"),
    (["eval", "{d}/vec.txt", "--analogies", "{d}/latin1.txt"], "{d}/latin1.txt: not UTF-8 text"),
    (["eval", "{d}/vec.txt", "--analogies", "{d}/noquestions.txt"], "{d}/noquestions.txt: no analogy questions"),
    (["eval", "{d}/vec.txt", "--similarity", "{d}/analogies.txt"], "{d}/analogies.txt: no usable word pairs"),
    (["train", "{d}/corpus", "--output", "{d}/afile"], "{d}/afile: is a file; --output must name a run directory"),
    (["train", "{d}/corpus", "--output", "{d}/r", "--split-pattern", "(?<=a) "], "--split-pattern '(?<=a) '"),
    (["train", "foo://corpus", "--output", "{d}/r"], "foo://corpus: unknown URI scheme 'foo://'"),
    (["prepare", "{d}/a.txt", "--output", "foo://out"], "foo://out: unknown URI scheme 'foo://'"),
    (["similar", "foo://v.bin", "alpha"], "foo://v.bin: unknown URI scheme 'foo://'"),
    (["train", "{d}/corpus", "--output", "{d}/r", "--sample", "nan"], "--sample must be a finite number"),
    (["train", "{d}/corpus", "--output", "{d}/r", "--log-every", "inf"], "--log-every must be a finite number"),
    (["train", "{d}/corpus", "--output", "{d}/r", "--token-cache-gb", "nan"], "--token-cache-gb must be a finite"),
    (["train", "{d}/corpus", "--output", "{d}/r", "--sync-every", "-1"], "--sync-every must be >= 0 (0: chosen by"),
    (["train", "{d}/corpus", "--output", "{d}/r", "--sync", "step", "--sync-overlap"],
     "--sync-overlap needs --sync local"),
    (["train", "{d}/corpus", "--output", "{d}/r", "--sync-node-every", "-2"], "--sync-node-every must be >= 0"),
    (["train", "{d}/corpus", "--output", "{d}/r", "--sync-node-every", "4", "--sync-overlap"],
     "--sync-node-every and --sync-overlap do not go together"),
    (["train", "{d}/corpus", "--output", "{d}/r", "--sync", "step", "--sync-dtype", "bfloat16"],
     "--sync-dtype bfloat16 needs --sync local"),
    (["prepare", "{d}/a.txt", "--output", "{d}/o", "--max-invalid-utf8", "nan"], "--max-invalid-utf8 must be"),
    (["export", "{d}/vec.txt", "--output", "{d}/exists.bin"], "{d}/exists.bin: exists; pass --overwrite"),
    (["train", "{d}/corpus", "--output", "{d}/r", "--dim", "20000000000"],
     "--dim 20000000000 with 4 words needs about 894.1 GiB for the tables on this node (298.0 GiB each, 1 rank(s)), "
     "but"),
    (["train", "{d}/corpus", "--output", "{d}/r", "--dim", "20000000000", "--replicas", "2"],
     "--dim 20000000000 with 4 words needs about 1490.1 GiB for the tables on this node (298.0 GiB each, 1 rank(s), "
     "2 replicas), but"),
    (["train", "{d}/corpus", "--output", "/proc/w2v-dist-run"], "/proc/w2v-dist-run: cannot write the run directory"),
    (["train", "{d}/corpus", "--output", "/sys/w2v-dist-run"], "/sys/w2v-dist-run: cannot write the run directory"),
    (["train", "{d}/many", "--output", "{d}/r", "--max-vocab-size", "1000", "--min-count", "1"],
     "--max-vocab-size 1000 made counting drop every token seen 3 times or fewer"),
    (["train", "{d}/corpus", "--output", "{d}/r", "--device", "gpu"], "--device must be cpu, cuda or cuda:N, got 'gpu'"),
    (["train", "{d}/corpus", "--output", "{d}/r", "--device", "cuda", "--kernel", "numba"],
     "--kernel numba runs on the CPU only; use --kernel cuda or torch (or auto) with --device cuda"),
    (["train", "{d}/corpus", "--output", "{d}/r", "--kernel", "cuda"], "--kernel cuda runs on a GPU: add --device cuda"),
    (["train", "{d}/corpus", "--output", "{d}/r", "--replicas", "2", "--threads", "2"],
     "--replicas trains each replica with one kernel thread: drop --threads and --nondeterministic"),
    (["train", "{d}/corpus", "--output", "{d}/r", "--replicas", "-1"], "--replicas must be >= 0 (0: chosen by the cores), got -1"),
    (["train", "{d}/corpus", "--output", "{d}/r", "--device", "cuda", "--kernel", "cuda"],
     "--kernel cuda races its warps on the rows they share, so a run is not repeatable: add --nondeterministic"),
    (["train", "{d}/corpus", "--output", "{d}/r", "--sync-lr-scale", "nan"], "--sync-lr-scale must be a finite number"),
    (["train", "{d}/corpus", "--output", "{d}/r", "--seed", "-1"], "--seed must be an integer in [0, 2**64), got -1"),
    (["train", "{d}/corpus", "--output", "{d}/r", "--log-every", "-1"], "--log-every must be >= 0 seconds"),
    (["train", "{d}/corpus", "--output", "{d}/r", "--sync", "step", "--sync-every", "8", "--sync-combine", "mean"],
     "--sync-every 8: --sync step syncs every row after every step"),
    (["train", "{d}/corpus", "--output", "{d}/r", "--backend", "foo"], "--backend must be a torch.distributed backend"),
    (["similar", "{d}/vec.txt", "alpha", "--top", "0"], "--top must be >= 1 (the neighbours to print), got 0"),
    (["similar", "{d}/vec.txt", "alpha", "--restrict-vocab", "0"],
     "--restrict-vocab must be >= 1 (the most frequent words to search), got 0"),
    pytest.param(["train", "{d}/corpus", "--output", "{d}/r", "--device", "cuda"],
                 "--device cuda: torch sees no CUDA device here",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here")),
    # adlfs's ValueError for a client it cannot build was a 30-line traceback
    pytest.param(["train", "az://c/shards", "--output", "{d}/r"], "az://c/shards: unable to connect to account for "
                 "Must provide either a connection_string or account_name with credentials; name the account",
                 marks=pytest.mark.skipif(importlib.util.find_spec("adlfs") is None
                                          or any(k.startswith("AZURE_STORAGE") for k in os.environ),
                                          reason="adlfs missing, or an Azure account in the environment")),
]


IDS = ["eval-not-vectors", "similar-random-bytes", "eval-latin1-analogies", "eval-no-questions",
       "eval-analogies-as-pairs", "train-output-is-a-file", "train-bad-split-pattern", "train-unknown-scheme",
       "prepare-unknown-scheme", "similar-unknown-scheme", "train-sample-nan", "train-log-every-inf",
       "train-token-cache-nan", "train-sync-every-negative", "train-sync-step-overlap",
       "train-sync-node-every-negative", "train-sync-node-every-overlap",
       "train-sync-step-bfloat16", "prepare-max-invalid-utf8-nan", "export-would-overwrite",
       "train-dim-too-large", "train-dim-too-large-for-replicas",
       "train-output-in-proc", "train-output-read-only", "train-max-vocab-size-prunes-everything",
       "train-device-unknown", "train-numba-on-cuda", "train-cuda-kernel-on-cpu", "train-cuda-kernel-races",
       "train-replicas-with-threads", "train-replicas-negative",
       "train-sync-lr-scale-nan", "train-seed-negative", "train-log-every-negative", "train-sync-step-ignores",
       "train-backend-unknown", "similar-top-zero", "similar-restrict-vocab-zero", "train-cuda-without-gpu",
       "train-azure-no-account"]


@pytest.mark.parametrize("args, expect", CASES, ids=IDS)
def test_user_error_is_one_line(files, args, expect):
    p = cli(*(a.format(d=files) for a in args), check=False)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("w2v-dist: error: "), p.stderr
    assert expect.format(d=files) in p.stderr, p.stderr
    assert not (files / "r").exists() and (files / "afile").read_text() == "not a directory\n"
    assert (files / "exists.bin").read_bytes() == b"precious"


def test_version_help_defaults_and_export_names_what_it_writes(files, tmp_path):
    """Guards: no --version; --help without the defaults; export replacing a file silently and
    writing a .vocab.txt beside an .npy without a word."""
    import w2v_dist

    assert cli("--version").stdout.strip() == f"w2v-dist {w2v_dist.__version__}"
    train_help = " ".join(cli("train", "--help").stdout.split())  # argparse wraps lines
    assert "vector size (default: 100)" in train_help and "on a GPU cuda with --nondeterministic, else torch (default: auto)" in train_help
    assert "(default: False)" not in train_help and "(default: None)" not in train_help
    assert "(default: 1000000)" in " ".join(cli("prepare", "--help").stdout.split())

    out = tmp_path / "v.npy"
    p = cli("export", str(files / "vec.txt"), "--format", "npy", "--output", str(out))
    assert p.stdout.split() == [str(out), str(tmp_path / "v.vocab.txt")]
    (tmp_path / "v.npy").unlink()  # the sidecar alone is enough to refuse
    p = cli("export", str(files / "vec.txt"), "--format", "npy", "--output", str(out), check=False)
    assert p.returncode == 2 and p.stderr.strip().endswith(f"{tmp_path / 'v.vocab.txt'}: exists; pass --overwrite "
                                                           "to replace it or choose another --output")
    assert not out.exists()
    cli("export", str(files / "vec.txt"), "--format", "npy", "--output", str(out), "--overwrite")
    assert out.exists()


def test_similar_ignores_case_as_eval_does_and_q_works_after_the_subcommand(files, tmp_path):
    """Guards: `similar` refusing `Alpha` in a lowercased vocabulary that `eval` matches without
    case; -q accepted only before the subcommand."""
    exact = cli("similar", str(files / "vec.txt"), "alpha")
    p = cli("similar", str(files / "vec.txt"), "Alpha", "--negative", "GAMMA")
    assert p.stdout.splitlines()[0].split("\t")[0] == cli("similar", str(files / "vec.txt"), "alpha", "--negative",
                                                           "gamma").stdout.splitlines()[0].split("\t")[0] == "beta"
    assert "'Alpha' is not in the vocabulary; using 'alpha' (case ignored, as eval does)" in p.stderr
    p = cli("similar", str(files / "vec.txt"), "ALPHA", "-q")
    assert p.stdout == exact.stdout and p.stderr == ""
    p = cli("prepare", str(files / "a.txt"), "--output", str(tmp_path / "o"), "-q")
    assert p.stderr == "" and json.loads(p.stdout)["rows"] == 1
    assert "INFO prepare: wrote 1 rows" in cli("prepare", str(files / "a.txt"), "--output", str(tmp_path / "o2")).stderr
    assert cli("-q", "prepare", str(files / "a.txt"), "--output", str(tmp_path / "o3")).stderr == ""
    prepare = ["prepare", str(files / "a.txt"), "--output"]
    assert cli("--log-level", "error", *prepare, str(tmp_path / "o4")).stderr == ""
    assert cli(*prepare, str(tmp_path / "o5"), "--log-level", "error").stderr == ""  # was: before the subcommand only


def test_ctrl_c_in_the_vocabulary_pass_is_one_line_and_leaves_nothing(files):
    """Guards: Ctrl-C while the vocabulary is counted ending in a KeyboardInterrupt traceback."""
    p = cli("train", str(files / "corpus"), "--output", str(files / "r"), check=False,
            env={"W2V_DIST_FAULT": "int@vocab:0:1"})
    assert p.returncode == 130 and "Traceback" not in p.stderr, p.stderr
    assert p.stderr.count("\n") == 1 and p.stderr.startswith(f"w2v-dist: train interrupted; {files / 'r'} keeps"), p.stderr
    assert not (files / "r").exists()


def test_ctrl_c_while_torch_imports_is_one_line(files):
    """Ctrl-C in a train command's first seconds, while torch imports (its library mapped, the rest
    of the import to come): the same one line as in the vocabulary pass. Guards: the import done
    outside the command's handling of Ctrl-C (a KeyboardInterrupt traceback, under torchrun one
    per rank)."""
    p = subprocess.Popen([sys.executable, "-m", "w2v_dist", "train", str(files / "corpus"), "--output",
                          str(files / "r-import")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         cwd=ROOT, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while "libtorch" not in Path(f"/proc/{p.pid}/maps").read_text() and time.monotonic() < deadline:
        time.sleep(0.005)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130 and "Traceback" not in err, err
    assert err.count("\n") == 1 and err.startswith("w2v-dist: train interrupted; "), err


def test_an_error_left_to_rank_0_is_said_by_a_rank_that_outlives_it(monkeypatch, capsys):
    """Guards: an error marked as every rank's but met by a non-zero rank alone (rank 0 waiting for
    it in a collective, not failing) never said by anyone. Rank 0 says such an error at once; a
    non-zero rank waits for torchrun to stop it (rank 0 failing with the same error) and, still
    there after the grace, says it itself, naming the rank; an unmarked error names the rank at once.
    (The torchrun path, where the grace ends with rank 0's exit: test_distributed.py.)"""
    from w2v_dist import cli as cli_module
    from w2v_dist.config import ConfigError, raised_alike
    monkeypatch.setattr(cli_module, "RANK_0_GRACE_S", 0.01)
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in ("0", "1"):
        monkeypatch.setenv("RANK", rank)
        cli_module._error(raised_alike(ConfigError("same everywhere")), "same everywhere")
        cli_module._error(ConfigError("mine"), "mine")
    assert capsys.readouterr().err.splitlines() == [
        "w2v-dist: error: same everywhere", "w2v-dist: error: mine [rank 0]",
        "w2v-dist: error: same everywhere [rank 1]", "w2v-dist: error: mine [rank 1]"]


def test_a_reader_that_closes_the_pipe_early_is_not_an_error(files):
    """``w2v-dist similar ... | head -1``: the reader closes stdout before the command writes.
    Quiet, exit 141 (128 + SIGPIPE, as a shell reports a Unix tool stopped so). Guards: the
    BrokenPipeError taken for a store that stopped answering ("the store did not answer
    ([Errno 32] Broken pipe)")."""
    p = subprocess.Popen([sys.executable, "-m", "w2v_dist", "similar", str(files / "vec.txt"), "alpha"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    p.stdout.close()  # before the command has imported anything, so before it writes
    _, err = p.communicate(timeout=120)
    assert p.returncode == 141 and err == b"", err
