"""Product2Query data: pseudo queries cut from a product's title + brand + colour.

A pseudo query is one character span (or, with ``two_span_prob``, two) whose total length is a
Poisson draw clipped to ``[span_min, span_max]``; jp uses a shorter mean because its queries are
about half as long in characters (sample: median 10 chars jp, 21 us/es). In space-separated
locales a span is widened to whole words, so a query never starts mid-word. With ``cut_prob``
the spans are cut out of the product text the query is paired with, so the task cannot be solved
by string matching alone. Negatives pair each product with the pseudo query of another product
of the same locale, one negative per positive.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

UNSPACED_LOCALES = ("jp",)
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class SpanSpec:
    mean: float
    mean_jp: float
    lo: int
    hi: int
    two_span_prob: float

    def __post_init__(self):
        if not 1 <= self.lo <= self.hi:
            raise ValueError(f"SpanSpec: need 1 <= span_min <= span_max, got {self.lo}, {self.hi}")


def _widen_to_words(text: str, start: int, end: int) -> tuple[int, int]:
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    while end < len(text) and not text[end].isspace():
        end += 1
    return start, end


def sample_spans(text: str, locale: str, spec: SpanSpec, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Non-overlapping ``(start, end)`` character spans of ``text``, in text order."""
    if not text:
        return []
    mean = spec.mean_jp if locale in UNSPACED_LOCALES else spec.mean
    total = int(np.clip(rng.poisson(mean), spec.lo, spec.hi))
    total = min(total, len(text))
    two = rng.random() < spec.two_span_prob and total >= 2 * spec.lo and len(text) >= 2 * total
    lengths = [total // 2, total - total // 2] if two else [total]
    spans: list[tuple[int, int]] = []
    for length in lengths:
        for _ in range(8):  # a second span that overlaps the first is redrawn a few times
            start = int(rng.integers(0, len(text) - length + 1))
            end = start + length
            if locale not in UNSPACED_LOCALES:
                start, end = _widen_to_words(text, start, end)
            if all(end <= s or start >= e for s, e in spans):
                spans.append((start, end))
                break
    return sorted(spans)


def spans_text(text: str, spans: list[tuple[int, int]]) -> str:
    return _SPACE.sub(" ", " ".join(text[s:e] for s, e in spans)).strip()


def cut_spans(text: str, spans: list[tuple[int, int]]) -> str:
    """``text`` with the spans removed."""
    out, pos = [], 0
    for s, e in spans:
        out.append(text[pos:s])
        pos = e
    out.append(text[pos:])
    return _SPACE.sub(" ", " ".join(out)).strip()


def make_pseudo_query(source: str, locale: str, spec: SpanSpec, rng: np.random.Generator) -> tuple[str, list]:
    spans = sample_spans(source, locale, spec, rng)
    return spans_text(source, spans), spans


def cut_from_product(product_text: str, query_source: str, spans: list[tuple[int, int]]) -> str:
    """The product text without the words of the pseudo query.

    The spans index ``query_source`` (title + brand + colour); each span's text is removed from
    the rendered product wherever it occurs, since the title also opens the rendered text.
    """
    out = product_text
    for s, e in spans:
        piece = query_source[s:e].strip()
        if piece:
            out = out.replace(piece, " ")
    return _SPACE.sub(" ", out).strip()


def locale_index(locales: np.ndarray) -> dict[str, np.ndarray]:
    """Row positions of each locale, computed once per corpus."""
    return {loc: np.flatnonzero(locales == loc) for loc in np.unique(locales)}


def negative_queries(anchors: np.ndarray, locales: np.ndarray, sources: np.ndarray,
                     by_locale: dict[str, np.ndarray], spec: SpanSpec, rng: np.random.Generator,
                     tries: int = 5) -> tuple[np.ndarray, list[str | None]]:
    """For each anchor row, a pseudo query of another product of the same locale.

    ``locales``/``sources`` (query source texts) are per corpus row; ``anchors`` are row
    positions. A draw whose query also reads as a span of the anchor (two listings with the same
    title) is redrawn up to ``tries`` times. A locale with a single product has no negative: the
    partner is -1 and the query None, and the caller drops that pair.
    """
    partners = np.full(len(anchors), -1, dtype=np.int64)
    queries: list[str | None] = [None] * len(anchors)
    for k, i in enumerate(anchors):
        candidates = by_locale[locales[i]]
        if len(candidates) < 2:
            continue
        own = sources[i].casefold()
        for _ in range(tries):
            j = int(candidates[rng.integers(0, len(candidates))])
            while j == i:
                j = int(candidates[rng.integers(0, len(candidates))])
            query, _ = make_pseudo_query(sources[j], locales[j], spec, rng)
            partners[k], queries[k] = j, query
            if query and query.casefold() not in own:
                break
    return partners, queries
