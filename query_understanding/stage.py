"""Pipeline stage: out-of-fold query-understanding features for the relevance stack.

    run(cfg, paths) -> [features/query_understanding.parquet, ...]   (section ``query_understanding``)

One QU model per outer fold (trained on the other folds, query-grouped) predicts its held-out
queries, so a training row's features never come from a model that saw its query; official test
queries get the fold models' outputs averaged. The fine-tuning loop trains each fold model in
models/<fingerprint>/fold<k>/ (checkpoints, progress.json, predictions.npz: a rerun reads finished
models back). Also written, under runs/<run>/query_understanding/:
clusters_pt.csv / clusters_qc.csv (each cluster's size and top terms), weak_labels.parquet,
query_predictions.parquet (per query: predicted entities, the fold of the model that predicted it),
fold_metrics.csv (the QU model's own held-out scores) and config.yaml.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from esci.artifacts import TEST_FOLD, RunPaths, write_csv, write_parquet, write_text
from query_understanding.cv import model_dir, run_fold
from query_understanding.features import example_features, query_predictions
from query_understanding.inputs import prepare
from query_understanding.settings import SECTION, check_config, read_run

FEATURE_FILE = "query_understanding.parquet"


def _average(per_fold: list[dict]) -> dict:
    """Element-wise mean of several models' outputs for the same queries."""
    out = {}
    for task in per_fold[0]:
        vals = [o[task] for o in per_fold]
        if isinstance(vals[0], np.ndarray):
            out[task] = np.mean(vals, axis=0)
        else:
            out[task] = [np.mean([v[i] for v in vals], axis=0) for i in range(len(vals[0]))]
    return out


def _concat(parts: list[dict]) -> dict:
    out = {}
    for task in parts[0]:
        vals = [p[task] for p in parts]
        out[task] = np.concatenate(vals) if isinstance(vals[0], np.ndarray) else [x for v in vals for x in v]
    return out


def _take(outputs: dict, idx) -> dict:
    return {t: (v[idx] if isinstance(v, np.ndarray) else [v[i] for i in idx]) for t, v in outputs.items()}


def run(cfg, paths: RunPaths) -> list[Path]:
    qu = check_config(getattr(cfg, SECTION))
    examples, products, folds = read_run(paths)
    out_dir = paths.root / "query_understanding"
    data = prepare(examples, products, folds, qu, paths.root)
    write_csv(data.clusters.pt_terms, out_dir / "clusters_pt.csv")
    write_csv(data.clusters.qc_terms, out_dir / "clusters_qc.csv")
    write_parquet(data.labels, out_dir / "weak_labels.parquet")

    outer = sorted(int(f) for f in data.labels["fold"].unique() if f != TEST_FOLD)
    held_parts, held_rows, model_fold, test_parts, metrics = [], [], [], [], []
    test_rows = np.flatnonzero(data.fold == TEST_FOLD)
    for fold in outer:
        result = run_fold(data, qu, fold, model_dir(out_dir / "models", data, qu, fold), desc="qu stage")
        n_held = len(result.rows) - len(test_rows)
        held_parts.append(_take(result.outputs, np.arange(n_held)))
        held_rows.append(result.rows[:n_held])
        model_fold += [fold] * n_held
        if len(test_rows):
            test_parts.append(_take(result.outputs, np.arange(n_held, len(result.rows))))
        metrics.append({"fold": fold, **result.metrics})
    parts, rows = held_parts, list(held_rows)
    if test_parts:  # official test queries: every fold model predicted them, none trained on them
        parts, rows = parts + [_average(test_parts)], rows + [test_rows]
        model_fold += [TEST_FOLD] * len(test_rows)
    rows = np.concatenate(rows)
    per_query = query_predictions(data.labels["words"].iloc[rows], _concat(parts))
    per_query.index = data.labels["query_id"].iloc[rows].to_numpy()
    per_query.insert(0, "model_fold", model_fold)

    features = example_features(data.examples, data.products, data.clusters.assignments, per_query)
    feature_path = paths.features_dir / FEATURE_FILE
    write_parquet(features, feature_path)
    readable = per_query.drop(columns=[c for c in per_query if c.endswith("_probs")])
    readable = readable.assign(pt_top=[int(np.argmax(p)) for p in per_query["pt_probs"]]) \
        if "pt_probs" in per_query else readable
    write_parquet(readable.rename_axis("query_id").reset_index(), out_dir / "query_predictions.parquet")
    write_csv(pd.DataFrame(metrics), out_dir / "fold_metrics.csv")
    write_text(yaml.safe_dump({SECTION: dataclasses.asdict(qu)}, sort_keys=False), out_dir / "config.yaml")
    print(pd.DataFrame(metrics).filter(regex="fold|_f1$").round(3).to_string(index=False))
    return [feature_path, out_dir / "query_predictions.parquet", out_dir / "fold_metrics.csv",
            out_dir / "clusters_pt.csv", out_dir / "clusters_qc.csv"]
