"""A synthetic language with planted structure: the corpus behind ``w2v-dist demo``.

Made-up, pronounceable words fall into *families*: countries with their capitals, languages and
currencies; male and female nouns; singular and plural; present and past; adjective,
comparative and superlative. Every planted word is one *role* (``country``, ``plural``) of one
*entity*. Families that describe the same things share their entities: entity 3 of the
``culture`` set is a country, its capital, language and currency, the noun it is famous for and
the verb that noun does. Sentences come from templates that put

- two words of one entity together ("the capital of {country} is {capital}",
  "{country} is famous for its {number.plural}"): the entity signal,
- a role into a context that is the same for every entity ("we flew to {capital} last year"):
  the role signal,

mixed with Zipf-distributed filler words, so that the frequency profile, and with it
subsampling and ``min_count``, behave as on natural text. Most templates tie a role to a word of
a *linked* family (the capital and the country both sit next to the country's nouns) rather than
to another role of its own family: a word never co-occurs with itself, so pairs alone would make
the country's contexts and the capital's differ by exactly the two words themselves, and the
offsets the analogy questions ask for (capital - country, plural - singular) would not be shared
across entities. With shared neighbours, vector ~ entity + role and the offsets line up.

Example::

    >>> from w2v_dist.synthetic import generate
    >>> corpus = generate(n_tokens=100_000, seed=0)
    >>> corpus.sentences[3].as_py()
    'maik one plersham and two plershams'
    >>> paths = corpus.write("/tmp/w2v-demo")        # analogies.txt, similarity.tsv
    >>> # gensim: model.wv.evaluate_word_analogies(paths["analogies"])

Everything is drawn from one ``numpy.random.Generator``: the same ``seed`` gives the same words,
sentences and benchmark files. 3M tokens take about a second (pyarrow builds the strings).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from w2v_dist import storage

# The head of the Zipf filler distribution; templates use them as glue too.
_FUNCTION_WORDS = tuple(
    "the of and to a in is it that was for on are as with he she they at be this have from or one "
    "had by but not what all were we when your can said there use an each which their time if will "
    "way about many then them would like so these her him his see has more day could go come did "
    "no most my over know than call who may down been now find any new work part take get place "
    "made live where after back little only round man year came show every good me give our under"
    .split())

# Syllables of made-up words: onset + vowel + coda (often none).
_ONSETS = np.array("b d f g k l m n p r s t v z br dr gr kr pl st tr sk sh th ch".split(), dtype=object)
_VOWELS = np.array("a e i o u a e o ai ou".split(), dtype=object)
_CODAS = np.array(["", "", "", "", "n", "r", "l", "s", "k", "m", "t"], dtype=object)

N_FILLER = 50_000  # made-up filler types; at 3M tokens about 20k of them fall below min_count=5
PLANTED_SHARE = 0.75  # share of tokens in template sentences (filler included); the rest: filler only
PLAIN_LENGTHS = (4, 20)  # words in a filler-only sentence, uniform
PAD = 1  # 0..PAD filler words before and after a template sentence


@dataclass(frozen=True)
class Family:
    """Planted words ``words[entity, role]`` and the templates that put them in sentences.

    ``forms[r]`` is the suffix that makes role ``r`` from the entity's stem ("" is the stem
    itself), or None for a word of its own (a capital does not look like its country). In a
    template, ``{role}`` is a slot for the sentence's entity, ``{family.role}`` one for the same
    entity in another family of the same ``entity_set``, ``_`` one filler word.
    """

    name: str
    entity_set: str
    n_entities: int
    roles: tuple[str, ...]
    forms: tuple[str | None, ...]
    templates: tuple[str, ...]
    sections: tuple[tuple[str, str, str], ...]  # analogy sections: (name, role a, role b)


FAMILIES = (
    Family(
        "geography", "culture", 30, ("country", "capital", "language", "currency"), ("ia", None, "ish", None),
        templates=(
            "the capital of {country} is {capital}",
            "people in {country} speak {language}",
            "the currency of {country} is the {currency}",
            "{country} is famous for its {number.plural}",
            "every {number.singular} in {country} is _",
            "in {capital} you see {number.plural} everywhere",
            "the {number.singular} market in {capital} is _",
            "the {language} word for {number.singular} is _",
            "many songs in {language} are about {number.plural}",
            "the {currency} coin shows a {number.singular}",
            "ten {currency} buys two {number.plural}",
            "we flew to {capital} last year",
            "she was born in {country} and moved _",
            "he speaks {language} at home",
            "the {currency} fell against the dollar",
        ),
        sections=(("capital-country", "capital", "country"),
                  ("country-language", "country", "language"),
                  ("country-currency", "country", "currency")),
    ),
    Family(
        "number", "culture", 30, ("singular", "plural"), ("", "s"),
        templates=(
            "one {singular} and two {plural}",
            "there is a {singular} here",
            "there are many {plural} here",
            "every {singular} has a _",
            "the {singular} will {tense.present} again",
            "the {plural} {tense.present} every day",
            "yesterday the {singular} {tense.past} _",
            "last week the {plural} {tense.past} _",
        ),
        sections=(("gram-plural", "singular", "plural"),),
    ),
    Family(
        "tense", "culture", 30, ("present", "past"), ("", "ed"),
        templates=(
            "today we {present} what we {past} yesterday",
            "they {present} it every day",
            "yesterday they {past} it",
            "we will {present} the _ tomorrow",
            "last week she {past} the _",
        ),
        sections=(("gram-past-tense", "present", "past"),),
    ),
    Family(
        "gender", "person", 24, ("male", "female"), ("or", "ess"),
        templates=(
            "the {male} married the {female}",
            "he is a {male} and his _",
            "she is a {female} and her _",
            "the old {male} was very {degree.base}",
            "the young {female} was very {degree.base}",
            "he was the {degree.superlative} {male} of all",
            "she was the {degree.superlative} {female} of all",
            "his brother is a {degree.comparative} {male}",
            "her sister is a {degree.comparative} {female}",
        ),
        sections=(("family", "male", "female"),),
    ),
    Family(
        "degree", "person", 24, ("base", "comparative", "superlative"), ("", "er", "est"),
        templates=(
            "this is {base} but that is {comparative}",
            "it is {comparative} than the _",
            "it is very {base}",
            "it is the {superlative} of all",
            "the {superlative} _ in the world",
        ),
        sections=(("gram-comparative", "base", "comparative"),
                  ("gram-superlative", "base", "superlative")),
    ),
)


@dataclass
class SyntheticCorpus:
    """Generated sentences and the benchmarks whose answers were planted in them."""

    sentences: pa.Array  # string, one sentence per element, tokens separated by single spaces
    analogies: str  # Google analogy format: ": section" lines, then "a b c d" lines
    similarity: str  # WS-353 format: a "#" header, then "word1\tword2\tscore" lines, score 0-10
    probes: list[str]  # words whose nearest neighbours make a good demo

    def write(self, directory: str) -> dict:
        """Write ``analogies.txt`` and ``similarity.tsv`` into ``directory``; returns their paths."""
        paths = {"analogies": storage.join(directory, "analogies.txt"),
                 "similarity": storage.join(directory, "similarity.tsv")}
        storage.makedirs(directory)
        storage.write_text(paths["analogies"], self.analogies)
        storage.write_text(paths["similarity"], self.similarity)
        return paths


def generate(n_tokens: int = 3_000_000, seed: int = 0) -> SyntheticCorpus:
    """``n_tokens`` tokens (the last sentence may run a few over) of synthetic text, with benchmarks."""
    if n_tokens < 1000:
        raise ValueError(f"n_tokens must be at least 1000 for every planted word to occur, got {n_tokens}")
    rng = np.random.default_rng(seed)
    vocab, words, family_ids = _vocabulary(rng)

    # Sentence counts with 10% to spare; the shuffled sentences are then cut at n_tokens.
    templates = [(f, t.split()) for f, fam in enumerate(FAMILIES) for t in fam.templates]
    template_len = np.mean([len(toks) for _, toks in templates]) + PAD
    n_each = int(np.ceil(1.1 * PLANTED_SHARE * n_tokens / template_len / len(templates))) + 1
    n_plain = int(np.ceil(1.1 * (1 - PLANTED_SHARE) * n_tokens / np.mean(PLAIN_LENGTHS))) + 1
    index = {w: i for i, w in enumerate(vocab)}
    batches = [_template_sentences(rng, n_each, toks, FAMILIES[f], family_ids, index) for f, toks in templates]
    lengths = rng.integers(PLAIN_LENGTHS[0], PLAIN_LENGTHS[1] + 1, size=n_plain)
    batches.append((lengths, _filler(rng, int(lengths.sum()))))
    lengths, ids = _shuffle_and_cut(rng, batches, n_tokens)

    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]), pa.int32())
    tokens = pa.array(vocab, pa.string()).take(pa.array(ids, pa.int32()))
    sentences = pc.binary_join(pa.ListArray.from_arrays(offsets, tokens), " ")
    return SyntheticCorpus(
        sentences=sentences,
        analogies=_analogies(rng, words),
        similarity=_similarity(rng, words),
        # Entity 0 of each family: neighbours show its role-mates and the rest of its entity.
        probes=[str(w[0, 0]) for w in words] + [str(words[0][0, 1])],
    )


def _syllable_words(rng: np.random.Generator, n: int, min_syl: int, max_syl: int) -> np.ndarray:
    """``n`` candidate words of ``min_syl..max_syl`` syllables (duplicates possible)."""
    n_syl = rng.integers(min_syl, max_syl + 1, size=n)
    out = np.full(n, "", dtype=object)
    for s in range(max_syl):
        syllable = (_ONSETS[rng.integers(len(_ONSETS), size=n)] + _VOWELS[rng.integers(len(_VOWELS), size=n)]
                    + _CODAS[rng.integers(len(_CODAS), size=n)])
        out = np.where(s < n_syl, out + syllable, out)
    return out


def _new_stems(rng: np.random.Generator, taken: set[str], n: int, suffixes: tuple[str, ...],
               min_syl: int, max_syl: int) -> list[str]:
    """``n`` stems of at least 4 letters whose ``stem + suffix`` forms are all not yet ``taken``.

    Stems that take a suffix end in a consonant other than "s", so the forms read well.
    """
    endings = "nrlkmt" if any(suffixes) else None
    out: list[str] = []
    while len(out) < n:
        for stem in _syllable_words(rng, 2 * n, min_syl, max_syl):
            forms = [stem + s for s in suffixes]
            if (len(out) < n and len(stem) >= 4 and (endings is None or stem[-1] in endings)
                    and taken.isdisjoint(forms) and len(set(forms)) == len(forms)):
                taken.update(forms)
                out.append(stem)
    return out


def _vocabulary(rng: np.random.Generator) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """``(vocab, words, ids)``: every word type, filler first in Zipf rank order (ids 0..N_FILLER-1),
    and for each family its words and their ids, both indexed ``[entity, role]``."""
    literals = {tok for fam in FAMILIES for t in fam.templates for tok in t.split() if tok[0] not in "{_"}
    taken = set(_FUNCTION_WORDS) | literals
    words = []
    for fam in FAMILIES:
        stems = np.array(_new_stems(rng, taken, fam.n_entities, tuple(s for s in fam.forms if s is not None), 2, 2),
                         dtype=object)
        words.append(np.stack([stems + s if s is not None
                               else np.array(_new_stems(rng, taken, fam.n_entities, ("",), 2, 2), dtype=object)
                               for s in fam.forms], axis=1))
    # Shorter words are more frequent (Zipf's law of abbreviation): rank them first.
    filler = sorted(_new_stems(rng, taken, N_FILLER - len(_FUNCTION_WORDS), ("",), 1, 3), key=len)
    vocab = list(_FUNCTION_WORDS) + filler + sorted(literals - set(_FUNCTION_WORDS))
    ids = []
    for w in words:
        ids.append(np.arange(len(vocab), len(vocab) + w.size).reshape(w.shape))
        vocab += list(w.ravel())
    return vocab, words, ids


def _filler(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` filler ids from a Zipf-Mandelbrot law (``1 / (rank + 2.7)``), as in natural text."""
    p = 1.0 / (np.arange(N_FILLER) + 2.7)
    cdf = np.cumsum(p / p.sum())
    return np.minimum(np.searchsorted(cdf, rng.random(n)), N_FILLER - 1)


def _template_sentences(rng: np.random.Generator, n: int, toks: list[str], fam: Family,
                        family_ids: list[np.ndarray], index: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """``n`` sentences of one template, padded with filler: ``(lengths, flat token ids)``."""
    by_name = {f.name: i for i, f in enumerate(FAMILIES)}
    pre = rng.integers(0, PAD + 1, size=n)
    lengths = pre + len(toks) + rng.integers(0, PAD + 1, size=n)
    ids = _filler(rng, int(lengths.sum()))
    first = np.cumsum(lengths) - lengths + pre
    entity = rng.integers(0, fam.n_entities, size=n)
    for j, tok in enumerate(toks):
        if tok.startswith("{"):
            other, _, role = tok[1:-1].rpartition(".")
            target = FAMILIES[by_name[other]] if other else fam
            if target.entity_set != fam.entity_set or target.n_entities != fam.n_entities:
                raise ValueError(f"template {' '.join(toks)!r}: {target.name} does not share {fam.name}'s entities")
            ids[first + j] = family_ids[by_name[target.name]][entity, target.roles.index(role)]
        elif tok != "_":
            ids[first + j] = index[tok]
    return lengths, ids


def _shuffle_and_cut(rng: np.random.Generator, batches: list[tuple[np.ndarray, np.ndarray]],
                     n_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate ``(lengths, ids)`` batches, shuffle the sentences, keep the first ``n_tokens`` tokens."""
    lengths = np.concatenate([b[0] for b in batches])
    ids = np.concatenate([b[1] for b in batches])
    starts = np.cumsum(lengths) - lengths
    order = rng.permutation(len(lengths))
    order = order[:np.searchsorted(np.cumsum(lengths[order]), n_tokens) + 1]
    lengths = lengths[order]
    # Token k of new sentence s comes from starts[order[s]] + k.
    new_starts = np.cumsum(lengths) - lengths
    gather = np.repeat(starts[order] - new_starts, lengths) + np.arange(int(lengths.sum()))
    return lengths, ids[gather]


def _analogies(rng: np.random.Generator, words: list[np.ndarray], per_section: int = 300) -> str:
    """Google-format questions ``a b c d``: role a -> role b of one entity, then of another."""
    lines = []
    for fam, w in zip(FAMILIES, words):
        x, y = np.nonzero(~np.eye(fam.n_entities, dtype=bool))
        pick = np.sort(rng.permutation(len(x))[:per_section])
        x, y = x[pick], y[pick]
        for section, role_a, role_b in fam.sections:
            a, b = w[:, fam.roles.index(role_a)], w[:, fam.roles.index(role_b)]
            lines.append(f": {section}")
            lines += [f"{a[i]} {b[i]} {a[j]} {b[j]}" for i, j in zip(x, y)]
    return "\n".join(lines) + "\n"


def _similarity(rng: np.random.Generator, words: list[np.ndarray], per_grade: int = 60) -> str:
    """Word pairs graded like a similarity benchmark, the same number of pairs per grade.

    Same family and role (two countries, two plurals): similar, 8. Same entity, another role (a
    country and its capital, a noun and its plural): related, 5. Same family otherwise: 3.
    Different families: 1. Pairs across linked families with the same entity (a country and
    the noun it is famous for) are left out: how similar those are is a matter of taste.
    """
    fam_of, ent_of, role_of, word = (np.array(x, dtype=object) for x in zip(*[
        (f, e, r, w[e, r]) for f, w in enumerate(words) for e in range(w.shape[0]) for r in range(w.shape[1])]))
    entity_set = np.array([FAMILIES[f].entity_set for f in fam_of], dtype=object)
    a, b = np.triu_indices(len(word), k=1)
    same_fam = fam_of[a] == fam_of[b]
    same_ent = (entity_set[a] == entity_set[b]) & (ent_of[a] == ent_of[b])
    same_role = same_fam & (role_of[a] == role_of[b])
    grades = [(same_role, 8), (same_fam & same_ent, 5), (same_fam & ~same_role & ~same_ent, 3),
              (~same_fam & ~same_ent, 1)]
    lines = ["# word1\tword2\tscore (synthetic gold: same role 8, same entity 5, same family 3, unrelated 1)"]
    for mask, score in grades:
        pick = np.sort(rng.choice(np.nonzero(mask)[0], size=min(per_grade, int(mask.sum())), replace=False))
        lines += [f"{word[a[k]]}\t{word[b[k]]}\t{score:.1f}" for k in pick]
    return "\n".join(lines) + "\n"
