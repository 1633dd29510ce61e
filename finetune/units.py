"""Multi-granular semantic units: character 3-grams and words, hashed into fixed bucket ranges.

Each text becomes a sorted array of bucket ids (an ``nn.EmbeddingBag`` bag). ``crc32`` rather
than Python's ``hash``: the latter is salted per process, so ids would change between runs.
Sorting makes the bag's float sum order, and so the predictions, independent of set order.
"""
from __future__ import annotations

import zlib

import numpy as np

from data.text_tokens import char_ngrams, tokenize


def _buckets(pieces, n_buckets: int) -> np.ndarray:
    ids = {zlib.crc32(p.encode("utf-8")) % n_buckets for p in pieces}
    return np.array(sorted(ids), dtype=np.int64)


def char_units(text: str, n_buckets: int) -> np.ndarray:
    return _buckets(char_ngrams(text, 3), n_buckets) if text else np.zeros(0, dtype=np.int64)


def word_units(text: str, n_buckets: int) -> np.ndarray:
    return _buckets(tokenize(text), n_buckets)


class Ragged:
    """Variable-length int arrays stored flat: ``values[offsets[i]:offsets[i+1]]`` is row i."""

    def __init__(self, values: np.ndarray, offsets: np.ndarray):
        self.values, self.offsets = values, offsets

    @classmethod
    def from_arrays(cls, arrays: list[np.ndarray]) -> "Ragged":
        lengths = np.array([len(a) for a in arrays], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        values = np.concatenate(arrays).astype(np.int64) if len(arrays) else np.zeros(0, np.int64)
        return cls(values, offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def row(self, i: int) -> np.ndarray:
        return self.values[self.offsets[i]:self.offsets[i + 1]]

    def take(self, rows) -> tuple[np.ndarray, np.ndarray]:
        """(flat values, start offsets) of ``rows``: the ``input, offsets`` of an EmbeddingBag."""
        parts = [self.row(i) for i in rows]
        starts = np.concatenate([[0], np.cumsum([len(p) for p in parts])[:-1]]).astype(np.int64)
        # int64 whatever the stored dtype: EmbeddingBag takes int32/int64 only (cached bags are uint16)
        flat = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
        return flat, starts
