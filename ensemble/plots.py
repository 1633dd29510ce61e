"""Charts of the ensemble stage: feature importance, and per-fold scores of every model.

Stand-ins until the project's single plotting module ``esci.plots`` provides the same two
functions; the stage prefers ``esci.plots`` when it exists.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from esci.artifacts import atomic_path  # noqa: E402


def _save(fig, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def feature_importance(table: pd.DataFrame, path: str | Path, top: int = 25) -> None:
    """Horizontal bars of the top features by share of gain, one panel per task.

    table: ``feature, gain_share`` (+ ``task``: one panel each).
    """
    tasks = list(table["task"].unique()) if "task" in table.columns else [None]
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 0.28 * top + 1.5),
                             squeeze=False)
    for ax, task in zip(axes[0], tasks):
        part = table if task is None else table[table["task"] == task]
        part = part.nlargest(top, "gain_share").iloc[::-1]
        ax.barh(part["feature"], part["gain_share"], color="tab:blue")
        ax.set_xlabel("share of total gain")
        ax.set_title(task or "feature importance")
        ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    _save(fig, path)


def fold_scores(fold_scores: pd.DataFrame, path: str | Path) -> None:
    """Per-fold value of each metric for every model side by side (``model, fold, metric, value``)."""
    metrics = list(fold_scores["metric"].unique())
    models = list(fold_scores["model"].unique())
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(3.0, 0.9 * len(models)) * len(metrics), 4),
                             squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        part = fold_scores[fold_scores["metric"] == metric]
        for i, model in enumerate(models):
            values = part.loc[part["model"] == model, "value"]
            ax.scatter([i] * len(values), values, s=18, alpha=0.7)
            ax.hlines(values.mean(), i - 0.3, i + 0.3, color="black")
        ax.set_xticks(range(len(models)), models, rotation=45, ha="right", fontsize=8)
        ax.set_title(metric, fontsize=9)
    fig.suptitle("per-fold scores (dots: folds, bar: mean)")
    fig.tight_layout()
    _save(fig, path)
