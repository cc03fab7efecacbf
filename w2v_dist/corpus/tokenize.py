"""Text -> tokens -> ids with pyarrow compute: no Python loop per token.

A string column is lowercased (Unicode-aware ``utf8_lower``) and split with an RE2 pattern; a
list<string> column is taken as tokens already (lowercased if asked). Token ids come from
``pyarrow.compute.index_in`` against the vocabulary; out-of-vocabulary tokens are dropped
before windows are drawn, as in word2vec.c and gensim.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from w2v_dist.config import TokenizerConfig


def is_text_type(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def is_token_list_type(t: pa.DataType) -> bool:
    return (pa.types.is_list(t) or pa.types.is_large_list(t)) and is_text_type(t.value_type)


def tokenize(column: pa.Array | pa.ChunkedArray, cfg: TokenizerConfig) -> tuple[pa.Array, np.ndarray]:
    """Tokens of every row, flattened, and the row index of each token.

    Null rows and empty tokens vanish. Returns ``(tokens: StringArray, row: int64 ndarray)``.
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if is_text_type(column.type):
        if cfg.lowercase:
            column = pc.utf8_lower(column)
        lists = pc.split_pattern_regex(column, pattern=cfg.split_pattern)
    elif is_token_list_type(column.type):
        lists = column
    else:
        raise TypeError(f"expected a string or list<string> column, got {column.type}")
    flat = pc.list_flatten(lists)
    rows = pc.list_parent_indices(lists)
    if is_token_list_type(column.type) and cfg.lowercase:
        flat = pc.utf8_lower(flat)
    keep = pc.greater(pc.binary_length(flat), 0)
    flat = pc.filter(flat, keep)
    rows = pc.filter(rows, keep).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    return flat, rows


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


def encode(column: pa.Array | pa.ChunkedArray, vocab_words: pa.Array, cfg: TokenizerConfig) -> Tokenized:
    """Tokenize ``column`` and map tokens to vocabulary ids, dropping unknown tokens."""
    tokens, rows = tokenize(column, cfg)
    ids = pc.index_in(tokens, value_set=vocab_words)
    known = pc.is_valid(ids).to_numpy(zero_copy_only=False)
    ids = pc.filter(ids, known).to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
    rows = rows[known]
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
