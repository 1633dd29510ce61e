"""Run-directory layout, artifact schemas and atomic writes.

Every stage hands off through files under ``runs/<run>/``; this module is the one place that
knows their names and columns, so a later stage reads a file, never another stage's objects.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

import pandas as pd

LABELS = ("E", "S", "C", "I")
GAINS = {"E": 1.0, "S": 0.1, "C": 0.01, "I": 0.0}
PROB_COLUMNS = [f"p_{label}" for label in LABELS]
KEY_COLUMNS = ["example_id", "query_id", "product_id", "product_locale"]
OOF_COLUMNS = KEY_COLUMNS + ["fold", "esci_label"] + PROB_COLUMNS + ["score"]
TEST_COLUMNS = KEY_COLUMNS + PROB_COLUMNS + ["score"]
# Optional: a dedicated task-3 probability P(substitute). Without it, task 3 uses p_S.
OPTIONAL_COLUMNS = ["p_sub"]
FOLD_COLUMNS = ["example_id", "query_id", "query_norm", "fold"]
TEST_FOLD = -1  # fold id of official test-split rows: never trained on, predicted by every fold model


class RunPaths:
    """Names of every artifact of one run."""

    def __init__(self, runs_dir: str | Path, run: str):
        self.root = Path(runs_dir) / run
        self.config = self.root / "config.yaml"
        self.examples = self.root / "examples.parquet"
        self.folds = self.root / "folds.parquet"
        self.oof_dir = self.root / "oof"
        self.test_dir = self.root / "test"
        self.features_dir = self.root / "features"
        self.leaderboard_csv = self.root / "leaderboard.csv"
        self.leaderboard_md = self.root / "leaderboard.md"
        self.fold_scores = self.root / "fold_scores.csv"
        self.submission_dir = self.root / "submission"
        self.figures_dir = self.root / "figures"
        self.stamps_dir = self.root / ".stamps"

    def oof(self, model: str) -> Path:
        return self.oof_dir / f"{model}.parquet"

    def test(self, model: str) -> Path:
        return self.test_dir / f"{model}.parquet"

    def models(self) -> list[str]:
        """Models that have an out-of-fold file, in name order."""
        return sorted(p.stem for p in self.oof_dir.glob("*.parquet"))


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; rename it onto ``path`` only if the block succeeds.

    A killed or failing writer leaves at most a stray ``.tmp`` file, never a truncated
    artifact under the real name that a rerun would trust.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_parquet(df: pd.DataFrame, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def write_csv(df: pd.DataFrame, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def write_text(text: str, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(obj, path: str | Path) -> None:
    write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", path)


def check_prediction_frame(df: pd.DataFrame, *, oof: bool, name: str = "predictions") -> None:
    """Raise if ``df`` breaks the out-of-fold / test schema (missing columns, bad probabilities)."""
    required = OOF_COLUMNS if oof else TEST_COLUMNS
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"{name}: missing columns {missing}")
    probs = df[PROB_COLUMNS].to_numpy(dtype=float)
    bad = ~((probs >= -1e-6).all(axis=1) & (abs(probs.sum(axis=1) - 1.0) < 1e-4))
    if bad.any():
        rows = df.index[bad][:5].tolist()
        raise ValueError(f"{name}: columns {PROB_COLUMNS} must be probabilities summing to 1; rows {rows}")
    if df["example_id"].duplicated().any():
        rows = df.index[df["example_id"].duplicated()][:5].tolist()
        raise ValueError(f"{name}: duplicate example_id at rows {rows}")


def write_predictions(df: pd.DataFrame, path: str | Path, *, oof: bool) -> None:
    """Validate and atomically write an out-of-fold (``oof=True``) or test prediction file."""
    check_prediction_frame(df, oof=oof, name=str(path))
    cols = (OOF_COLUMNS if oof else TEST_COLUMNS) + [c for c in OPTIONAL_COLUMNS if c in df.columns]
    write_parquet(df[cols].reset_index(drop=True), path)


def expected_gain(probs) -> "pd.Series | object":
    """E[gain] = p_E*1 + p_S*0.1 + p_C*0.01: the task-1 score implied by task-2 probabilities."""
    return sum(probs[f"p_{label}"] * gain for label, gain in GAINS.items())
