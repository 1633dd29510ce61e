"""Lexical (query, product) features: BM25 (bm25s), token and char-3-gram overlap, brand and
colour in query, numbers matching, field lengths, locale. One row per example_id.

Written to ``runs/<run>/features/lexical.parquet``; the ensemble reads the same file.
"""
from __future__ import annotations

import bm25s
import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm.auto import tqdm

from data.product_text import clean_field, render_products
from data.text_tokens import char_ngrams, normalize, numbers_with_units, tokenize

LOCALE_CODES = {"us": 0, "es": 1, "jp": 2}


def _bm25_pair_scores(doc_tokens: list[list[str]], query_tokens: list[list[str]],
                      pair_doc: np.ndarray, pair_query: np.ndarray) -> np.ndarray:
    """BM25 of query ``pair_query[i]`` against document ``pair_doc[i]``, for every pair.

    bm25s precomputes the per-(token, document) BM25 weights as a sparse matrix; a pair's score
    is the sum of those weights over the query's distinct tokens, so no all-documents scan.
    """
    index = bm25s.BM25()
    index.index([t if t else [""] for t in doc_tokens], show_progress=False)
    s = index.scores
    weights = sp.csc_matrix((s["data"], s["indices"], s["indptr"]),
                            shape=(s["num_docs"], len(s["indptr"]) - 1)).tocsr()
    vocab = index.vocab_dict
    rows, cols = [], []
    for qi, toks in enumerate(query_tokens):
        ids = {vocab[t] for t in toks if t in vocab and vocab[t] < weights.shape[1]}
        rows.extend([qi] * len(ids))
        cols.extend(ids)
    q_matrix = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)),
                             shape=(len(query_tokens), weights.shape[1]))
    return np.asarray(q_matrix[pair_query].multiply(weights[pair_doc]).sum(axis=1)).ravel()


def _overlap(q: set, d: set) -> tuple[float, float, float]:
    inter = len(q & d)
    return (float(inter), inter / len(q) if q else 0.0,
            inter / len(q | d) if (q or d) else 0.0)


def build_lexical_features(examples: pd.DataFrame, products: pd.DataFrame) -> pd.DataFrame:
    """examples: ``example_id, query, product_id, product_locale``; products: the products file."""
    key = ["product_id", "product_locale"]
    prod = products.reset_index(drop=True)
    prod_pos = pd.Series(np.arange(len(prod)), index=pd.MultiIndex.from_frame(prod[key]))
    pair_doc = prod_pos.loc[pd.MultiIndex.from_frame(examples[key])].to_numpy()
    queries, pair_query = np.unique(examples["query"].astype(str).to_numpy(), return_inverse=True)

    title = clean_field(prod["product_title"]).tolist()
    brand = clean_field(prod["product_brand"]).map(normalize).tolist()
    color = clean_field(prod["product_color"]).map(normalize).tolist()
    full = render_products(prod, sep=" ").tolist()
    title_tok = [tokenize(t) for t in tqdm(title, desc="tokenise titles", leave=False)]
    full_tok = [tokenize(t) for t in tqdm(full, desc="tokenise products", leave=False)]
    query_tok = [tokenize(q) for q in queries]

    feats = {
        "bm25_title": _bm25_pair_scores(title_tok, query_tok, pair_doc, pair_query),
        "bm25_full": _bm25_pair_scores(full_tok, query_tok, pair_doc, pair_query),
    }
    title_sets = [set(t) for t in title_tok]
    full_sets = [set(t) for t in full_tok]
    query_sets = [set(t) for t in query_tok]
    query_norm = [normalize(q) for q in queries]
    query_grams = [char_ngrams(q) for q in queries]
    query_nums = [numbers_with_units(q) for q in queries]
    title_grams: dict[int, set] = {}
    cols = {c: np.zeros(len(examples)) for c in (
        "tok_overlap_title", "tok_frac_title", "tok_jaccard_title", "tok_overlap_full",
        "tok_frac_full", "char3_jaccard_title", "char3_frac_title", "brand_in_query",
        "color_in_query", "num_match", "num_mismatch")}
    for i, (d, q) in enumerate(tqdm(zip(pair_doc, pair_query), total=len(examples),
                                    desc="lexical features", leave=False)):
        qs = query_sets[q]
        cols["tok_overlap_title"][i], cols["tok_frac_title"][i], cols["tok_jaccard_title"][i] = \
            _overlap(qs, title_sets[d])
        cols["tok_overlap_full"][i], cols["tok_frac_full"][i], _ = _overlap(qs, full_sets[d])
        if d not in title_grams:
            title_grams[d] = char_ngrams(title[d])
        qg, tg = query_grams[q], title_grams[d]
        inter = len(qg & tg)
        cols["char3_jaccard_title"][i] = inter / len(qg | tg) if qg or tg else 0.0
        cols["char3_frac_title"][i] = inter / len(qg) if qg else 0.0
        cols["brand_in_query"][i] = float(bool(brand[d]) and brand[d] in query_norm[q])
        cols["color_in_query"][i] = float(bool(color[d]) and color[d] in query_norm[q])
        if query_nums[q]:
            title_nums = numbers_with_units(title[d])
            cols["num_match"][i] = len(query_nums[q] & title_nums)
            cols["num_mismatch"][i] = len(query_nums[q] - title_nums)
    feats.update(cols)
    feats.update({
        "query_chars": np.array([len(q) for q in queries])[pair_query],
        "query_tokens": np.array([len(t) for t in query_tok])[pair_query],
        "title_chars": np.array([len(t) for t in title])[pair_doc],
        "bullets_chars": clean_field(prod["product_bullet_point"]).str.len().to_numpy()[pair_doc],
        "description_chars": clean_field(prod["product_description"]).str.len().to_numpy()[pair_doc],
        "has_brand": np.array([bool(b) for b in brand])[pair_doc].astype(float),
        "has_color": np.array([bool(c) for c in color])[pair_doc].astype(float),
        "locale": examples["product_locale"].map(LOCALE_CODES).fillna(-1).to_numpy(),
    })
    out = pd.DataFrame(feats)
    out.insert(0, "example_id", examples["example_id"].to_numpy())
    return out
