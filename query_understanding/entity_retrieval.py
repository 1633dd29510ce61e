"""Entities for a query, from engagement data: the E and S products of the most similar
*training* queries, by BM25 (the ``bm25s`` library) over training query texts.

Only the queries passed as the index are ever read, so a fold model built from its training
folds cannot see a held-out query's products. A query never gets itself (same id or same
normalised text) and never gets one of its own candidate products: for a training query those
would hand it its own labels.

Engagement gain of an entity: the ESCI gain of its judgement (E 1, S 0.1) times the BM25 score
of its source query relative to the best source for this query, so an E product of a
near-duplicate query outranks an E product of a loosely related one.
"""
from __future__ import annotations

from dataclasses import dataclass

import bm25s
import numpy as np
import pandas as pd

from data.folds import normalize_query
from data.text_tokens import tokenize
from esci.artifacts import GAINS

ENGAGED = ("E", "S")


@dataclass(frozen=True)
class Entity:
    product_id: str
    product_locale: str
    gain: float
    source_query_id: str


class EntityRetriever:
    """BM25 over the index queries' texts, one index per locale (or one for all)."""

    def __init__(self, examples: pd.DataFrame, index_query_ids, *, same_locale: bool = True,
                 depth: int = 30):
        need = {"query_id", "query", "product_id", "product_locale", "esci_label"}
        missing = sorted(need - set(examples.columns))
        if missing:
            raise ValueError(f"EntityRetriever: examples lack column(s) {missing}")
        self.depth = depth
        self.same_locale = same_locale
        index_ids = set(map(str, index_query_ids))
        rows = examples[examples["query_id"].astype(str).isin(index_ids)]
        engaged = rows[rows["esci_label"].isin(ENGAGED)].copy()
        engaged["rank"] = engaged["esci_label"].map({"E": 0, "S": 1})
        engaged = engaged.sort_values(["query_id", "rank", "product_id"], kind="mergesort")
        self.products = {qid: list(zip(g["product_id"], g["product_locale"], g["esci_label"]))
                         for qid, g in engaged.groupby("query_id", sort=False)}
        queries = rows.drop_duplicates("query_id")[["query_id", "query", "product_locale"]]
        queries = queries[queries["query_id"].isin(self.products)].sort_values("query_id")
        self.indexes = {}
        groups = queries.groupby("product_locale") if same_locale else [("*", queries)]
        for locale, g in groups:
            bm25 = bm25s.BM25()
            bm25.index([tokenize(q) or [""] for q in g["query"]], show_progress=False)
            self.indexes[locale] = (bm25, g["query_id"].to_numpy(), g["query"].map(normalize_query).to_numpy())

    def retrieve(self, queries: pd.DataFrame, k: int, own_products: dict | None = None) -> list[list[Entity]]:
        """Up to ``k`` entities per row of ``queries`` (columns query_id, query, product_locale).

        ``own_products``: query_id -> set of (product_id, product_locale) never to return.
        """
        own_products = own_products or {}
        out: list[list[Entity]] = [[] for _ in range(len(queries))]
        queries = queries.reset_index(drop=True)
        groups = queries.groupby("product_locale") if self.same_locale else [("*", queries)]
        for locale, g in groups:
            if locale not in self.indexes:
                continue
            bm25, ids, norms = self.indexes[locale]
            depth = min(self.depth + 1, len(ids))  # +1: the query itself may be in the index
            tokens = [tokenize(q) or [""] for q in g["query"]]
            hits, scores = bm25.retrieve(tokens, k=depth, show_progress=False, n_threads=1)
            for row, qid, qnorm, hit, score in zip(g.index, g["query_id"], g["query"].map(normalize_query),
                                                   hits, scores):
                out[row] = self._collect(str(qid), qnorm, ids[hit], norms[hit], score, k,
                                         own_products.get(qid, set()))
        return out

    def _collect(self, qid, qnorm, source_ids, source_norms, scores, k, own) -> list[Entity]:
        found, seen, best = [], set(own), None
        for source, source_norm, score in zip(source_ids, source_norms, scores):
            if score <= 0 or source == qid or source_norm == qnorm:
                continue
            best = best or float(score)
            for product_id, locale, label in self.products[source]:
                if (product_id, locale) in seen:
                    continue
                seen.add((product_id, locale))
                found.append(Entity(product_id, locale, GAINS[label] * float(score) / best, source))
                if len(found) == k:
                    return found
        return found


def own_candidates(examples: pd.DataFrame) -> dict[str, set[tuple[str, str]]]:
    """query_id -> its candidate products (all judged rows: the candidate list is known at test time)."""
    return {qid: set(zip(g["product_id"], g["product_locale"]))
            for qid, g in examples.groupby("query_id", sort=False)}


def entity_arrays(entities: list[list[Entity]], product_row: dict, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, gains), each (n_queries, k): product row per entity (-1 = padding) and its gain."""
    rows = np.full((len(entities), k), -1, dtype=np.int64)
    gains = np.zeros((len(entities), k), dtype=np.float32)
    for i, ents in enumerate(entities):
        for j, e in enumerate(ents[:k]):
            rows[i, j] = product_row[(e.product_id, e.product_locale)]
            gains[i, j] = e.gain
    return rows, gains
