"""Paired comparisons of out-of-fold predictions: is model A better than model B beyond noise?

Both models are scored on the same bootstrap resamples of queries, so the interval is on the
*difference* (much tighter than two overlapping leaderboard CIs). Task 3 uses the leaderboard's
cross-fitted thresholds, so no score here sees the labels it is scored on.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from esci.leaderboard import crossfit_task3, task2_predictions
from esci.metrics import gains_of, ndcg_per_query

METRICS = ("task1_ndcg", "task1_ndcg_informative", "task2_micro_f1", "task3_micro_f1")


def query_sums(pred: pd.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """metric -> (numerator, denominator) per query; the metric is sum(num) / sum(den).

    pred: an out-of-fold frame (query_id, fold, esci_label, p_E..p_I, score[, p_sub]).
    """
    pred = pred.reset_index(drop=True)
    codes, uniques = pd.factorize(pred["query_id"], sort=False)
    per_q = ndcg_per_query(pred["query_id"], gains_of(pred["esci_label"]), pred["score"])
    per_q = per_q.set_index("query_id").loc[uniques]
    ndcg = per_q["ndcg"].to_numpy()
    inf = per_q["informative"].to_numpy().astype(float)
    rows = np.bincount(codes, minlength=len(uniques)).astype(float)
    truth = pred["esci_label"].to_numpy()
    correct2 = np.bincount(codes, weights=(task2_predictions(pred) == truth), minlength=len(uniques))
    correct3 = np.bincount(codes, weights=(crossfit_task3(pred) == (truth == "S")),
                           minlength=len(uniques))
    return {"task1_ndcg": (ndcg, np.ones_like(ndcg)),
            "task1_ndcg_informative": (ndcg * inf, inf),
            "task2_micro_f1": (correct2, rows), "task3_micro_f1": (correct3, rows)}


def point(sums: dict, metric: str) -> float:
    num, den = sums[metric]
    return float(num.sum() / den.sum()) if den.sum() > 0 else float("nan")


def paired_difference(a: dict, b: dict, metric: str, n_boot: int, seed: int,
                      chunk: int = 50) -> tuple[float, float, float]:
    """(A - B, 2.5th, 97.5th percentile) of the metric difference over query resamples."""
    (na, da), (nb, db) = a[metric], b[metric]
    diff = point(a, metric) - point(b, metric)
    n_q = len(na)
    rng = np.random.default_rng(seed)
    draws = []
    for start in range(0, n_boot, chunk):
        w = rng.multinomial(n_q, np.full(n_q, 1.0 / n_q), size=min(chunk, n_boot - start))
        w = w.astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            draws.append(w @ na / (w @ da) - w @ nb / (w @ db))
    values = np.concatenate(draws) if draws else np.array([])
    values = values[np.isfinite(values)]
    if not len(values):
        return diff, float("nan"), float("nan")
    lo, hi = np.percentile(values, [2.5, 97.5])
    return diff, float(lo), float(hi)


def compare_to_best(candidates: dict[str, pd.DataFrame], base: dict[str, pd.DataFrame],
                    n_boot: int, seed: int) -> pd.DataFrame:
    """For each candidate and metric: the best base model by that metric and the paired gap."""
    base_sums = {m: query_sums(df) for m, df in base.items()}
    rows = []
    for name, df in candidates.items():
        sums = query_sums(df)
        for metric in METRICS:
            best = max(base_sums, key=lambda m: point(base_sums[m], metric))
            diff, lo, hi = paired_difference(sums, base_sums[best], metric, n_boot, seed)
            rows.append({"model": name, "metric": metric, "value": point(sums, metric),
                         "best_base": best, "best_base_value": point(base_sums[best], metric),
                         "diff": diff, "diff_lo": lo, "diff_hi": hi,
                         "verdict": verdict(lo, hi)})
    return pd.DataFrame(rows)


def verdict(lo: float, hi: float) -> str:
    if lo > 0:
        return "better beyond CI"
    if hi < 0:
        return "worse beyond CI"
    return "within CI"


def task1_candidates(keys: pd.DataFrame, scores: dict[str, np.ndarray], reference: str,
                     n_boot: int, seed: int) -> pd.DataFrame:
    """nDCG of several task-1 orderings of the same rows, each against ``reference``."""
    def sums_of(score):
        frame = keys[["query_id", "esci_label"]].assign(score=score)
        codes, uniques = pd.factorize(frame["query_id"], sort=False)
        per_q = ndcg_per_query(frame["query_id"], gains_of(frame["esci_label"]), frame["score"])
        per_q = per_q.set_index("query_id").loc[uniques]
        ndcg, inf = per_q["ndcg"].to_numpy(), per_q["informative"].to_numpy().astype(float)
        return {"task1_ndcg": (ndcg, np.ones_like(ndcg)),
                "task1_ndcg_informative": (ndcg * inf, inf)}
    all_sums = {name: sums_of(s) for name, s in scores.items()}
    rows = []
    for name, sums in all_sums.items():
        row = {"ordering": name}
        for metric in ("task1_ndcg", "task1_ndcg_informative"):
            diff, lo, hi = paired_difference(sums, all_sums[reference], metric, n_boot, seed)
            row.update({metric: point(sums, metric), f"{metric}_diff": diff,
                        f"{metric}_diff_lo": lo, f"{metric}_diff_hi": hi})
        rows.append(row)
    return pd.DataFrame(rows).assign(reference=reference)
