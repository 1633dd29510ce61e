"""Frozen-encoder probe: how useful an encoder's embeddings are for tasks 1 and 2, cheaply.

This is NOT fine-tuning. The encoder stays frozen; a query and its product are embedded
separately (pooled last hidden state), and a logistic regression on
``[q, p, |q - p|, q * p, cos(q, p)]`` predicts E/S/C/I, trained and scored fold by fold on the
run's query-grouped folds. Task 2 is micro-F1 of the arg-max; task 1 is nDCG on informative
queries of the expected gain ``p_E + 0.1 p_S + 0.01 p_C``, and, with no classifier at all, of
the cosine similarity of query and product. It stands in until the fine-tuning
stage exists; rerun the ablation with the real fine-tuning then.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm.auto import tqdm

from esci.artifacts import GAINS, LABELS
from esci.metrics import ndcg, task2_scores
from pretrain.model import pool


@torch.no_grad()
def embed_texts(encoder, tokenizer, texts: list[str], max_length: int, batch_size: int = 64,
                pooling: str = "mean", desc: str = "embed") -> np.ndarray:
    """(len(texts), hidden) pooled embeddings; texts are sorted by length to pad little."""
    encoder.eval()
    order = np.argsort([len(t) for t in texts], kind="stable")
    out = np.zeros((len(texts), encoder.config.hidden_size), dtype=np.float32)
    for start in tqdm(range(0, len(texts), batch_size), desc=desc, leave=False):
        idx = order[start:start + batch_size]
        enc = tokenizer([texts[i] for i in idx], truncation=True, max_length=max_length,
                        padding=True, return_tensors="pt")
        hidden = encoder(**enc).last_hidden_state
        out[idx] = pool(hidden, enc["attention_mask"], pooling).float().numpy()
    return out


def pair_features(q: np.ndarray, p: np.ndarray) -> np.ndarray:
    qn = q / np.linalg.norm(q, axis=1, keepdims=True).clip(1e-9)
    pn = p / np.linalg.norm(p, axis=1, keepdims=True).clip(1e-9)
    cos = (qn * pn).sum(1, keepdims=True)
    return np.hstack([q, p, np.abs(q - p), q * p, cos]).astype(np.float32)


def probe_encoder(encoder, tokenizer, examples: pd.DataFrame, product_text: pd.Series,
                  folds: pd.DataFrame, max_length: int, c: float = 1.0, pooling: str = "mean",
                  seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-fold scores ``(fold, task2_micro_f1, task1_ndcg_informative)`` and the OOF rows.

    ``examples``: example_id, query, product_id, product_locale, esci_label, query_id.
    ``product_text``: indexed by (product_id, product_locale). ``folds``: example_id, fold;
    rows with fold < 0 (official test split) are left out.
    """
    df = examples.merge(folds[["example_id", "fold"]], on="example_id")
    df = df[(df["fold"] >= 0) & df["esci_label"].isin(LABELS)].reset_index(drop=True)
    keys = pd.MultiIndex.from_frame(df[["product_id", "product_locale"]])
    missing = ~keys.isin(product_text.index)
    if missing.any():
        raise ValueError(f"probe: {int(missing.sum())} examples have no product text, e.g. "
                         f"{list(keys[missing][:3])}")
    queries = sorted(df["query"].unique())
    q_emb = embed_texts(encoder, tokenizer, queries, max_length, pooling=pooling, desc="queries")
    prod_keys = sorted(set(keys))
    p_emb = embed_texts(encoder, tokenizer, [product_text[k] for k in prod_keys], max_length,
                        pooling=pooling, desc="products")
    q_row = {q: i for i, q in enumerate(queries)}
    p_row = {k: i for i, k in enumerate(prod_keys)}
    x = pair_features(q_emb[df["query"].map(q_row).to_numpy()],
                      p_emb[np.array([p_row[k] for k in keys])])
    y = df["esci_label"].to_numpy()

    probs = np.zeros((len(df), len(LABELS)))
    for fold in sorted(df["fold"].unique()):
        held = (df["fold"] == fold).to_numpy()
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000, random_state=seed))
        clf.fit(x[~held], y[~held])
        pr = clf.predict_proba(x[held])
        for j, label in enumerate(clf.classes_):
            probs[held, LABELS.index(label)] = pr[:, j]
    oof = df[["example_id", "query_id", "product_id", "product_locale", "fold", "esci_label"]].copy()
    for j, label in enumerate(LABELS):
        oof[f"p_{label}"] = probs[:, j]
    oof["pred"] = np.array(LABELS)[probs.argmax(1)]
    oof["score"] = sum(probs[:, j] * GAINS[label] for j, label in enumerate(LABELS))
    oof["cosine"] = x[:, -1]  # zero-shot ranking score: no classifier involved
    return fold_scores(oof), oof


def fold_scores(oof: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for fold, part in oof.groupby("fold"):
        gains = part["esci_label"].map(GAINS)
        rows.append({"fold": int(fold),
                     "task2_micro_f1": task2_scores(part["esci_label"], part["pred"])["micro_f1"],
                     "task1_ndcg_informative": ndcg(part["query_id"], gains, part["score"],
                                                    informative_only=True),
                     "task1_ndcg_informative_cosine": ndcg(part["query_id"], gains, part["cosine"],
                                                           informative_only=True)})
    return pd.DataFrame(rows)


def locale_scores(oof: pd.DataFrame) -> pd.Series:
    """Task-2 micro-F1 per locale (and ``all``) over all out-of-fold rows."""
    scores = {loc: task2_scores(g["esci_label"], g["pred"])["micro_f1"]
              for loc, g in oof.groupby("product_locale")}
    scores["all"] = task2_scores(oof["esci_label"], oof["pred"])["micro_f1"]
    return pd.Series(scores)
