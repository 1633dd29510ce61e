"""Competition submission files, each task written from its best model by CV."""
from __future__ import annotations

import numpy as np
import pandas as pd

from esci.artifacts import RunPaths, write_csv, write_json
from esci.leaderboard import TASK_METRIC, p_substitute, task2_predictions
from esci.metrics import tune_threshold


def choose_models(board: pd.DataFrame, allow_leak: bool = False) -> dict[str, str]:
    """Best model per task by its pooled CV metric; leak-labelled rows only if allowed."""
    pool = board if allow_leak else board[~board["leak"].astype(bool)]
    if pool.empty:
        raise RuntimeError("submission: no non-leak model on the leaderboard")
    return {task: str(pool.sort_values(metric, ascending=False, kind="mergesort").iloc[0]["model"])
            for task, metric in TASK_METRIC.items()}


def write_submissions(paths: RunPaths, board: pd.DataFrame, allow_leak: bool = False) -> dict:
    chosen = choose_models(board, allow_leak)
    out = paths.submission_dir

    test = pd.read_parquet(paths.test(chosen["task1"]))
    ranked = test.sort_values(["query_id", "score"], ascending=[True, False], kind="mergesort")
    write_csv(ranked[["query_id", "product_id"]], out / "task1.csv")

    test = pd.read_parquet(paths.test(chosen["task2"]))
    write_csv(pd.DataFrame({"example_id": test["example_id"], "esci_label": task2_predictions(test)}),
              out / "task2.csv")

    test = pd.read_parquet(paths.test(chosen["task3"]))
    oof = pd.read_parquet(paths.oof(chosen["task3"]))
    cut = tune_threshold(oof["esci_label"] == "S", p_substitute(oof))
    label = np.where(p_substitute(test) >= cut, "substitute", "no_substitute")
    write_csv(pd.DataFrame({"example_id": test["example_id"], "substitute_label": label}),
              out / "task3.csv")
    record = {"models": chosen, "task3_threshold": cut, "test_rows": len(test)}
    write_json(record, out / "chosen.json")
    return record
