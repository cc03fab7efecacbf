"""The two standard word-vector benchmarks, scored exactly as gensim 4.4 scores them.

- :func:`evaluate_analogies`: Google's analogy questions (``: section`` lines, then ``a b c d``
  meaning a:b :: c:d), answered by 3CosAdd (``most_similar(positive=[b, c], negative=[a])``):
  the numbers of gensim's ``KeyedVectors.evaluate_word_analogies``.
- :func:`evaluate_similarity`: word pairs with human scores (WordSim-353 style ``w1<TAB>w2<TAB>score``),
  Pearson and Spearman correlation with the cosine: gensim's ``evaluate_word_pairs``.

gensim's rules, kept so that numbers compare across tools: only the first ``restrict_vocab`` rows
(the most frequent words) are searched; with ``case_insensitive`` every word is upper-cased and a
word with several case variants uses the first (most frequent) one; a question or pair with any
word outside that vocabulary is skipped and counted as OOV, not as wrong; the analogy answer is the
best of the top 5 neighbours (query words excluded) that is not a case variant of a query word.

Malformed lines (not ``a b c d``; not two words and a score) are skipped as gensim skips them,
and counted (``malformed``, ``first_malformed_line``): gensim only logs them. A pair whose score
is not a finite number (``nan``, ``inf``) is such a line here; gensim keeps it, and one NaN turns
both of its correlations into NaN.

Unlike gensim, analogy questions are answered in batches (one matrix multiply and one top-k per
few hundred questions instead of one pass over the vocabulary per question): the 19,544 Google
questions take seconds, not minutes. Results are plain dicts, ready for ``json.dumps``: a
correlation that is undefined (a constant side) is ``None``, never NaN, so the JSON is valid.

Example:

>>> import numpy as np
>>> from w2v_dist import storage
>>> from w2v_dist.vectors import Vectors

log = logging.getLogger(__name__)
>>> from w2v_dist.evaluate import evaluate_analogies, format_report
>>> vecs = Vectors(["king", "queen", "man", "woman"],
...                np.array([[1, 1], [1, -1], [2, 1.1], [2, -1]], dtype=np.float32))
>>> storage.write_text("memory://doc/q.txt", ": royals\\nman king woman queen\\nman king woman emperor\\n")
>>> r = evaluate_analogies(vecs, "memory://doc/q.txt")
>>> r["correct"], r["incorrect"], r["oov"], r["accuracy"]
(1, 0, 1, 1.0)
"""

from __future__ import annotations

import io
import logging
import warnings

import numpy as np

from w2v_dist import storage
from w2v_dist.config import ConfigError
from w2v_dist.vectors import Vectors

log = logging.getLogger(__name__)

TOPN = 5  # gensim looks at the 5 nearest neighbours for an answer that is not a query word
_BATCH_SCORES = 1 << 25  # question x word scores per batch (128 MB of float32)


class EvaluationError(ValueError):
    """A benchmark file that cannot be used; the message names it and says what was expected."""


def evaluate_analogies(vectors: Vectors, questions_uri: str, restrict_vocab: int | None = 300000,
                       case_insensitive: bool = True, storage_options: dict | None = None) -> dict:
    """Accuracy on an analogy question file; same numbers as gensim's ``evaluate_word_analogies``.

    Returns ``{"task": "analogy", "sections": [{"section", "correct", "incorrect", "oov",
    "accuracy"}...], "correct", "incorrect", "oov", "questions", "accuracy", "oov_ratio", ...}``.
    ``accuracy`` is correct / (correct + incorrect), 0.0 when nothing was answered (as gensim);
    ``oov_ratio`` is skipped / questions as a fraction (gensim logs it as a percentage);
    ``malformed`` counts the lines that are not 4 words (blank lines aside), skipped as gensim does.
    """
    n_rows, lookup, canon = _restricted_vocab(vectors, restrict_vocab, case_insensitive)
    sections: list[str] = []
    section_oov: list[int] = []
    asked: list[tuple[int, int, int, int, int]] = []  # (section, a, b, c, expected) as canonical rows
    questions = 0
    malformed: list[int] = []  # line numbers
    for line_no, line in enumerate(_read_text(questions_uri, storage_options, "analogy questions file"), 1):
        if line.startswith(": "):
            sections.append(line.lstrip(": ").strip())
            section_oov.append(0)
            continue
        words = line.split()
        if not words:
            continue
        if not sections:
            raise EvaluationError(f"{questions_uri}: line {line_no} comes before the first ': section' header; "
                             f"is this a Google analogy file (questions-words.txt)?")
        if len(words) != 4:
            malformed.append(line_no)  # gensim skips them too, but says so only in its log
            continue
        questions += 1
        rows = [lookup.get(w.upper() if case_insensitive else w) for w in words]
        if None in rows:
            section_oov[-1] += 1
            continue
        asked.append((len(sections) - 1, *rows))
    if not questions:
        raise EvaluationError(f"{questions_uri}: no analogy questions (lines 'a b c d' under ': section' headers); "
                              "is this a Google analogy file (questions-words.txt)?")

    table = np.array(asked, np.int64).reshape(-1, 5)
    right = _answer(vectors.unit[:n_rows], canon, table[:, 1:])
    correct = np.bincount(table[right, 0], minlength=len(sections))
    incorrect = np.bincount(table[~right, 0], minlength=len(sections))
    per_section = [
        {"section": name, "correct": int(c), "incorrect": int(i), "oov": oov, "accuracy": _ratio(c, c + i)}
        for name, c, i, oov in zip(sections, correct, incorrect, section_oov)
    ]
    total_correct, total_incorrect, oov = int(correct.sum()), int(incorrect.sum()), sum(section_oov)
    return {
        "task": "analogy",
        "questions_uri": questions_uri,
        "restrict_vocab": n_rows,
        "case_insensitive": case_insensitive,
        "sections": per_section,
        "correct": total_correct,
        "incorrect": total_incorrect,
        "oov": oov,
        "questions": questions,
        "accuracy": _ratio(total_correct, total_correct + total_incorrect),
        "oov_ratio": _ratio(oov, questions),
        "malformed": len(malformed),
        "first_malformed_line": malformed[0] if malformed else None,
    }


def _answer(unit: np.ndarray, canon: np.ndarray, abcd: np.ndarray) -> np.ndarray:
    """Whether each question ``(a, b, c, expected)`` (canonical rows) is answered right."""
    import torch  # here, not at the top: the rest of evaluation (and `w2v-dist eval`'s errors) need none of it

    n_rows = len(unit)
    k = min(TOPN, n_rows)
    with warnings.catch_warnings():  # torch warns on read-only arrays; nothing here writes to them
        warnings.simplefilter("ignore", UserWarning)
        unit_t = torch.from_numpy(unit)
        canon_t = torch.from_numpy(canon)
        abcd_t = torch.from_numpy(abcd)
    right = torch.zeros(len(abcd), dtype=torch.bool)
    batch = max(1, _BATCH_SCORES // max(n_rows, 1))
    for start in range(0, len(abcd), batch):
        q = abcd_t[start:start + batch]
        a, b, c, expected = q.unbind(1)
        query = unit_t[b] + unit_t[c] - unit_t[a]
        query /= query.norm(dim=1, keepdim=True).clamp_min(1e-30)
        sims = query @ unit_t.T
        sims.scatter_(1, q[:, :3], float("-inf"))  # the query words themselves are never the answer
        top_sims, top = sims.topk(k, dim=1)  # sorted, best first
        top_canon = canon_t[top]
        valid = top_sims > float("-inf")  # fewer than k candidates in a tiny vocabulary
        # gensim also passes over a case variant of a query word ("Paris" for "paris") ...
        usable = valid & (top_canon != a[:, None]) & (top_canon != b[:, None]) & (top_canon != c[:, None])
        # ... and when none of the top 5 is usable, its answer is the last one it looked at.
        pick = torch.where(usable.any(1), usable.int().argmax(1), valid.sum(1) - 1)
        predicted = top_canon.gather(1, pick.clamp_min(0)[:, None])[:, 0]
        right[start:start + batch] = (predicted == expected) & (pick >= 0)
    return right.numpy()


def evaluate_similarity(vectors: Vectors, pairs_uri: str, restrict_vocab: int | None = 300000,
                        case_insensitive: bool = True, storage_options: dict | None = None) -> dict:
    """Correlation with human similarity scores; same numbers as gensim's ``evaluate_word_pairs``.

    Returns ``{"task": "similarity", "pearson", "spearman", "pairs", "oov", "oov_ratio", "malformed", ...}``;
    ``oov_ratio`` is oov / (pairs + oov) as a fraction (gensim returns it as a percentage); a
    correlation is ``None`` where it is undefined (every score, or every cosine, the same, or a
    cosine not finite: ``nonfinite`` counts the pairs whose vectors hold NaN or inf).
    ``malformed`` counts the lines skipped (blank lines aside) as not ``word1<TAB>word2<TAB>score``,
    gensim's rule, or with a score that is not finite: gensim keeps a ``nan`` score, and then
    returns NaN for both correlations, whatever the other pairs say. p-values are left out: they
    would need scipy.
    """
    _, lookup, _ = _restricted_vocab(vectors, restrict_vocab, case_insensitive)
    gold, left, right = [], [], []
    oov = 0
    malformed: list[int] = []  # line numbers
    for line_no, line in enumerate(_read_text(pairs_uri, storage_options, "word-pairs file"), 1):
        if line.startswith("#") or not line.strip():
            continue
        fields = line.split("\t")  # as gensim: words are not stripped, the score may carry the newline
        if len(fields) != 3:
            malformed.append(line_no)
            continue
        a, b, score = (f.upper() for f in fields) if case_insensitive else fields
        try:
            score = float(score)
        except ValueError:
            score = float("nan")
        if not np.isfinite(score):
            malformed.append(line_no)
            continue
        if a not in lookup or b not in lookup:
            oov += 1
            continue
        gold.append(score)
        left.append(lookup[a])
        right.append(lookup[b])
    if not gold:
        raise EvaluationError(f"{pairs_uri}: no usable word pairs ({oov} out of vocabulary, {len(malformed)} "
                              "malformed); expected lines 'word1<TAB>word2<TAB>score' with words in the first "
                              f"{len(lookup)} of the vocabulary")
    unit = vectors.unit
    model = np.einsum("ij,ij->i", unit[left], unit[right]).astype(np.float64)
    gold = np.array(gold, np.float64)
    nonfinite = int((~np.isfinite(model)).sum())
    if nonfinite:  # gensim gives NaN for both; a NaN ranked last gave a made-up spearman here
        log.warning("%s: %d of %d pairs have no finite cosine (their vectors hold NaN or inf): the correlations are "
                    "n/a", pairs_uri, nonfinite, len(model))
    return {
        "task": "similarity",
        "pairs_uri": pairs_uri,
        "restrict_vocab": min(restrict_vocab or len(vectors), len(vectors)),
        "case_insensitive": case_insensitive,
        "pearson": None if nonfinite else _pearson(gold, model),
        "spearman": None if nonfinite else _pearson(_rank(gold), _rank(model)),
        "nonfinite": nonfinite,
        "pairs": len(gold),
        "oov": oov,
        "oov_ratio": _ratio(oov, len(gold) + oov),
        "malformed": len(malformed),
        "first_malformed_line": malformed[0] if malformed else None,
    }


def format_report(results: dict) -> str:
    """Plain-text tables for one result of this module, or a dict of several (``{"analogy": ..., ...}``)."""
    if "task" not in results:
        return "\n\n".join(format_report(r) for r in results.values() if isinstance(r, dict))
    if results["task"] == "similarity":
        r = results
        corr = "  ".join(f"{k} {r[k]:.4f}" if r[k] is not None else f"{k} n/a" for k in ("spearman", "pearson"))
        return (f"similarity  {_name(r['pairs_uri'])}: {corr}  "
                f"(pairs {r['pairs']}, OOV {r['oov']} = {100 * r['oov_ratio']:.1f}%"
                f"{', ' + _malformed(r) if r.get('malformed') else ''})")
    r = results
    width = max([len("section")] + [len(s["section"]) for s in r["sections"]])
    case = "case-insensitive" if r["case_insensitive"] else "case-sensitive"
    lines = [f"analogies  {_name(r['questions_uri'])}  (first {r['restrict_vocab']} words, {case})",
             f"{'section':<{width}}  {'correct':>7}  {'total':>6}  {'accuracy':>8}  {'oov':>6}"]
    rows = r["sections"] + [{"section": "Total accuracy", "correct": r["correct"], "incorrect": r["incorrect"],
                             "oov": r["oov"], "accuracy": r["accuracy"]}]
    for s in rows:
        total = s["correct"] + s["incorrect"]
        acc = f"{100 * s['accuracy']:.1f}%" if total else "-"
        lines.append(f"{s['section']:<{width}}  {s['correct']:>7}  {total:>6}  {acc:>8}  {s['oov']:>6}")
    lines.append(f"{r['oov']} of {r['questions']} questions ({100 * r['oov_ratio']:.1f}%) skipped: "
                 f"a word outside the first {r['restrict_vocab']} of the vocabulary")
    if r.get("malformed"):
        lines.append(f"{_malformed(r)}: not 4 words 'a b c d'")
    return "\n".join(lines)


def _malformed(r: dict) -> str:
    n = r["malformed"]
    return f"{n} malformed line{'s' if n != 1 else ''} skipped, the first at line {r['first_malformed_line']}"


# ---- helpers -------------------------------------------------------------------------------------

def _restricted_vocab(vectors: Vectors, restrict_vocab: int | None,
                      case_insensitive: bool) -> tuple[int, dict[str, int], np.ndarray]:
    """``(rows, key -> row, canonical row of each row)`` over the first ``restrict_vocab`` words.

    With ``case_insensitive`` the key is the upper-cased word and it maps to its first (most
    frequent) case variant, as in gensim; ``canonical[i]`` is that row for row ``i``.
    """
    if restrict_vocab is not None and restrict_vocab < 1:  # 0 would mean "all" below, -5 all but 5
        raise ConfigError(f"--restrict-vocab must be >= 1 (the N most frequent words to search), got {restrict_vocab}")
    n_rows = min(restrict_vocab or len(vectors), len(vectors))
    keys = vectors.words[:n_rows]
    if case_insensitive:
        keys = [w.upper() for w in keys]
    lookup: dict[str, int] = {}
    for i, key in enumerate(keys):
        lookup.setdefault(key, i)
    canonical = np.fromiter((lookup[k] for k in keys), np.int64, n_rows)
    return n_rows, lookup, canonical


def _read_text(uri: str, storage_options: dict | None, what: str) -> io.TextIOWrapper:
    data = storage.read_decompressed(uri, storage_options, what, EvaluationError)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise EvaluationError(f"{uri}: not UTF-8 text (byte {e.start}); is this the {what}?") from None
    # split into lines as gensim's text-mode reads do (universal newlines, nothing else)
    return io.TextIOWrapper(io.BytesIO(data), encoding="utf-8")


def _rank(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties getting the average of their ranks (scipy's ``rankdata``)."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    first = np.r_[True, xs[1:] != xs[:-1]]
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], len(x)]
    ranks = np.empty(len(x))
    ranks[order] = ((starts + ends + 1) / 2)[np.cumsum(first) - 1]
    return ranks


def _pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    """Pearson's r; None when it is undefined (either side constant), never NaN: JSON has none."""
    # scaled first (r does not change): the sums of scores near 1e308 would overflow to inf, then NaN
    x, y = (v / np.abs(v).max() if len(v) and np.abs(v).max() > 0 else v for v in (x, y))
    x, y = x - x.mean(), y - y.mean()
    denom = np.linalg.norm(x) * np.linalg.norm(y)
    if len(x) < 2 or denom == 0:
        return None
    return float(np.clip(x @ y / denom, -1.0, 1.0))


def _ratio(num: int, den: int) -> float:
    return float(num / den) if den else 0.0


def _name(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1]
