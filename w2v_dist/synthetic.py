"""A synthetic language with planted structure: the corpus behind ``w2v-dist demo``.

Made-up but pronounceable words fall into *families* (countries with their capitals, languages
and currencies; male and female nouns; singular and plural; present and past; adjective,
comparative and superlative). Every planted word is one *role* of one *entity* (``velia`` is the
country of entity 3, ``velish`` its language). Sentences come from templates that

- mention two roles of the same entity ("the capital of velia is tornak"): the entity signal,
- mention one role in a context shared by every entity ("we flew to tornak"): the role signal,

embedded in Zipf-distributed filler words so that the frequency profile, and therefore
subsampling and ``min_count``, behave as on natural text. A word's contexts are the union of its
entity's and its role's, so its vector is close to entity + role and the offsets the analogy
benchmark asks for (capital - country, plural - singular) are shared across entities.

Example::

    >>> from w2v_dist.synthetic import generate
    >>> corpus = generate(n_tokens=100_000, seed=0)
    >>> corpus.sentences[0].as_py()          # doctest: +SKIP
    'the capital of velia is tornak'
    >>> paths = corpus.write("/tmp/w2v-demo")  # analogies.txt, similarity.tsv

Everything is drawn from one ``numpy.random.Generator``: the same ``seed`` gives the same
words, sentences and benchmark files.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from w2v_dist import storage

# Function words at the head of the Zipf filler distribution (and glue in the templates).
_FUNCTION_WORDS = (
    "the of and to a in is it that was for on are as with he she they at be this have from or one "
    "had by but not what all were we when your can said there use an each which their time if will "
    "way about many then them would like so these her him his see has more day could go come did "
    "no most my over know than call who may down been now find any new work part take get place "
    "made live where after back little only round man year came show every good me give our under"
).split()

# Syllables for made-up words: onset + vowel (+ coda).
_ONSETS = np.array("b d f g k l m n p r s t v z br dr gr kr pl st tr sk sh th ch".split())
_VOWELS = np.array("a e i o u a e o ai ou".split())
_CODAS = np.array(["", "", "", "", "n", "r", "l", "s", "k", "m", "t"])


@dataclass(frozen=True)
class _Family:
    """Entities x roles of planted words, the templates that use them and the analogy sections.

    ``words[e, r]`` is role ``r`` of entity ``e``. A template is a list of tokens where ``{role}``
    is a slot filled from the sentence's entity and ``_`` is one filler word.
    """

    name: str
    roles: tuple[str, ...]
    words: np.ndarray
    templates: tuple[str, ...]
    sections: tuple[tuple[str, str, str], ...]  # (section name, role a, role b)


def _syllable_words(rng: np.random.Generator, n: int, min_syl: int, max_syl: int) -> np.ndarray:
    """``n`` candidate words of ``min_syl..max_syl`` syllables (duplicates possible)."""
    n_syl = rng.integers(min_syl, max_syl + 1, size=n)
    out = np.full(n, "", dtype=object)
    for s in range(max_syl):
        syl = (_ONSETS[rng.integers(len(_ONSETS), size=n)].astype(object)
               + _VOWELS[rng.integers(len(_VOWELS), size=n)].astype(object)
               + _CODAS[rng.integers(len(_CODAS), size=n)].astype(object))
        out = np.where(s < n_syl, out + syl, out)
    return out


class _Namer:
    """Hands out made-up words that are unique across the whole vocabulary."""

    def __init__(self, rng: np.random.Generator, taken: set[str]):
        self.rng = rng
        self.taken = set(taken)
        self.pool: list[str] = []

    def stems(self, n: int, suffixes: tuple[str, ...] = ("",), min_syl: int = 2, max_syl: int = 2) -> np.ndarray:
        """``n`` stems such that ``stem + suffix`` is new for every suffix; returns the stems."""
        out: list[str] = []
        while len(out) < n:
            for stem in _syllable_words(self.rng, 4 * n, min_syl, max_syl):
                forms = [stem + s for s in suffixes]
                if len(out) < n and len(stem) >= 4 and not any(f in self.taken for f in forms):
                    self.taken.update(forms)
                    out.append(stem)
        return np.array(out, dtype=object)


def _families(namer: _Namer) -> list[_Family]:
    # Entity counts: enough questions per section, few enough planted words that each one is
    # seen ~1000 times in 3M tokens. Linked families (nouns and the verbs they do, people and
    # their qualities) share entity indices, hence counts.
    geo = namer.stems(30, ("ia", "ish"))
    geo_words = np.stack([geo + "ia", namer.stems(30), geo + "ish", namer.stems(30)], axis=1)
    gender = namer.stems(24, ("or", "ess"))
    noun = namer.stems(30, ("", "s"))
    verb = namer.stems(30, ("", "ed"))
    adj = namer.stems(24, ("", "er", "est"))
    return [
        _Family(
            "geography", ("country", "capital", "language", "currency"), geo_words,
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
        _Family(
            "gender", ("male", "female"), np.stack([gender + "or", gender + "ess"], axis=1),
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
        _Family(
            "number", ("singular", "plural"), np.stack([noun, noun + "s"], axis=1),
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
        _Family(
            "tense", ("present", "past"), np.stack([verb, verb + "ed"], axis=1),
            templates=(
                "today we {present} what we {past} yesterday",
                "they {present} it every day",
                "yesterday they {past} it",
                "we will {present} the _ tomorrow",
                "last week she {past} the _",
            ),
            sections=(("gram-past-tense", "present", "past"),),
        ),
        _Family(
            "degree", ("base", "comparative", "superlative"),
            np.stack([adj, adj + "er", adj + "est"], axis=1),
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
    ]


@dataclass
class SyntheticCorpus:
    """Generated sentences and the benchmarks whose answers were planted in them."""

    sentences: pa.Array  # string, one sentence per element, tokens separated by single spaces
    analogies: str  # Google analogy format: ": section" lines, then "a b c d" lines
    similarity: str  # WS-353 format: "# ..." header, then "word1\tword2\tscore" (0-10)
    probes: list[str]  # words whose nearest neighbours make a good demo

    def write(self, directory: str) -> dict:
        """Write ``analogies.txt`` and ``similarity.tsv`` into ``directory``; returns their URIs."""
        paths = {"analogies": storage.join(directory, "analogies.txt"),
                 "similarity": storage.join(directory, "similarity.tsv")}
        storage.makedirs(directory)
        storage.write_text(paths["analogies"], self.analogies)
        storage.write_text(paths["similarity"], self.similarity)
        return paths


def _zipf_cdf(n: int, exponent: float = 1.0, offset: float = 2.7) -> np.ndarray:
    """Zipf-Mandelbrot over ranks 0..n-1, the shape of word frequencies in natural text."""
    p = 1.0 / (np.arange(n) + offset) ** exponent
    return np.cumsum(p / p.sum())


def generate(n_tokens: int = 3_000_000, seed: int = 0) -> SyntheticCorpus:
    """A corpus of about ``n_tokens`` tokens (within one sentence of it) with its benchmarks."""
    if n_tokens < 1000:
        raise ValueError(f"n_tokens must be >= 1000 for the planted words to occur at all, got {n_tokens}")
    rng = np.random.default_rng(seed)

    literals = {w for w in _FUNCTION_WORDS}
    namer = _Namer(rng, literals)
    families = _families(namer)
    for fam in families:
        for t in fam.templates:
            literals.update(w for w in t.split() if not w.startswith("{") and w != "_")
    namer.taken |= literals
    n_filler = 50_000
    filler = list(_FUNCTION_WORDS) + list(namer.stems(n_filler - len(_FUNCTION_WORDS), min_syl=1, max_syl=3))

    vocab: list[str] = list(filler)
    vocab += sorted(literals - set(filler))
    index = {w: i for i, w in enumerate(vocab)}
    family_ids = []
    for fam in families:
        ids = np.arange(len(vocab), len(vocab) + fam.words.size).reshape(fam.words.shape)
        vocab += list(fam.words.ravel())
        family_ids.append(ids)
    assert len(set(vocab)) == len(vocab)
    filler_cdf = _zipf_cdf(n_filler)
    by_name = {fam.name: i for i, fam in enumerate(families)}

    def draw_filler(n: int) -> np.ndarray:
        return np.minimum(np.searchsorted(filler_cdf, rng.random(n)), n_filler - 1)

    # Token budget: half planted-template sentences, half plain filler sentences.
    templates = [(fam, ids, t.split()) for fam, ids in zip(families, family_ids) for t in fam.templates]
    planted_share = 0.75
    mean_pad = 1.0  # filler words around a template sentence: 0..1 before, 0..1 after
    mean_len = np.mean([len(t) for _, _, t in templates]) + mean_pad
    n_per_template = int(np.ceil(1.05 * planted_share * n_tokens / mean_len / len(templates)))
    n_plain = int(np.ceil(1.05 * (1 - planted_share) * n_tokens / 12.0))

    pieces = []  # (lengths, flat ids) per batch
    for fam, ids, toks in templates:
        n = n_per_template
        pre = rng.integers(0, 2, size=n)
        post = rng.integers(0, 2, size=n)
        lengths = pre + len(toks) + post
        flat = draw_filler(int(lengths.sum()))
        starts = np.cumsum(lengths) - lengths
        entity = rng.integers(0, len(ids), size=n)
        for j, tok in enumerate(toks):
            pos = starts + pre + j
            if tok.startswith("{"):
                other, _, role = tok[1:-1].rpartition(".")
                f = by_name[other] if other else families.index(fam)
                flat[pos] = family_ids[f][entity, families[f].roles.index(role)]
            elif tok != "_":
                flat[pos] = index[tok]
        pieces.append((lengths, flat))
    lengths = rng.integers(4, 21, size=n_plain)
    pieces.append((lengths, draw_filler(int(lengths.sum()))))

    lengths = np.concatenate([p[0] for p in pieces])
    flat = np.concatenate([p[1] for p in pieces])
    starts = np.cumsum(lengths) - lengths
    order = rng.permutation(len(lengths))
    keep = np.searchsorted(np.cumsum(lengths[order]), n_tokens) + 1
    order = order[:keep]
    lengths = lengths[order]
    new_starts = np.cumsum(lengths) - lengths
    gather = np.repeat(starts[order] - new_starts, lengths) + np.arange(int(lengths.sum()))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    tokens = pa.array(vocab, pa.string()).take(pa.array(flat[gather].astype(np.int32)))
    sentences = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), tokens), " ")

    return SyntheticCorpus(
        sentences=sentences,
        analogies=_analogies(rng, families),
        similarity=_similarity(rng, families),
        probes=[str(fam.words[0, r]) for fam in families for r in range(min(2, len(fam.roles)))],
    )


def _analogies(rng: np.random.Generator, families: list[_Family], per_section: int = 300) -> str:
    lines = []
    for fam in families:
        n = len(fam.words)
        i, j = np.nonzero(~np.eye(n, dtype=bool))
        pick = np.sort(rng.permutation(len(i))[:per_section])
        for section, ra, rb in fam.sections:
            a, b = fam.words[:, fam.roles.index(ra)], fam.words[:, fam.roles.index(rb)]
            lines.append(f": {section}")
            lines += [f"{a[x]} {b[x]} {a[y]} {b[y]}" for x, y in zip(i[pick], j[pick])]
    return "\n".join(lines) + "\n"


def _similarity(rng: np.random.Generator, families: list[_Family], per_kind: int = 60) -> str:
    """Word pairs graded like a similarity benchmark, the same number of pairs per grade.

    Same family and role ("two countries", "two plurals"): similar, 8. Same entity, other role
    ("a country and its capital", "a noun and its plural"): related, 5. Same family otherwise: 3.
    Different families: 1. Pairs that share an entity across linked families (a country and its
    typical product) are left out: whether those are similar is a matter of taste.
    """
    words = [(f, e, r) for f, fam in enumerate(families) for e in range(len(fam.words)) for r in range(len(fam.roles))]
    fam_of, ent_of, role_of = (np.array(x) for x in zip(*words))
    a, b = np.triu_indices(len(words), k=1)
    same_fam = fam_of[a] == fam_of[b]
    same_ent = ent_of[a] == ent_of[b]
    same_role = role_of[a] == role_of[b]
    grades = [(same_fam & same_role, 8), (same_fam & same_ent, 5), (same_fam & ~same_role & ~same_ent, 3),
              (~same_fam & ~same_ent, 1)]
    lines = ["# word1\tword2\tscore (synthetic gold: same role 8, same entity 5, same family 3, unrelated 1)"]
    for mask, score in grades:
        cand = np.nonzero(mask)[0]
        for k in np.sort(rng.choice(cand, size=min(per_kind, len(cand)), replace=False)):
            (fa, ea, ra), (fb, eb, rb) = words[a[k]], words[b[k]]
            lines.append(f"{families[fa].words[ea, ra]}\t{families[fb].words[eb, rb]}\t{score:.1f}")
    return "\n".join(lines) + "\n"
