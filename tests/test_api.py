"""The Python API as a script or a notebook uses it (``w2v_dist.train``, ``Vectors``): what it
leaves of the caller's state, and its bad keywords. Found by an exploratory pass (2026-11-27)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import ROOT

FAST = dict(epochs=1, dim=8, min_count=3, threads=1, replicas=1, log_every=600.0)


def _script(tmp_path: Path, body: str, timeout: float = 300) -> subprocess.CompletedProcess:
    path = tmp_path / "script.py"
    path.write_text(textwrap.dedent(body))
    return subprocess.run([sys.executable, str(path)], capture_output=True, text=True, cwd=ROOT, timeout=timeout)


def test_train_gives_the_caller_its_signal_handlers_and_numba_threads_back(small_corpus, tmp_path):
    """Guards: train() left its SIGINT/SIGTERM handlers installed (a later Ctrl-C in the notebook
    was taken for the finished run's, 'finishing this step, writing a checkpoint'), and numba's
    thread count at the kernel's; a pathlib.Path and the tokenizer's CLI names as keywords refused
    ('unexpected keyword argument lowercase'); train() from a thread other than the main one
    failing after the vocabulary pass (Python takes signals in the main thread only)."""
    p = _script(tmp_path, f"""
        import signal, threading
        from pathlib import Path
        import numba
        import w2v_dist

        mine = lambda signum, frame: None
        signal.signal(signal.SIGINT, mine)
        threads = min(2, numba.config.NUMBA_NUM_THREADS)
        numba.set_num_threads(threads)
        summary = w2v_dist.train(Path({str(small_corpus)!r}), Path({str(tmp_path / "r1")!r}), lowercase=False,
                                 **{FAST!r})
        assert summary["words"] > 0, summary
        assert signal.getsignal(signal.SIGINT) is mine and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        assert numba.get_num_threads() == threads, numba.get_num_threads()
        out = {{}}
        t = threading.Thread(target=lambda: out.update(w2v_dist.train({str(small_corpus)!r}, {str(tmp_path / "r2")!r},
                                                                     **{FAST!r})))
        t.start(); t.join()
        assert out["words"] > 0 and out["vocab_size"] < summary["vocab_size"], out  # lowercased: fewer words
        print("ok")
    """)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr[-3000:]


def test_bad_keywords_are_refused_before_anything_is_written(small_corpus, tmp_path):
    """Guards: window=2.5 failing in the kernel after the run directory was written (and the
    corrected call then refused as a changed setting); nondeterministic="false" taken as true;
    a memory:// run with reader processes failing late as 'no vocabulary here'."""
    import w2v_dist
    from w2v_dist.config import ConfigError

    for kw, says in ((dict(window=2.5), "--window must be an integer, got 2.5"),
                     (dict(nondeterministic="false"), "--nondeterministic must be True or False, got 'false'"),
                     (dict(dim="100"), "--dim must be an integer, got '100'")):
        with pytest.raises(ConfigError, match=says):
            w2v_dist.train(str(small_corpus), str(tmp_path / "r"), **kw)
        assert not (tmp_path / "r").exists()
    with pytest.raises(ConfigError, match="memory:// is this process's own, which its reader processes"):
        w2v_dist.train(str(small_corpus), "memory://api/r", workers=2)


def test_an_unguarded_script_with_reader_processes_is_told_the_guard(small_corpus, tmp_path):
    """A script that calls train() at its top level, with --workers: each spawned reader re-imports
    it and calls train() again. Guards: that said as the run's own lock held by another train
    ('in use by another w2v-dist train ... delete .lock'), nothing naming the guard."""
    p = _script(tmp_path, f"""
        import w2v_dist
        w2v_dist.train({str(small_corpus)!r}, {str(tmp_path / "r")!r}, workers=1, **{FAST!r})
    """)
    assert p.returncode != 0 and 'Put the call under `if __name__ == "__main__":`' in p.stderr, p.stderr[-3000:]
    assert "RunLockedError" not in p.stderr, p.stderr[-3000:]


def test_vectors_refuses_max_words_below_one_and_takes_paths(tmp_path):
    """Guards: save(max_words=-5) writing every word but the last 5, silently."""
    from w2v_dist.vectors import Vectors

    (tmp_path / "v.txt").write_text("3 2\nalpha 0.1 0.2\nbeta 0.3 -0.1\ngamma -0.2 0.4\n")
    v = Vectors.load(tmp_path / "v.txt")
    assert list(v) == ["alpha", "beta", "gamma"]
    for bad in (0, -5):
        with pytest.raises(ValueError, match="max_words must be >= 1"):
            v.save(tmp_path / "w.txt", max_words=bad)
    v.save(tmp_path / "w.txt", max_words=2)
    assert list(Vectors.load(tmp_path / "w.txt")) == ["alpha", "beta"]


def test_the_errors_a_caller_catches_are_on_the_package(tmp_path):
    """``except w2v_dist.ConfigError`` and the others, as the CLI's one-line errors are, without
    importing torch to name them. Guards: each only in its own module (w2v_dist.config, ...)."""
    code = textwrap.dedent(f"""
        import sys
        import w2v_dist
        names = ["ConfigError", "CorpusError", "StorageError", "VocabError", "RunExistsError", "RunLockedError",
                 "DivergedError", "PrepareError", "VectorsFormatError", "EvaluationError"]
        assert set(names) <= set(dir(w2v_dist))
        assert issubclass(w2v_dist.ConfigError, ValueError) and "torch" not in sys.modules
        try:
            w2v_dist.train({str(tmp_path / 'none')!r}, {str(tmp_path / 'r')!r}, dim=0)
        except w2v_dist.ConfigError as e:
            print("config:", e)
        try:
            w2v_dist.train({str(tmp_path / 'none')!r}, {str(tmp_path / 'r')!r}, workers=0)
        except w2v_dist.CorpusError as e:
            print("corpus:", e)
        assert all(isinstance(getattr(w2v_dist, n), type) for n in names)
    """)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.splitlines() == ["config: --dim must be a positive integer, got 0",
                                     f"corpus: {tmp_path / 'none'}: no such file or directory (check the path; cloud "
                                     "URIs need a scheme like s3://)"], p.stdout + p.stderr[-2000:]
