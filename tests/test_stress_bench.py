"""bench/stress_corpora.py and bench/stress.py: the stress set's measures and corpora are what
they claim, checked against plain counts on files the tests write (no Debian package, no training)."""

from __future__ import annotations

import collections
import gzip
import json
import math
import os
import re

import numpy as np
import pytest

from bench import stress
from bench import stress_corpora as sc


def _write(path, lines):
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))
    return str(path)


def _words(line):  # an oracle for w2v_dist's default tokenizer on ASCII text
    return re.findall(r"\w+", line.lower())


def test_corpus_stats_match_a_plain_count(tmp_path):
    lines = ["the cat sat", "a dog", "a dog", "a dog", "a dog", "the cat sat", "The end.", "x y z w v x y z w v"]
    stats = sc.corpus_stats(_write(tmp_path / "c.txt", lines))
    tokens = [t for line in lines for t in _words(line)]
    top, n = collections.Counter(tokens).most_common(1)[0]
    assert stats["lines"] == len(lines)
    assert stats["words"] == sum(len(line.split()) for line in lines)
    assert stats["tokens"] == len(tokens)
    assert stats["dup_line_fraction"] == round(4 / len(lines), 4)  # 3 more 'a dog', 1 more 'the cat sat'
    assert stats["dup_word_fraction"] == round((3 * 2 + 3) / stats["words"], 4)
    assert stats["max_identical_run"] == 4
    assert (stats["top1_token"], stats["top1_share"]) == (top, round(n / len(tokens), 4))
    assert stats["distinct_tokens"] == len(set(tokens))
    # 5-grams over the running token stream: count the repeats by brute force
    grams = [tuple(tokens[i:i + 5]) for i in range(len(tokens) - 4)]
    assert stats["dup_5gram_fraction"] == round((len(grams) - len(set(grams))) / len(grams), 4)
    assert stats["dup_5gram_fraction"] > 0


@pytest.mark.parametrize("losses, flagged", [
    ([4.1, 3.0, 6.3], True),  # 6.3 / 4.1 = 1.54: climbed above where it started
    ([4.1, 6.0, 2.0], False),  # 1.46: under the bar
    ([4.1, float("nan"), 3.0], True),  # not finite
    ([4.1, 3.5, float("inf")], True),
    ([4.1, 3.0, 2.5], False),
])
def test_a_spike_is_a_loss_above_1_5_times_the_first_interval(tmp_path, losses, flagged):
    run = tmp_path / "run"
    run.mkdir()
    recs = [{"time": i, "step": i, "epoch": 0, "words": 100 * i, "lr": 0.025, "loss": x} for i, x in enumerate(losses)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    s = stress.loss_series(str(run))
    assert s["flagged"] is flagged
    assert s["first"] == 4.1 and s["last"] == losses[-1] or math.isnan(s["last"]) or math.isinf(s["last"])
    assert s["intervals"] == len(losses)


def test_a_run_without_examples_is_not_a_spike(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    recs = [{"time": i, "step": i, "epoch": 0, "words": 100 * i, "lr": 0.025, "loss": 0.0} for i in range(3)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    s = stress.loss_series(str(run))
    assert s["no_examples"] and s["flagged"] is False
    assert stress.loss_series(str(tmp_path / "missing"))["intervals"] == 0


def test_a_sample_keeps_a_repetition_in_the_middle_in_proportion(tmp_path):
    lines = ([f"w{i} x x x x" for i in range(4000)] + ["rep rep rep rep rep"] * 2000
             + [f"v{i} y y y y" for i in range(4000)])
    src = _write(tmp_path / "src.txt", lines)
    info = stress.sample_text(src, str(tmp_path / "s.txt"), 50_000, 5_000, block_words=500)
    sample = (tmp_path / "s.txt").read_text().splitlines()
    assert 5_000 <= info["words"] < 5_000 + 5 and info["blocks"] == 10
    assert 0.1 <= sample.count("rep rep rep rep rep") / len(sample) <= 0.3  # 20% of the whole
    # runs of whole lines in file order, from the start to the end of the file
    positions = [i for i, line in enumerate(lines) if line in set(sample) and not line.startswith("rep")]
    assert positions == sorted(positions) and positions[0] < 100 and positions[-1] > 9000


@pytest.fixture
def tiny_gcide(tmp_path, monkeypatch):
    for name, value in [("BASE_WORDS", 6_000), ("REPEATS", 50), ("ONE_WORD_TOKENS", 2_000),
                        ("HUGE_LINE_WORDS", 1_000), ("TINY_VOCAB", 5)]:
        monkeypatch.setattr(sc, name, value)
    path = tmp_path / "gcide.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for i in range(3_000):
            f.write(f"Word{i % 97} of the alpha{i % 13}, beta{i} gamma. the{i % 3} a a\n")
    return str(path)


def _build(name, gcide, out, seed=1):
    record = sc.build(sc.BY_NAME[name], str(out), gcide=gcide, seed=seed)
    return record, open(sc.paths(str(out), name)[0], encoding="utf-8").read().splitlines()


def test_repeat_paragraph_is_one_contiguous_run_in_the_middle(tiny_gcide, tmp_path):
    record, lines = _build("repeat-paragraph", tiny_gcide, tmp_path)
    paragraph = record["notes"]["paragraph"]
    assert 50 <= len(paragraph.split()) <= 100
    at = record["notes"]["at_line"]
    assert lines[at:at + 50] == [paragraph] * 50 and lines[at - 1] != paragraph and lines[at + 50] != paragraph
    assert lines.count(paragraph) == 50 == record["max_identical_run"]
    assert abs(at - (len(lines) - 50) / 2) <= 1


def test_one_word_lines_hold_one_token_each(tiny_gcide, tmp_path):
    record, lines = _build("one-word-lines", tiny_gcide, tmp_path)
    assert len(lines) == 2_000 and all(len(_words(line)) == 1 for line in lines)


def test_huge_lines_hold_the_base_words_in_lines_of_the_given_length(tiny_gcide, tmp_path):
    record, lines = _build("huge-lines", tiny_gcide, tmp_path)
    assert all(len(line.split()) == 1_000 for line in lines[:-1]) and 0 < len(lines[-1].split()) <= 1_000
    assert 6_000 <= record["words"] < 6_000 + 20


def test_tiny_vocab_keeps_the_most_frequent_tokens_only(tiny_gcide, tmp_path):
    record, lines = _build("tiny-vocab", tiny_gcide, tmp_path)
    with gzip.open(tiny_gcide, "rt") as f:
        top = {w for w, _ in collections.Counter(t for line in f for t in _words(line)).most_common(5)}
    assert {t for line in lines for t in _words(line)} == top == set(record["notes"]["vocabulary"])


def test_sorted_dominant_puts_each_dominant_token_in_one_run(tiny_gcide, tmp_path):
    record, lines = _build("sorted-dominant", tiny_gcide, tmp_path)
    freq = collections.Counter(t for line in lines for t in _words(line))

    def dominant(line):
        c = collections.Counter(_words(line))
        return max(c, key=lambda w: (c[w], freq[w]))

    keys = [dominant(line) for line in lines]
    runs = [k for i, k in enumerate(keys) if i == 0 or keys[i - 1] != k]
    assert len(runs) == len(set(runs))  # a token's lines are together
    assert [freq[k] for k in runs] == sorted((freq[k] for k in runs), reverse=True)  # most frequent first


def test_build_is_deterministic_and_skips_what_is_built(tiny_gcide, tmp_path):
    a, _ = _build("repeat-paragraph", tiny_gcide, tmp_path / "a", seed=3)
    b, _ = _build("repeat-paragraph", tiny_gcide, tmp_path / "b", seed=3)
    assert a["sha256"] == b["sha256"]
    txt = sc.paths(str(tmp_path / "a"), "repeat-paragraph")[0]
    before = os.stat(txt).st_mtime_ns
    assert sc.build(sc.BY_NAME["repeat-paragraph"], str(tmp_path / "a"), gcide=tiny_gcide, seed=3) == a
    assert os.stat(txt).st_mtime_ns == before
    c, _ = _build("repeat-paragraph", tiny_gcide, tmp_path / "c", seed=5)
    assert c["notes"]["paragraph"] != a["notes"]["paragraph"]


def test_a_missing_package_is_one_line_that_says_what_to_install(tmp_path, capsys, monkeypatch):
    fake = sc.Corpus("fake", "a corpus from a package nobody has", lambda ctx: iter(["x"]), ("no-such-package-w2v",))
    monkeypatch.setitem(sc.BY_NAME, "fake", fake)
    assert sc.main([str(tmp_path), "--only", "fake"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "apt-get install -y --no-install-recommends no-such-package-w2v" in err
    assert not os.listdir(tmp_path)
    assert set(sc.APT_PACKAGES) >= {"bible-kjv", "dict-wn", "manpages", "python3-doc", "libpython3.11-stdlib",
                                    "libc6-dev", "fail2ban", "python3-haproxy-log-analysis", "logstalgia"}


def test_log_fields_are_drawn_anew_in_their_shape_and_the_words_stay():
    import random

    line = ('Dec 9 12:00:03 localhost haproxy[12345]: 127.0.0.1:38037 [09/Dec/2013:10:01:04.205] id=deadbeef01 '
            'MSG=0A1B2C3D4E "GET /x HTTP/1.1" 404 17610 +0300 Gecko/20100101 port 0042')
    out = sc._redraw_fields(line, random.Random(1), clock=3723)
    assert len(out.split()) == len(line.split())
    assert out.startswith("Dec 9 01:02:03 localhost haproxy[") and "[09/Dec/2013:01:02:03." in out
    for kept in ("404", "HTTP/1.1", "+0300", "Gecko/20100101", "localhost", "GET /x"):
        assert kept in out
    pid, ip, port, frac, hex1, hex2, size, tail = re.fullmatch(
        r"Dec 9 01:02:03 localhost haproxy\[(\d+)\]: ([\d.]+):(\d+) \[09/Dec/2013:01:02:03\.(\d+)\] id=(\w+) "
        r'MSG=(\w+) "GET /x HTTP/1.1" 404 (\d+) \+0300 Gecko/20100101 port (\d+)', out).groups()
    assert len(pid) == 5 and pid[0] != "0" and pid != "12345" and len(port) == 5 and len(size) == 5
    assert len(frac) == 3 and len(tail) == 4 and tail != "0042"
    assert ip != "127.0.0.1" and all(0 <= int(x) <= 255 for x in ip.split(".")) and ip.count(".") == 3
    assert re.fullmatch(r"[0-9a-f]{10}", hex1) and hex1 != "deadbeef01"
    assert re.fullmatch(r"[0-9A-F]{10}", hex2) and hex2 != "0A1B2C3D4E"


def test_logs_are_the_real_lines_then_resampled_blocks_of_them(monkeypatch):
    files = [("/a.log", [f"Jan 1 00:00:{i:02d} host sshd[{1000 + i}]: Failed password for user{i} from 10.0.0.{i} "
                         f"port {50000 + i} ssh2" for i in range(20)]),
             ("/b.log", [f'host{i} - - [01/Jan/2020:00:00:{i:02d} +0000] "GET /p{i} HTTP/1.1" 200 {1000 * (i + 1)}'
                         for i in range(10)])]
    monkeypatch.setattr(sc, "_log_files", lambda: files)
    monkeypatch.setattr(sc, "LOG_WORDS", 3_000)
    monkeypatch.setattr(sc, "LOG_BLOCK_LINES", 5)

    def build(seed):
        ctx = sc.Context(gcide="", seed=seed)
        return list(sc.build_logs(ctx)), ctx.notes

    lines, notes = build(1)
    real = files[0][1] + files[1][1]
    assert lines[:len(real)] == real and notes["real_lines"] == len(real)
    words = sum(len(line.split()) for line in lines)
    assert 3_000 <= words < 3_000 + 14 and notes["resampled_blocks"] > 0

    def template(line):  # the line with its variable fields masked
        line = re.sub(r"\d\d:\d\d:\d\d ", "T ", re.sub(r"\d{1,3}(?:\.\d{1,3}){3}", "IP", line))
        return re.sub(r"(?<![\d/])\d{4,}", "#", line)

    templates = {template(line) for line in real}
    resampled = lines[len(real):]
    assert all(template(line) in templates for line in resampled)
    assert not set(resampled) & set(real)  # every one has a field drawn anew
    assert build(1)[0] == lines and build(2)[0] != lines


def test_code_is_a_source_line_per_line_python_then_c(tmp_path, monkeypatch):
    py, h = _write(tmp_path / "m.py", ["def f(x):", "", "    return  x + 1   # one", "   "]), \
        _write(tmp_path / "m.h", ["#ifndef M_H", "", "#define M_H 1", "#endif"])
    monkeypatch.setattr(sc, "_package_files", lambda packages, pattern: [py] if "python" in pattern else [h])
    ctx = sc.Context(gcide="", seed=1)
    assert list(sc.build_code(ctx)) == ["def f(x):", "return x + 1 # one", "#ifndef M_H", "#define M_H 1", "#endif"]
    assert ctx.notes["python_files"] == ctx.notes["c_headers"] == 1


def _row(spike, answered, nonfinite=0, exit=0):
    loss = {"intervals": 3, "first": 4.0, "max": 4.0 * spike, "last": 3.0, "spike": spike, "flagged": spike > 1.5}
    ours = {"exit": exit, "loss": loss, "analogy": 0.1, "analogy_oov": 0.5, "analogy_answered": answered,
            "ws353": 0.4, "ws353_oov": 0.1, "nonfinite_vectors": nonfinite, "train_loop_words_per_s": 100.0}
    theirs = {"analogy": 0.2, "analogy_answered": answered, "ws353": 0.5, "train_loop_words_per_s": 200.0}
    return {"corpus": "c", "tokens": 1000}, {"model": "sg", "runs": [{"seed": 1, "w2v_dist": ours, "gensim": theirs}]}


def test_the_table_marks_spikes_and_hides_analogies_with_too_few_questions():
    cells = [c.strip() for c in stress.table_row(*_row(2.0, 99, nonfinite=7)).split("|")[1:-1]]
    assert cells[3:7] == ["4/8/3", "2 **SPIKE**", "0 (7 non-finite vectors)", "n/a (99 q)"]
    cells = [c.strip() for c in stress.table_row(*_row(1.2, 100)).split("|")[1:-1]]
    assert cells[4] == "1.2" and cells[6].startswith("0.1000/0.2000 (100 q") and cells[8] == "0.50"


def test_neighbour_agreement_is_one_for_a_rotation_and_low_for_noise():
    """Cosine neighbours do not change under a rotation of the space; unrelated vectors share
    about k / pool of them by chance."""
    from w2v_dist.vectors import Vectors

    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(600)]
    a = rng.standard_normal((600, 20))
    q, _ = np.linalg.qr(rng.standard_normal((20, 20)))
    args = dict(queries=100, pool=500, k=10)
    assert stress.neighbour_agreement(Vectors(words, a), Vectors(words[::-1], (a @ q)[::-1]), **args) == 1.0
    noise = stress.neighbour_agreement(Vectors(words, a), Vectors(words, rng.standard_normal((600, 20))), **args)
    assert noise < 0.1
    assert stress.neighbour_agreement(Vectors(words, a), None) is None
