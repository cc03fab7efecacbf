"""Text -> tokens -> ids with pyarrow compute: no Python loop per token.

A string column is normalized (NFC by default: ``utf8_normalize``), lowercased (Unicode-aware
``utf8_lower``) and split with an RE2 pattern; a list<string> column is taken as tokens already
(normalized and lowercased the same way). A token never holds the whitespace that word2vec files
separate fields with: inner runs of it become ``_`` (``new york`` -> ``new_york``, as word2phrase
joins phrases), outer ones are trimmed. Token ids come from ``pyarrow.compute.index_in`` against
the vocabulary; out-of-vocabulary tokens are dropped before windows are drawn, as in word2vec.c
and gensim.

>>> import pyarrow as pa
>>> from w2v_dist.config import TokenizerConfig
>>> tokenize(pa.array(["Hindi: हिन्दी भारत की राजभाषा है।"]), TokenizerConfig())[0].to_pylist()
['hindi', 'हिन्दी', 'भारत', 'की', 'राजभाषा', 'है']
>>> tokenize(pa.array([["New York", "東京"]]), TokenizerConfig())[0].to_pylist()
['new_york', '東京']
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from w2v_dist.config import TokenizerConfig

# Changes whenever the same TokenizerConfig would give other tokens than before: part of the token
# cache's key (corpus/cache.py), so an upgrade never serves ids tokenized by the old rules.
VERSION = 2

# The bytes word2vec.c's ReadWord splits fields on (export.py refuses words holding one).
_WHITESPACE = " \t\n\r\v\f"

def is_text_type(t: pa.DataType) -> bool:
    """The strings pyarrow's string kernels take (what :func:`as_text` makes of a column)."""
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def is_token_list_type(t: pa.DataType) -> bool:
    return (pa.types.is_list(t) or pa.types.is_large_list(t)) and is_text_type(t.value_type)


def _stored_text(t: pa.DataType) -> bool:
    """Strings as a Parquet file may hold them: plain, ``string_view`` (Polars' strings; pyarrow
    16 and later) or ``dictionary<string>`` (pandas' categoricals)."""
    return (is_text_type(t) or getattr(pa.types, "is_string_view", lambda _: False)(t)
            or (pa.types.is_dictionary(t) and _stored_text(t.value_type)))


def is_readable_text_type(t: pa.DataType) -> bool:
    """A text column or a list of tokens that :func:`as_text` turns into one that tokenizes."""
    return _stored_text(t) or ((pa.types.is_list(t) or pa.types.is_large_list(t)) and _stored_text(t.value_type))


def as_text(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """``string_view`` and ``dictionary<string>`` columns (and lists of them) as ``large_string``
    (in lists): the same strings in the type the tokenizer's kernels take."""
    t = column.type
    if is_text_type(t) or is_token_list_type(t) or not is_readable_text_type(t):
        return column
    if _stored_text(t):
        return column.cast(pa.large_string())
    return column.cast((pa.large_list if pa.types.is_large_list(t) else pa.list_)(pa.large_string()))


ID_COLUMN = "ids"  # an encoded corpus's column (w2v_dist/encoding.py)


def is_id_list_type(t: pa.DataType) -> bool:
    """The type of an encoded corpus's ``ids`` column."""
    return pa.types.is_list(t) and pa.types.is_int32(t.value_type)


def tokenize(column: pa.Array | pa.ChunkedArray, cfg: TokenizerConfig) -> tuple[pa.Array, np.ndarray]:
    """Tokens of every row, flattened, and the row index of each token.

    Null rows and empty tokens vanish. Returns ``(tokens: StringArray, row: int64 ndarray)``.
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if is_text_type(column.type):
        lists = pc.split_pattern_regex(_normalize(column, cfg), pattern=cfg.split_pattern)
        flat = pc.list_flatten(lists)
        if not _splits_whitespace(cfg.split_pattern):
            flat = _join_whitespace(flat)
    elif is_token_list_type(column.type):
        lists = column
        flat = _join_whitespace(_normalize(pc.list_flatten(lists), cfg))
    else:
        raise TypeError(f"expected a string or list<string> column, got {column.type}")
    rows = pc.list_parent_indices(lists)
    keep = pc.greater(pc.binary_length(flat), 0)
    flat = pc.filter(flat, keep)
    rows = pc.filter(rows, keep).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    return flat, rows


def _normalize(strings: pa.Array, cfg: TokenizerConfig) -> pa.Array:
    """NFC (or NFKC) first, then lowercase: composed and decomposed spellings become one word."""
    if cfg.normalize != "none":
        strings = pc.utf8_normalize(strings, form=cfg.normalize)
    return pc.utf8_lower(strings) if cfg.lowercase else strings


def _join_whitespace(tokens: pa.Array) -> pa.Array:
    """``" new york "`` -> ``"new_york"``: a token with a space, tab or newline inside would train,
    then break every word2vec file it is written to."""
    return pc.replace_substring_regex(pc.utf8_trim(tokens, _WHITESPACE), f"[{_WHITESPACE}]+", "_")


@functools.lru_cache(maxsize=16)
def _splits_whitespace(pattern: str) -> bool:
    """Whether ``pattern`` separates tokens at every whitespace byte (the default does), so that
    its tokens need no :func:`_join_whitespace` pass."""
    parts = pc.split_pattern_regex(pa.array(["a b\tc\nd\re\vf\fg"]), pattern=pattern)[0].as_py()
    return not any(set(_WHITESPACE) & set(p) for p in parts)


@dataclass
class Tokenized:
    """Token ids of a piece of corpus with the sentence each token belongs to.

    ``sentence`` is non-decreasing; a window never crosses a change in it. Rows longer than
    ``max_sentence_length`` are cut in pieces the way word2vec.c caps sentences.
    """

    ids: np.ndarray  # int32 vocabulary indices
    sentence: np.ndarray  # int64, non-decreasing
    raw_words: int  # in-vocabulary words, the unit of learning-rate progress

    def __len__(self) -> int:
        return len(self.ids)


def token_ids(column: pa.Array | pa.ChunkedArray, vocab_words: pa.Array,
              cfg: TokenizerConfig) -> tuple[np.ndarray, np.ndarray, int]:
    """Tokenize and look the tokens up, dropping unknown ones: ``(ids: int32, row of each id:
    int64, tokens before dropping)``."""
    tokens, rows = tokenize(column, cfg)
    ids = pc.index_in(tokens, value_set=vocab_words)
    known = pc.is_valid(ids).to_numpy(zero_copy_only=False)
    return pc.filter(ids, known).to_numpy(zero_copy_only=False).astype(np.int32, copy=False), rows[known], len(tokens)


def encode(column: pa.Array | pa.ChunkedArray, vocab_words: pa.Array, cfg: TokenizerConfig) -> Tokenized:
    """Tokenize ``column`` and map tokens to vocabulary ids, dropping unknown tokens. An encoded
    corpus's ``list<int32>`` column holds the ids already (of a vocabulary of which ``vocab_words``
    is a prefix: ids past it are words this run leaves out)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if is_id_list_type(column.type):
        ids = pc.list_flatten(column).to_numpy(zero_copy_only=False)
        rows = pc.list_parent_indices(column).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        if len(ids) and int(ids.min()) < 0:
            raise ValueError("an encoded corpus holds a negative token id: its files are damaged; run `w2v-dist encode` again")
        known = ids < len(vocab_words)
        if not known.all():
            ids, rows = ids[known], rows[known]
    else:
        ids, rows, _ = token_ids(column, vocab_words, cfg)
    if len(rows):
        # position of each token inside its row, then a sentence key that also changes every
        # max_sentence_length tokens of one row
        starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
        first = np.repeat(starts, np.diff(np.r_[starts, len(rows)]))
        pos = np.arange(len(rows)) - first
        sentence = (rows << 32) + pos // cfg.max_sentence_length
    else:
        sentence = rows
    return Tokenized(ids=ids, sentence=sentence, raw_words=len(ids))
