"""Query-grouped, label-stratified k-fold assignment, deterministic by seed."""
from __future__ import annotations

import re
import unicodedata

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from esci.artifacts import TEST_FOLD

_SPACE = re.compile(r"\s+")


def normalize_query(q: str) -> str:
    """NFKC, lower case, collapsed whitespace: 'Apple  Watch' and 'apple watch' share a fold."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", str(q)).lower()).strip()


def make_folds(examples: pd.DataFrame, n_folds: int = 5, seed: int = 42) -> pd.DataFrame:
    """Columns ``example_id, query_id, query_norm, fold``; official test rows get fold -1.

    Rows are sorted by (query_norm, example_id) first, so the folds do not depend on file order.
    """
    df = examples[["example_id", "query_id", "query", "esci_label", "split"]].copy()
    df["query_norm"] = df["query"].map(normalize_query)
    df = df.sort_values(["query_norm", "example_id"], kind="mergesort").reset_index(drop=True)
    df["fold"] = TEST_FOLD
    train = df.index[df["split"] != "test"]
    groups = df.loc[train, "query_norm"]
    if groups.nunique() < n_folds:
        raise ValueError(f"folds: {groups.nunique()} distinct training queries, fewer than "
                         f"cv.n_folds={n_folds}")
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    fold = np.full(len(train), TEST_FOLD)
    for k, (_, held) in enumerate(splitter.split(np.zeros(len(train)), df.loc[train, "esci_label"],
                                                 groups)):
        fold[held] = k
    df.loc[train, "fold"] = fold
    return df[["example_id", "query_id", "query_norm", "fold"]]
