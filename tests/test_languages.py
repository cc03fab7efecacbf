"""Every script: words stay whole (combining marks are parts of words), composed and decomposed
spellings are one word, and pre-tokenised input (Japanese, phrases with spaces) trains and exports.

Guards: the split pattern cutting words at combining marks (Hindi "हिन्दी" -> "ह न द"), NFD text
becoming other words than NFC text, and tokens holding whitespace that train and then break every
word2vec file they are written to.
"""

from __future__ import annotations

import dataclasses
import json
import re
import unicodedata

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import cli, gcide_lines, run_vocab
from w2v_dist.config import TokenizerConfig
from w2v_dist.corpus import tokenize as tokenize_module
from w2v_dist.corpus.cache import TokenCache
from w2v_dist.corpus.tokenize import tokenize

NFD = unicodedata.normalize("NFD", "Résumé: naïve café, Ärger")

# (language, a real sentence, its tokens exactly). Marks kept: Devanagari vowel signs and the
# virama, Arabic harakat (so vocalised and bare spellings are different words), Thai vowels and
# tones. Thai is written without spaces between words: the tokens are the runs between spaces.
SENTENCES = [
    ("hindi", "हिन्दी भारत की राजभाषा है।", ["हिन्दी", "भारत", "की", "राजभाषा", "है"]),
    ("arabic", "اللغة العربية جميلة.", ["اللغة", "العربية", "جميلة"]),
    ("arabic-diacritics", "اللُّغَةُ العَرَبِيَّةُ جَمِيلَةٌ.", ["اللُّغَةُ", "العَرَبِيَّةُ", "جَمِيلَةٌ"]),
    ("thai", "ภาษาไทยเป็นภาษาราชการ ของประเทศไทย", ["ภาษาไทยเป็นภาษาราชการ", "ของประเทศไทย"]),
    ("russian", "Москва — столица России.", ["москва", "столица", "россии"]),
    ("german", "Die Straße in München ist SCHÖN, übermäßig GROSS!",
     ["die", "straße", "in", "münchen", "ist", "schön", "übermäßig", "gross"]),
    ("persian-zwnj", "می\u200cخواهم به خانه بروم", ["می\u200cخواهم", "به", "خانه", "بروم"]),
    ("nfd", NFD, ["résumé", "naïve", "café", "ärger"]),
]


@pytest.mark.parametrize("lang, text, expected", SENTENCES, ids=[s[0] for s in SENTENCES])
def test_every_script_keeps_its_words(lang, text, expected):
    tokens, _ = tokenize(pa.array([text]), TokenizerConfig())
    assert tokens.to_pylist() == expected
    # the expected words are composed (NFC): what a user types and what other tools print
    assert all(unicodedata.is_normalized("NFC", t) for t in tokens.to_pylist())


def test_nfd_and_nfc_are_one_word_in_lists_too():
    nfc = unicodedata.normalize("NFC", "Résumé")
    column = pa.array([[unicodedata.normalize("NFD", "Résumé"), nfc]], pa.list_(pa.string()))
    assert tokenize(column, TokenizerConfig())[0].to_pylist() == ["résumé", "résumé"]
    assert len(tokenize(column, TokenizerConfig(normalize="none", lowercase=False))[0][0].as_py()) == 8  # each é as e + U+0301


def test_plain_english_tokenizes_as_before():
    """The new class only adds marks and joiners: ASCII text (the gcide tests' corpus) gives the
    very tokens the old pattern gave."""
    column = pa.array(gcide_lines(5000))
    old = TokenizerConfig(split_pattern=r"[^\p{L}\p{N}_]+", normalize="none")
    assert tokenize(column, TokenizerConfig())[0].equals(tokenize(column, old)[0])


def test_token_cache_key_follows_the_tokenizer(tmp_path, monkeypatch):
    """A changed pattern, normalization or tokenizer version never reads ids cached by the other."""
    def key(cfg):
        return TokenCache(str(tmp_path), "fp", dataclasses.asdict(cfg), 1).dir

    base = key(TokenizerConfig())
    assert key(TokenizerConfig(normalize="NFKC")) != base
    assert key(TokenizerConfig(split_pattern=r"\s+")) != base
    monkeypatch.setattr("w2v_dist.corpus.cache.VERSION", tokenize_module.VERSION + 1)
    assert key(TokenizerConfig()) != base


def test_a_corpus_in_many_scripts_trains_to_whole_words(tmp_path):
    """Through the CLI: the vocabulary holds each sentence's words, whole, and nothing else."""
    corpus = tmp_path / "c"
    corpus.mkdir()
    pq.write_table(pa.table({"text": [text for _, text, _ in SENTENCES] * 3}), corpus / "part-00000.parquet")
    run = tmp_path / "r"
    cli("train", str(corpus), "--output", str(run), "--min-count", "1", "--dim", "8", "--epochs", "1",
        "--threads", "1")
    words, _ = run_vocab(run)
    assert sorted(words) == sorted({w for _, _, tokens in SENTENCES for w in tokens})


def test_pretokenised_japanese_and_phrases_train_and_load_in_gensim(tmp_path):
    """The route for scripts without spaces: a list<string> column made by the user's segmenter
    (MeCab, Sudachi, jieba, PyThaiNLP...) trains as given. Tokens with whitespace inside are
    joined with "_" (word2phrase's "new_york"), so the word2vec files stay readable."""
    gensim = pytest.importorskip("gensim")
    rows = [["東京", "は", "日本", "の", "首都", "です"], ["New York", "は", "大きい", "都市", "です"],
            ["gamma\ndelta", " 東京 ", "\t", unicodedata.normalize("NFD", "Café")]] * 3
    corpus = tmp_path / "c"
    corpus.mkdir()
    pq.write_table(pa.table({"tokens": pa.array(rows, pa.list_(pa.string()))}), corpus / "part-00000.parquet")
    run = tmp_path / "r"
    cli("train", str(corpus), "--output", str(run), "--text-column", "tokens", "--min-count", "1", "--dim", "8",
        "--epochs", "1", "--threads", "1")
    words, counts = run_vocab(run)
    assert dict(zip(words, counts.tolist())) == {
        "東京": 6, "は": 6, "です": 6, "日本": 3, "の": 3, "首都": 3, "new_york": 3, "大きい": 3, "都市": 3,
        "gamma_delta": 3, "café": 3}
    for fmt, name, binary in (("word2vec", "v.txt", False), ("word2vec-binary", "v.bin", True)):
        cli("export", str(run), "--format", fmt, "--output", str(tmp_path / name))
        kv = gensim.models.KeyedVectors.load_word2vec_format(str(tmp_path / name), binary=binary)
        assert kv.index_to_key == words and kv.vectors.shape == (len(words), 8)
    assert json.loads((run / "summary.json").read_text())["vocab_size"] == len(words)
    assert not any(re.search(r"\s", w) for w in words)
