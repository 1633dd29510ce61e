"""Paired comparisons of out-of-fold predictions: is model A better than model B beyond noise?

Every model is scored on the same bootstrap resamples of queries, so the interval is on the
*difference* (much tighter than two overlapping leaderboard CIs). Each metric is a ratio of
per-query sums (nDCG: sum of query nDCGs / queries; micro-F1: correct rows / rows), so one
resample is a weight vector over queries and all metrics of all models come from one matrix
product. Task 3 uses the leaderboard's cross-fitted thresholds, so no score here sees the labels
it is scored on.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from esci.leaderboard import crossfit_task3, task2_predictions
from esci.metrics import gains_of, ndcg_per_query

METRICS = ("task1_ndcg", "task1_ndcg_informative", "task2_micro_f1", "task3_micro_f1")
TASK1_METRICS = METRICS[:2]

Sums = dict[str, tuple[np.ndarray, np.ndarray]]  # metric -> (numerator, denominator) per query


def _ndcg_sums(query_id: pd.Series, labels: pd.Series, score) -> Sums:
    _, uniques = pd.factorize(query_id, sort=False)
    per_q = ndcg_per_query(query_id, gains_of(labels), score).set_index("query_id").loc[uniques]
    ndcg = per_q["ndcg"].to_numpy()
    inf = per_q["informative"].to_numpy().astype(float)
    return {"task1_ndcg": (ndcg, np.ones_like(ndcg)), "task1_ndcg_informative": (ndcg * inf, inf)}


def query_sums(pred: pd.DataFrame) -> Sums:
    """Per-query sums of every metric for an out-of-fold frame (query_id, fold, esci_label,
    p_E..p_I, score[, p_sub]). Frames compared together must share their row order."""
    pred = pred.reset_index(drop=True)
    codes, uniques = pd.factorize(pred["query_id"], sort=False)
    rows = np.bincount(codes, minlength=len(uniques)).astype(float)
    truth = pred["esci_label"].to_numpy()
    correct2 = np.bincount(codes, weights=(task2_predictions(pred) == truth), minlength=len(uniques))
    correct3 = np.bincount(codes, weights=(crossfit_task3(pred) == (truth == "S")),
                           minlength=len(uniques))
    return {**_ndcg_sums(pred["query_id"], pred["esci_label"], pred["score"]),
            "task2_micro_f1": (correct2, rows), "task3_micro_f1": (correct3, rows)}


def point(sums: Sums, metric: str) -> float:
    num, den = sums[metric]
    return float(num.sum() / den.sum()) if den.sum() > 0 else float("nan")


def resampled_totals(columns: np.ndarray, n_boot: int, seed: int, chunk: int = 50) -> np.ndarray:
    """(n_boot, c) column totals over query resamples (with replacement) of ``columns`` (n_q, c)."""
    n_q = len(columns)
    rng = np.random.default_rng(seed)
    out = []
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        picks = rng.integers(0, n_q, size=(b, n_q)) + (np.arange(b) * n_q)[:, None]
        weights = np.bincount(picks.ravel(), minlength=b * n_q).reshape(b, n_q).astype(float)
        out.append(weights @ columns)
    return np.vstack(out) if out else np.zeros((0, columns.shape[1]))


def paired_differences(sums: dict[str, Sums], pairs: list[tuple[str, str, str]], n_boot: int,
                       seed: int) -> list[tuple[float, float, float]]:
    """For each (a, b, metric): (metric(a) - metric(b), 2.5th, 97.5th percentile), one shared
    set of resamples for all pairs."""
    index, cols = {}, []
    for a, b, metric in pairs:
        for name in (a, b):
            if (name, metric) not in index:
                index[(name, metric)] = len(cols) // 2
                cols += list(sums[name][metric])
    totals = resampled_totals(np.column_stack(cols), n_boot, seed)
    out = []
    for a, b, metric in pairs:
        ia, ib = index[(a, metric)], index[(b, metric)]
        with np.errstate(invalid="ignore", divide="ignore"):
            draws = totals[:, 2 * ia] / totals[:, 2 * ia + 1] - totals[:, 2 * ib] / totals[:, 2 * ib + 1]
        draws = draws[np.isfinite(draws)]
        lo, hi = np.percentile(draws, [2.5, 97.5]) if len(draws) else (np.nan, np.nan)
        out.append((point(sums[a], metric) - point(sums[b], metric), float(lo), float(hi)))
    return out


def verdict(lo: float, hi: float) -> str:
    if lo > 0:
        return "better beyond CI"
    if hi < 0:
        return "worse beyond CI"
    return "within CI"


def compare_to_best(candidates: dict[str, pd.DataFrame], base: dict[str, pd.DataFrame],
                    n_boot: int, seed: int) -> pd.DataFrame:
    """For each candidate and metric: the best base model by that metric and the paired gap."""
    sums = {name: query_sums(df) for name, df in {**base, **candidates}.items()}
    pairs = []
    for name in candidates:
        for metric in METRICS:
            best = max(base, key=lambda m: point(sums[m], metric))
            pairs.append((name, best, metric))
    rows = []
    for (name, best, metric), (diff, lo, hi) in zip(pairs, paired_differences(sums, pairs, n_boot, seed)):
        rows.append({"model": name, "metric": metric, "value": point(sums[name], metric),
                     "best_base": best, "best_base_value": point(sums[best], metric),
                     "diff": diff, "diff_lo": lo, "diff_hi": hi, "verdict": verdict(lo, hi)})
    return pd.DataFrame(rows)


def compare_pair(a: pd.DataFrame, b: pd.DataFrame, n_boot: int, seed: int) -> pd.DataFrame:
    """metric, value_a, value_b, diff (a - b) with its paired 95% CI, verdict."""
    sums = {"a": query_sums(a), "b": query_sums(b)}
    pairs = [("a", "b", metric) for metric in METRICS]
    rows = [{"metric": metric, "value_a": point(sums["a"], metric),
             "value_b": point(sums["b"], metric), "diff": diff, "diff_lo": lo, "diff_hi": hi,
             "verdict": verdict(lo, hi)}
            for (_, _, metric), (diff, lo, hi) in zip(pairs, paired_differences(sums, pairs, n_boot, seed))]
    return pd.DataFrame(rows)


def task1_candidates(keys: pd.DataFrame, scores: dict[str, np.ndarray], reference: str,
                     n_boot: int, seed: int) -> pd.DataFrame:
    """nDCG of several task-1 orderings of the same rows, each against ``reference``."""
    sums = {name: _ndcg_sums(keys["query_id"], keys["esci_label"], s) for name, s in scores.items()}
    pairs = [(name, reference, metric) for name in scores for metric in TASK1_METRICS]
    diffs = dict(zip(pairs, paired_differences(sums, pairs, n_boot, seed)))
    rows = []
    for name in scores:
        row = {"ordering": name}
        for metric in TASK1_METRICS:
            diff, lo, hi = diffs[(name, reference, metric)]
            row.update({metric: point(sums[name], metric), f"{metric}_diff": diff,
                        f"{metric}_diff_lo": lo, f"{metric}_diff_hi": hi,
                        f"{metric}_verdict": verdict(lo, hi) if name != reference else "reference"})
        rows.append(row)
    return pd.DataFrame(rows).assign(reference=reference)
