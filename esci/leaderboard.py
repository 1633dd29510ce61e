"""The k-fold CV leaderboard: pooled out-of-fold metrics, ± std over folds, 95% bootstrap CI.

The CI resamples *queries* with replacement (products of one query are not independent), and is
computed from per-query sufficient statistics, so 1,000 resamples of 130k queries stay cheap.
Task 3 decides "substitute" when P(substitute) passes a threshold tuned on the *other* folds'
out-of-fold rows, so the task-3 score never sees the labels it is scored on.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from esci.artifacts import LABELS, RunPaths, write_csv, write_text
from esci.metrics import gains_of, ndcg_per_query, task2_scores, task3_scores, tune_threshold

METRICS = ["task1_ndcg", "task1_ndcg_informative", "task2_micro_f1", "task2_macro_f1",
           "task3_micro_f1"]
TASK_METRIC = {"task1": "task1_ndcg", "task2": "task2_micro_f1", "task3": "task3_micro_f1"}


def p_substitute(pred: pd.DataFrame) -> np.ndarray:
    col = "p_sub" if "p_sub" in pred.columns and pred["p_sub"].notna().all() else "p_S"
    return pred[col].to_numpy(dtype=float)


def crossfit_task3(oof: pd.DataFrame) -> np.ndarray:
    """Substitute decisions, fold k thresholded at the cut tuned on the other folds."""
    p = p_substitute(oof)
    truth = (oof["esci_label"] == "S").to_numpy()
    fold = oof["fold"].to_numpy()
    decision = np.zeros(len(oof), dtype=bool)
    for k in np.unique(fold):
        rest = fold != k
        cut = tune_threshold(truth[rest], p[rest]) if rest.any() else 0.5
        decision[fold == k] = p[fold == k] >= cut
    return decision


def task2_predictions(pred: pd.DataFrame) -> np.ndarray:
    probs = pred[[f"p_{label}" for label in LABELS]].to_numpy(dtype=float)
    return np.array(LABELS)[probs.argmax(axis=1)]


def _point_metrics(df: pd.DataFrame, sub_pred: np.ndarray) -> dict:
    per_q = ndcg_per_query(df["query_id"], gains_of(df["esci_label"]), df["score"])
    t2 = task2_scores(df["esci_label"], task2_predictions(df))
    t3 = task3_scores(df["esci_label"] == "S", sub_pred)
    inf = per_q[per_q["informative"]]
    return {"task1_ndcg": per_q["ndcg"].mean(),
            "task1_ndcg_informative": inf["ndcg"].mean() if len(inf) else np.nan,
            "task2_micro_f1": t2["micro_f1"], "task2_macro_f1": t2["macro_f1"],
            "task3_micro_f1": t3["micro_f1"], "task3_substitute_f1": t3["substitute_f1"]}


def _macro_f1_from_confusion(conf: np.ndarray) -> np.ndarray:
    """conf: (B, 4, 4) true x pred counts -> (B,) macro-F1 with zero_division=0."""
    tp = np.diagonal(conf, axis1=1, axis2=2)
    denom = conf.sum(axis=2) + conf.sum(axis=1)
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp, dtype=float), where=denom > 0)
    return f1.mean(axis=1)


def bootstrap_ci(df: pd.DataFrame, sub_pred: np.ndarray, n_boot: int, seed: int,
                 chunk: int = 50) -> dict:
    """95% percentile intervals of each metric, resampling queries with replacement."""
    codes, uniques = pd.factorize(df["query_id"], sort=False)
    n_q = len(uniques)
    per_q = ndcg_per_query(df["query_id"], gains_of(df["esci_label"]), df["score"])
    per_q = per_q.set_index("query_id").loc[uniques]
    ndcg_q = per_q["ndcg"].to_numpy()
    inf_q = per_q["informative"].to_numpy()
    n_rows = np.bincount(codes, minlength=n_q).astype(float)
    label_idx = pd.Series(df["esci_label"]).map({l: i for i, l in enumerate(LABELS)}).to_numpy()
    pred_idx = pd.Series(task2_predictions(df)).map({l: i for i, l in enumerate(LABELS)}).to_numpy()
    correct2 = np.bincount(codes, weights=(label_idx == pred_idx), minlength=n_q)
    conf_q = np.zeros((n_q, 16))
    np.add.at(conf_q, (codes, label_idx * 4 + pred_idx), 1.0)
    correct3 = np.bincount(codes, weights=((df["esci_label"] == "S").to_numpy() == sub_pred),
                           minlength=n_q)

    rng = np.random.default_rng(seed)
    draws = {m: [] for m in METRICS}
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        w = rng.multinomial(n_q, np.full(n_q, 1.0 / n_q), size=b).astype(float)
        draws["task1_ndcg"].append(w @ ndcg_q / n_q)
        w_inf = w[:, inf_q]
        with np.errstate(invalid="ignore", divide="ignore"):
            draws["task1_ndcg_informative"].append(w_inf @ ndcg_q[inf_q] / w_inf.sum(axis=1))
        rows = w @ n_rows
        draws["task2_micro_f1"].append(w @ correct2 / rows)
        draws["task2_macro_f1"].append(_macro_f1_from_confusion((w @ conf_q).reshape(b, 4, 4)))
        draws["task3_micro_f1"].append(w @ correct3 / rows)
    out = {}
    for m, parts in draws.items():
        values = np.concatenate(parts)
        values = values[np.isfinite(values)]
        lo, hi = (np.percentile(values, [2.5, 97.5]) if len(values) else (np.nan, np.nan))
        out[f"{m}_lo"], out[f"{m}_hi"] = float(lo), float(hi)
    return out


def evaluate_oof(oof: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> tuple[dict, pd.DataFrame]:
    """(leaderboard row, per-fold scores) for one model's out-of-fold predictions."""
    oof = oof.reset_index(drop=True)
    sub_pred = crossfit_task3(oof)
    row = _point_metrics(oof, sub_pred)
    fold_rows = []
    for k in sorted(oof["fold"].unique()):
        mask = (oof["fold"] == k).to_numpy()
        scores = _point_metrics(oof[mask], sub_pred[mask])
        fold_rows += [{"fold": int(k), "metric": m, "value": scores[m]} for m in METRICS]
    folds = pd.DataFrame(fold_rows)
    for m in METRICS:
        row[f"{m}_std"] = float(folds.loc[folds["metric"] == m, "value"].std(ddof=1))
    row.update(bootstrap_ci(oof, sub_pred, n_boot, seed))
    per_q = ndcg_per_query(oof["query_id"], gains_of(oof["esci_label"]), oof["score"])
    row.update(n_examples=len(oof), n_queries=len(per_q), n_informative=int(per_q["informative"].sum()))
    return row, folds


def model_meta(paths: RunPaths, model: str) -> dict:
    meta = paths.oof_dir / f"{model}.meta.json"
    return json.loads(meta.read_text()) if meta.is_file() else {}


def build_leaderboard(paths: RunPaths, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    rows, fold_frames = [], []
    for model in paths.models():
        oof = pd.read_parquet(paths.oof(model))
        row, folds = evaluate_oof(oof, n_boot, seed)
        row = {"model": model, "leak": bool(model_meta(paths, model).get("leak", False)), **row}
        rows.append(row)
        fold_frames.append(folds.assign(model=model))
    if not rows:
        raise RuntimeError(f"leaderboard: no out-of-fold predictions under {paths.oof_dir}")
    board = pd.DataFrame(rows).sort_values("task2_micro_f1", ascending=False, kind="mergesort")
    write_csv(board, paths.leaderboard_csv)
    write_csv(pd.concat(fold_frames)[["model", "fold", "metric", "value"]], paths.fold_scores)
    write_text(to_markdown(board), paths.leaderboard_md)
    return board


def to_markdown(board: pd.DataFrame) -> str:
    head = "| model | " + " | ".join(METRICS) + " |\n|---|" + "---|" * len(METRICS) + "\n"
    lines = []
    for _, r in board.iterrows():
        name = f"{r['model']} (leak)" if r.get("leak") else r["model"]
        cells = [f"{r[m]:.4f} ± {r[m + '_std']:.4f} [{r[m + '_lo']:.4f}, {r[m + '_hi']:.4f}]"
                 for m in METRICS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    n = board.iloc[0]
    note = (f"\nPooled out-of-fold metrics over {int(n['n_examples'])} examples, {int(n['n_queries'])} "
            f"queries ({int(n['n_informative'])} informative for nDCG); value ± std over folds "
            "[95% bootstrap CI over queries].\n")
    return head + "\n".join(lines) + "\n" + note
