"""Everything the QU models read, built once per run and shared by every fold and variant:
weak labels per query, title clusters, sub-token ids of queries (with the first sub-token of each
word, where word-level labels sit) and of entity texts (product title + brand).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from data.folds import normalize_query
from data.product_text import render_products
from esci.artifacts import TEST_FOLD
from finetune.backbone import Backbone, load_backbone
from query_understanding.clusters import TitleClusters, fit_title_clusters
from query_understanding.weak_labels import build_labels

ENTITY_FIELDS = ["title", "brand"]
ENTITY_MAX_CHARS = 150


@dataclass
class QUData:
    labels: pd.DataFrame  # one row per query (weak_labels.build_labels) + fold, query_norm
    examples: pd.DataFrame
    products: pd.DataFrame  # product_id, product_locale, product_brand, product_color, product_title
    clusters: TitleClusters
    backbone: Backbone  # finetune.backbone: tokenizer + where the encoder comes from
    query_tokens: list[np.ndarray]  # per query: sub-token ids, specials included
    word_pos: list[np.ndarray]  # per query: position of each word's first sub-token, -1 if cut off
    entity_tokens: list[np.ndarray]  # per product row
    product_row: dict  # (product_id, product_locale) -> row

    @property
    def tokenizer(self):
        return self.backbone.tokenizer

    @property
    def fold(self) -> np.ndarray:
        return self.labels["fold"].to_numpy()

    def training_rows(self) -> np.ndarray:
        return np.flatnonzero(self.fold != TEST_FOLD)


def _check_columns(df: pd.DataFrame, need: list[str], name: str) -> None:
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ValueError(f"query understanding: {name} lacks column(s) {missing}")


def encode_words(tokenizer, words: list[list[str]], max_length: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length)
    ids, positions = [], []
    for i, w in enumerate(words):
        pos = np.full(len(w), -1, dtype=np.int64)
        for p, wid in enumerate(enc.word_ids(i)):
            if wid is not None and pos[wid] < 0:
                pos[wid] = p
        ids.append(np.asarray(enc.input_ids[i], dtype=np.int64))
        positions.append(pos)
    return ids, positions


def prepare(examples: pd.DataFrame, products: pd.DataFrame, folds: pd.DataFrame, cfg,
            run_root: Path) -> QUData:
    """Labels, clusters, tokenizer and token ids for ``cfg`` (a QUConfig); the scratch tokenizer
    is cached under ``run_root/query_understanding/cache``."""
    _check_columns(examples, ["example_id", "query_id", "query", "product_id", "product_locale",
                              "esci_label"], "examples.parquet")
    _check_columns(products, ["product_id", "product_locale", "product_title", "product_brand",
                              "product_color"], "products.parquet")
    _check_columns(folds, ["example_id", "fold"], "folds.parquet")
    examples = examples.copy()
    for col in ("example_id", "query_id", "product_id"):
        examples[col] = examples[col].astype(str)
    fold_of = folds.assign(example_id=folds["example_id"].astype(str)).set_index("example_id")["fold"]
    examples["fold"] = examples["example_id"].map(fold_of)
    if examples["fold"].isna().any():
        rows = examples.index[examples["fold"].isna()][:5].tolist()
        raise ValueError(f"query understanding: examples rows {rows} have no fold in folds.parquet")
    products = products.reset_index(drop=True).copy()
    products["product_id"] = products["product_id"].astype(str)
    clusters = fit_title_clusters(products, cfg.pt_clusters, cfg.qc_clusters, cfg.cluster_seed,
                                  cfg.tfidf_max_features, cfg.svd_dims, cfg.top_terms)
    labels = build_labels(examples, products, clusters.series("pt"), clusters.series("qc"))
    labels["fold"] = labels["query_id"].map(examples.groupby("query_id")["fold"].first()).astype(int)
    labels["query_norm"] = labels["query"].map(normalize_query)

    entity_text = render_products(products, ENTITY_FIELDS, " | ", ENTITY_MAX_CHARS).tolist()
    backbone = load_backbone(cfg.backbone, Path(run_root), labels["query"].tolist() + entity_text, cfg,
                             Path(run_root) / "query_understanding" / "cache")
    tokenizer = backbone.tokenizer
    query_tokens, word_pos = encode_words(tokenizer, labels["words"].tolist(), cfg.max_length)
    ent = tokenizer(entity_text, truncation=True, max_length=cfg.entity_max_length)
    entity_tokens = [np.asarray(x, dtype=np.int64) for x in ent.input_ids]
    product_row = {k: i for i, k in enumerate(zip(products["product_id"], products["product_locale"]))}
    return QUData(labels, examples, products, clusters, backbone, query_tokens, word_pos,
                  entity_tokens, product_row)
