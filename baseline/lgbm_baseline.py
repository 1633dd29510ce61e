"""LightGBM on the lexical features, one model per fold.

Task 2: a 4-class classifier (p_E..p_I). Task 1: an ``LGBMRanker`` (lambdarank, query groups,
label gains set to the competition's) or, with ``task1: expected_gain``, the classifier's
expected gain. Task 3 uses p_S with a threshold tuned out of fold (see ``esci.leaderboard``).
"""
from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from esci.artifacts import LABELS, PROB_COLUMNS, TEST_FOLD, expected_gain
from esci.config import BaselineConfig

RELEVANCE = {"I": 0, "C": 1, "S": 2, "E": 3}
LABEL_GAIN = [0.0, 0.01, 0.1, 1.0]  # gain of relevance 0..3, i.e. I, C, S, E


def _common(cfg: BaselineConfig) -> dict:
    return dict(n_estimators=cfg.n_estimators, learning_rate=cfg.learning_rate,
                num_leaves=cfg.num_leaves, min_child_samples=cfg.min_child_samples,
                random_state=cfg.seed, deterministic=True, force_row_wise=True, n_jobs=cfg.n_jobs,
                verbose=-1)


def _class_probs(model: lgb.LGBMClassifier, x: pd.DataFrame) -> np.ndarray:
    """Probabilities in E, S, C, I order, zero for a class absent from the training fold."""
    raw = model.predict_proba(x)
    out = np.zeros((len(x), len(LABELS)))
    for j, label in enumerate(model.classes_):
        out[:, LABELS.index(label)] = raw[:, j]
    return out


def _fit_ranker(x: pd.DataFrame, labels: pd.Series, query_ids: pd.Series,
                cfg: BaselineConfig) -> lgb.LGBMRanker:
    order = np.argsort(pd.factorize(query_ids)[0], kind="mergesort")
    groups = pd.Series(query_ids.to_numpy()[order]).groupby(
        pd.factorize(query_ids.to_numpy()[order])[0], sort=True).size().to_numpy()
    ranker = lgb.LGBMRanker(objective="lambdarank", label_gain=LABEL_GAIN, **_common(cfg))
    ranker.fit(x.iloc[order], labels.map(RELEVANCE).to_numpy()[order], group=groups)
    return ranker


def train_baseline(features: pd.DataFrame, examples: pd.DataFrame, folds: pd.DataFrame,
                   cfg: BaselineConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Out-of-fold and fold-averaged test predictions in the artifact schema."""
    df = examples.merge(folds[["example_id", "fold"]], on="example_id", validate="1:1")
    df = df.merge(features, on="example_id", validate="1:1")
    x = df[[c for c in features.columns if c != "example_id"]]
    probs = np.zeros((len(df), len(LABELS)))
    score = np.zeros(len(df))
    is_test = (df["fold"] == TEST_FOLD).to_numpy()
    fold_ids = sorted(k for k in df["fold"].unique() if k != TEST_FOLD)
    for k in tqdm(fold_ids, desc="baseline folds", leave=False):
        train = ((df["fold"] != k) & ~is_test).to_numpy()
        held = (df["fold"] == k).to_numpy()
        clf = lgb.LGBMClassifier(objective="multiclass", **_common(cfg))
        clf.fit(x[train], df.loc[train, "esci_label"])
        probs[held] = _class_probs(clf, x[held])
        if is_test.any():
            probs[is_test] += _class_probs(clf, x[is_test]) / len(fold_ids)
        if cfg.task1 == "ranker":
            ranker = _fit_ranker(x[train], df.loc[train, "esci_label"], df.loc[train, "query_id"], cfg)
            score[held] = ranker.predict(x[held])
            if is_test.any():
                score[is_test] += ranker.predict(x[is_test]) / len(fold_ids)
        elif cfg.task1 != "expected_gain":
            raise ValueError(f"config baseline.task1: {cfg.task1!r} is not ranker or expected_gain")
    out = df[["example_id", "query_id", "product_id", "product_locale", "fold", "esci_label"]].copy()
    out[PROB_COLUMNS] = probs
    out["score"] = score if cfg.task1 == "ranker" else expected_gain(out).to_numpy()
    return out[~is_test].reset_index(drop=True), out[is_test].drop(
        columns=["fold", "esci_label"]).reset_index(drop=True)


def class_prior_predictions(examples: pd.DataFrame, folds: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The floor: every row gets its training folds' label frequencies (score is then constant)."""
    df = examples.merge(folds[["example_id", "fold"]], on="example_id", validate="1:1")
    is_test = (df["fold"] == TEST_FOLD).to_numpy()
    probs = np.zeros((len(df), len(LABELS)))
    fold_ids = sorted(k for k in df["fold"].unique() if k != TEST_FOLD)
    for k in fold_ids:
        train = ((df["fold"] != k) & ~is_test).to_numpy()
        freq = df.loc[train, "esci_label"].value_counts(normalize=True).reindex(list(LABELS)).fillna(0)
        probs[(df["fold"] == k).to_numpy()] = freq.to_numpy()
        probs[is_test] += freq.to_numpy() / len(fold_ids)
    out = df[["example_id", "query_id", "product_id", "product_locale", "fold", "esci_label"]].copy()
    out[PROB_COLUMNS] = probs
    out["score"] = expected_gain(out).to_numpy()
    return out[~is_test].reset_index(drop=True), out[is_test].drop(
        columns=["fold", "esci_label"]).reset_index(drop=True)
