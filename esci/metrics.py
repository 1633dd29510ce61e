"""The competition's metrics, vectorised over queries.

Task 1: nDCG over all judged products of a query, no cutoff, linear gains E=1, S=0.1, C=0.01,
I=0, averaged over queries. Tied scores share their positions' discounts (as scikit-learn's
``ndcg_score`` does), so a constant model is not rewarded for the file's row order. A query whose
ideal DCG is 0 (one product, or all Irrelevant) scores 1.0: every order is ideal.
Task 2: micro-F1 over E/S/C/I (plus macro-F1 and the confusion matrix).
Task 3: micro-F1 of substitute against not-substitute (plus F1 of the substitute class).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, f1_score

from esci.artifacts import GAINS, LABELS


def gains_of(labels) -> np.ndarray:
    return pd.Series(labels).map(GAINS).to_numpy(dtype=float)


def ndcg_per_query(query_ids, gains, scores) -> pd.DataFrame:
    """One row per query: ``query_id, ndcg, n_products, informative`` (>= 2 distinct gains)."""
    codes, uniques = pd.factorize(pd.Series(query_ids), sort=False)
    gains = np.asarray(gains, dtype=float)
    scores = np.asarray(scores, dtype=float)
    n_q = len(uniques)
    size = np.bincount(codes, minlength=n_q)
    start = np.concatenate([[0], np.cumsum(size)[:-1]])

    order = np.lexsort((-scores, codes))
    q_s, g_s, s_s = codes[order], gains[order], scores[order]
    pos = np.arange(len(q_s)) - start[q_s]
    disc = 1.0 / np.log2(pos + 2.0)
    new_group = np.ones(len(q_s), dtype=bool)
    new_group[1:] = (q_s[1:] != q_s[:-1]) | (s_s[1:] != s_s[:-1])
    gid = np.cumsum(new_group) - 1
    g_count = np.bincount(gid)
    g_mean_gain = np.bincount(gid, weights=g_s) / g_count
    g_disc = np.bincount(gid, weights=disc)
    g_query = q_s[new_group]
    dcg = np.bincount(g_query, weights=g_mean_gain * g_disc, minlength=n_q)

    ideal = np.lexsort((-gains, codes))
    idcg = np.bincount(codes[ideal], weights=gains[ideal] * disc, minlength=n_q)
    ndcg = np.where(idcg > 0, dcg / np.where(idcg > 0, idcg, 1.0), 1.0)

    distinct = pd.DataFrame({"q": codes, "g": gains}).groupby("q")["g"].nunique()
    informative = distinct.reindex(range(n_q)).to_numpy() >= 2
    return pd.DataFrame({"query_id": uniques, "ndcg": ndcg, "n_products": size,
                         "informative": informative})


def ndcg(query_ids, gains, scores, informative_only: bool = False) -> float:
    per_q = ndcg_per_query(query_ids, gains, scores)
    if informative_only:
        per_q = per_q[per_q["informative"]]
    return float(per_q["ndcg"].mean()) if len(per_q) else float("nan")


def task2_scores(y_true, y_pred) -> dict:
    labels = list(LABELS)
    return {
        "micro_f1": float(f1_score(y_true, y_pred, labels=labels, average="micro")),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "confusion": confusion_matrix(y_true, y_pred, labels=labels),
    }


def task3_scores(is_sub_true, is_sub_pred) -> dict:
    t = np.asarray(is_sub_true, dtype=bool)
    p = np.asarray(is_sub_pred, dtype=bool)
    return {"micro_f1": float(f1_score(t, p, average="micro")),
            "substitute_f1": float(f1_score(t, p, average="binary", zero_division=0))}


def tune_threshold(is_sub_true, p_sub) -> float:
    """The P(substitute) cut that maximises task-3 micro-F1 (accuracy) on the rows given."""
    t = np.asarray(is_sub_true, dtype=bool)
    p = np.asarray(p_sub, dtype=float)
    order = np.argsort(-p, kind="mergesort")
    p_sorted, t_sorted = p[order], t[order]
    # Predicting the top-k as substitute: correct = TP(k) + TN(k).
    tp = np.concatenate([[0], np.cumsum(t_sorted)])
    fp = np.concatenate([[0], np.cumsum(~t_sorted)])
    tn = (~t).sum() - fp
    correct = tp + tn
    # Only cut between distinct probabilities, so the threshold is realisable.
    k_ok = np.concatenate([[True], p_sorted[:-1] != p_sorted[1:], [True]]) if len(p) else np.array([True])
    k_ok[0] = True
    best_k = int(np.argmax(np.where(k_ok, correct, -1)))
    if best_k == 0:
        return float(p_sorted[0] + 1e-9) if len(p) else 0.5
    if best_k == len(p):
        return float(p_sorted[-1])
    return float((p_sorted[best_k - 1] + p_sorted[best_k]) / 2)
