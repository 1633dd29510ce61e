"""LightGBM stackers and the nested cross-validation that scores them honestly.

For each outer fold k the stacker is fit on the out-of-fold rows of the other folds and predicts
fold k; nothing fit for fold k ever sees a fold-k label. The test split is predicted by every
fold's stacker and averaged.

Tasks: ``task1`` LGBMRanker (lambdarank over query groups, label gains = competition gains),
``task2`` 4-class LGBMClassifier (E, S, C, I), ``task3`` binary LGBMClassifier (substitute or not).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import lightgbm as lgb
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ensemble.config import EnsembleConfig
from esci.artifacts import GAINS, LABELS, TEST_FOLD

TASKS = ("task1", "task2", "task3")
# Ranker relevance of a label code (E, S, C, I = 0..3) and the gain of each relevance 0..3.
RELEVANCE = np.array([3, 2, 1, 0])
LABEL_GAIN = [GAINS[label] for label in reversed(LABELS)]  # I, C, S, E -> 0, 0.01, 0.1, 1

@dataclass
class CVResult:
    oof: np.ndarray  # (n,) for task1/task3, (n, 4) for task2
    test: np.ndarray | None
    importance: pd.DataFrame  # fold, feature, gain, split


def lgbm_params(cfg: EnsembleConfig) -> dict:
    bagging = {"subsample": cfg.subsample, "subsample_freq": 1} if cfg.subsample < 1 else {}
    return dict(n_estimators=cfg.n_estimators, learning_rate=cfg.learning_rate,
                num_leaves=cfg.num_leaves, min_child_samples=cfg.min_child_samples,
                colsample_bytree=cfg.colsample_bytree, max_bin=cfg.max_bin,
                random_state=cfg.seed, deterministic=True, force_row_wise=True,
                n_jobs=cfg.n_jobs, verbose=-1, **bagging)


def _query_sizes(sorted_query: np.ndarray) -> np.ndarray:
    starts = np.flatnonzero(np.r_[True, sorted_query[1:] != sorted_query[:-1]])
    return np.diff(np.r_[starts, len(sorted_query)])


def fit_task(task: str, x: np.ndarray, label: np.ndarray, query: np.ndarray,
             cfg: EnsembleConfig):
    """Fit one stacker. ``label``: codes 0..3 (E, S, C, I); ``query``: codes, rows grouped by query
    (required for task1)."""
    params = lgbm_params(cfg)
    if task == "task1":
        model = lgb.LGBMRanker(objective="lambdarank", label_gain=LABEL_GAIN, **params)
        model.fit(x, RELEVANCE[label], group=_query_sizes(query))
    elif task == "task2":
        model = lgb.LGBMClassifier(objective="multiclass", **params)
        model.fit(x, label)
    elif task == "task3":
        target = (label == LABELS.index("S")).astype(int)
        if target.min() == target.max():  # one class only: a constant is the only honest answer
            return float(target[0])
        model = lgb.LGBMClassifier(objective="binary", **params)
        model.fit(x, target)
    else:
        raise ValueError(f"ensemble: unknown task {task!r}; expected one of {TASKS}")
    return model


def predict_task(task: str, model, x: np.ndarray) -> np.ndarray:
    if isinstance(model, float):
        return np.full(len(x), model)
    if task == "task1":
        return model.predict(x)
    raw = model.predict_proba(x)
    if task == "task3":
        return raw[:, list(model.classes_).index(1)]
    out = np.zeros((len(x), len(LABELS)))
    for j, code in enumerate(model.classes_):  # a class absent from the training folds stays 0
        out[:, int(code)] = raw[:, j]
    return out


def importance_of(model, feature_names: list[str]) -> pd.DataFrame:
    """Gain and split counts by column position (models are fit on bare arrays)."""
    if isinstance(model, float):
        return pd.DataFrame({"feature": feature_names, "gain": 0.0, "split": 0})
    booster = model.booster_
    return pd.DataFrame({"feature": feature_names,
                         "gain": booster.feature_importance("gain"),
                         "split": booster.feature_importance("split")})


def nested_cv(task: str, x: np.ndarray | Callable[[int], np.ndarray], label: np.ndarray, fold: np.ndarray, query: np.ndarray,
              cfg: EnsembleConfig, feature_names: list[str],
              x_test: np.ndarray | None = None) -> CVResult:
    """Outer-fold predictions of one task's stacker, and the fold-averaged test prediction.

    x: (n, f) out-of-fold feature matrix, or a function ``k -> (n, f) matrix`` giving the
       features as outer fold k may see them (needed by any feature fitted on labels, which must
       then be fitted on the other folds only).
    label: (n,) codes 0..3; fold: (n,) outer fold ids (no TEST_FOLD rows); query: (n,) codes.
    """
    fold = np.asarray(fold)
    if (fold == TEST_FOLD).any():
        raise ValueError("ensemble: out-of-fold rows must not carry the test fold id")
    folds = np.unique(fold)
    width = len(LABELS) if task == "task2" else None
    shape = (len(fold), width) if width else (len(fold),)
    oof = np.full(shape, np.nan)
    test = None if x_test is None else np.zeros((len(x_test), width) if width else len(x_test))
    parts = []
    for k in tqdm(folds, desc=f"stack {task}", leave=False):
        xk = x(k) if callable(x) else x
        train = np.flatnonzero(fold != k)
        if task == "task1":  # lambdarank needs each query's rows together
            train = train[np.argsort(query[train], kind="stable")]
        held = np.flatnonzero(fold == k)
        model = fit_task(task, xk[train], label[train], query[train], cfg)
        oof[held] = predict_task(task, model, xk[held])
        if test is not None:
            test += predict_task(task, model, x_test) / len(folds)
        parts.append(importance_of(model, feature_names).assign(fold=int(k)))
    return CVResult(oof, test, pd.concat(parts, ignore_index=True))
