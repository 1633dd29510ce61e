"""Config of the ensemble stage (section ``ensemble`` of the run config)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class EnsembleConfig:
    enabled: bool = False
    task1: str = "ranker"  # the stack's score column: ranker (LGBMRanker) | expected_gain (of task 2)
    # Product-ID prefix codes and "ASIN starts with a digit". Off by default: when on, a separate
    # model `stack-leak` (labelled leak on the leaderboard) is written beside the clean `stack`.
    leak_features: bool = False
    # Base models not to stack. The class-prior floor is constant within a fold, so its only
    # signal would be the fold's identity (and through it the fold's label mix).
    exclude: list[str] = field(default_factory=lambda: ["prior"])
    query_stats: bool = True  # per-query mean/max/min/std/rank/gaps of every model output
    text_features: bool = True  # lexical.parquet columns + number/unit matching
    n_estimators: int = 300
    learning_rate: float = 0.05
    num_leaves: int = 15
    min_child_samples: int = 20
    colsample_bytree: float = 0.8
    subsample: float = 1.0  # < 1 bags rows each iteration: faster on the full dataset
    max_bin: int = 255
    # LightGBM threads. On a shared, oversubscribed CPU OpenMP spin-waiting made 2 threads ~9x
    # slower than 1 (measured here); raise it on a dedicated machine.
    n_jobs: int = 1
    seed: int = 42
    bootstrap: int = 1000  # paired bootstrap draws (over queries) for stack-vs-best comparisons
    importance_top: int = 25  # features shown per task in the importance chart
