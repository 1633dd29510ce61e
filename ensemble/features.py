"""The stacker's feature matrix: base-model outputs, their pairwise differences and blends,
per-query statistics of each, multi-granular text features and (behind a flag) leak features.

All features are label-free functions of one split's rows, so the out-of-fold matrix and the
test matrix are built the same way and no label can reach a feature. Queries are the unit of the
per-query statistics; the out-of-fold and test splits are built separately, so a statistic never
mixes the two.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from data.text_tokens import numbers_with_units
from ensemble.inputs import Split
from esci.artifacts import GAINS, LABELS, PROB_COLUMNS

QUERY_STATS = ("qmean", "qmax", "qmin", "qstd", "qrank", "qdmax", "qdmean")
PAIR_OUTPUTS = PROB_COLUMNS + ["eg", "score_rank"]  # raw scores of two models share no scale
_BARE_NUMBER = re.compile(r"^[\d.]+")


def safe_name(model: str) -> str:
    """LightGBM rejects some characters in feature names; model names may contain them."""
    return re.sub(r"[^0-9A-Za-z_]", "_", model)


@dataclass
class FeatureTable:
    """Named float32 columns collected group by group, stacked once at the end."""
    n_rows: int
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    group: dict[str, str] = field(default_factory=dict)

    def add(self, group: str, name: str, values) -> None:
        values = np.asarray(values, dtype=np.float32)
        if values.shape != (self.n_rows,):
            raise ValueError(f"feature {name}: shape {values.shape}, expected ({self.n_rows},)")
        if name in self.columns:
            raise ValueError(f"feature {name} defined twice")
        self.columns[name] = values
        self.group[name] = group

    @property
    def names(self) -> list[str]:
        return list(self.columns)

    def matrix(self) -> np.ndarray:
        out = np.empty((self.n_rows, len(self.columns)), dtype=np.float32, order="F")
        for j, values in enumerate(self.columns.values()):
            out[:, j] = values
        return out


def query_codes(query_id: pd.Series) -> np.ndarray:
    return pd.factorize(query_id.astype(str), sort=False)[0]


def within_query_rank_pct(codes: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Rank in (0, 1] within the query, 1 = highest value; ties share their average rank."""
    return pd.Series(values).groupby(codes, sort=False).rank(pct=True, method="average").to_numpy()


def model_outputs(split: Split, codes: np.ndarray) -> dict[str, pd.DataFrame]:
    """Each model's outputs plus ``score_rank``, the scale-free within-query rank of its score."""
    out = {}
    for model, frame in split.outputs.items():
        frame = frame.copy()
        frame["score_rank"] = within_query_rank_pct(codes, frame["score"].to_numpy())
        out[model] = frame
    return out


def blend(outputs: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The mean of the models' probabilities and the rank-mean of their scores."""
    frames = list(outputs.values())
    out = pd.DataFrame({c: np.mean([f[c].to_numpy() for f in frames], axis=0)
                        for c in PROB_COLUMNS})
    out["eg"] = sum(out[f"p_{label}"] * gain for label, gain in GAINS.items())
    out["rank_mean"] = np.mean([f["score_rank"].to_numpy() for f in frames], axis=0)
    subs = [f["p_sub"].to_numpy() if "p_sub" in f.columns else f["p_S"].to_numpy() for f in frames]
    out["p_sub"] = np.mean(subs, axis=0)
    return out


def add_query_stats(table: FeatureTable, codes: np.ndarray, outputs: pd.DataFrame,
                    prefix: str) -> None:
    """For every column: query mean/max/min/std, rank in query (1 = top), gaps to max and mean."""
    grouped = outputs.groupby(codes, sort=False)
    mean, top = grouped.transform("mean"), grouped.transform("max")
    low = grouped.transform("min")
    # Population std from E[x^2] - E[x]^2: singletons get 0 instead of NaN, no Python lambda.
    sq = (outputs ** 2).groupby(codes, sort=False).transform("mean")
    std = np.sqrt(np.clip(sq.to_numpy() - mean.to_numpy() ** 2, 0.0, None))
    rank = grouped.rank(ascending=False, method="average")
    for j, col in enumerate(outputs.columns):
        name = f"{prefix}__{col}"
        values = outputs[col].to_numpy()
        table.add("query_stat", f"{name}__qmean", mean[col])
        table.add("query_stat", f"{name}__qmax", top[col])
        table.add("query_stat", f"{name}__qmin", low[col])
        table.add("query_stat", f"{name}__qstd", std[:, j])
        table.add("query_stat", f"{name}__qrank", rank[col])
        table.add("query_stat", f"{name}__qdmax", values - top[col].to_numpy())
        table.add("query_stat", f"{name}__qdmean", values - mean[col].to_numpy())


def number_features(queries: pd.Series, titles: pd.Series) -> dict[str, np.ndarray]:
    """Numbers with units in the query against the title: exact, bare-number, unit conflicts.

    NaN where the query has no number, so "no number asked" is not "no number matched".
    """
    q_codes, q_uniques = pd.factorize(queries.astype(str), sort=False)
    t_codes, t_uniques = pd.factorize(titles.astype(str), sort=False)
    q_nums = [numbers_with_units(q) for q in q_uniques]
    n_q = np.array([len(s) for s in q_nums])[q_codes].astype(float)
    exact = np.full(len(queries), np.nan)
    bare = np.full(len(queries), np.nan)
    conflict = np.full(len(queries), np.nan)
    t_nums: dict[int, set] = {}
    for i in np.flatnonzero(n_q > 0):
        q = q_nums[q_codes[i]]
        t = t_codes[i]
        if t not in t_nums:
            t_nums[t] = numbers_with_units(t_uniques[t])
        hit = len(q & t_nums[t])
        q_bare = {_BARE_NUMBER.match(x).group() for x in q}
        t_bare = {_BARE_NUMBER.match(x).group() for x in t_nums[t]}
        hit_bare = len(q_bare & t_bare)
        exact[i] = hit / len(q)
        bare[i] = hit_bare / len(q_bare)
        conflict[i] = max(hit_bare - hit, 0)
    return {"query_numbers": n_q, "num_match_frac": exact, "num_bare_match_frac": bare,
            "num_unit_conflict": conflict}


def leak_features(product_id: pd.Series) -> dict[str, np.ndarray]:
    """Product-ID prefix codes (ASIN prefixes track listing age) and 'starts with a digit'
    (an ISBN: a book). Leak: they describe the catalogue, not the query-product match."""
    pid = product_id.astype(str).str.upper()
    codes, uniques = pd.factorize(pid, sort=False)

    def prefix_code(n: int) -> np.ndarray:
        values = [int(p[:n], 36) if p[:n].isalnum() else -1 for p in uniques]
        return np.asarray(values, dtype=float)[codes]
    digit = np.array([p[:1].isdigit() for p in uniques], dtype=float)[codes]
    return {"leak_pid_prefix2": prefix_code(2), "leak_pid_prefix3": prefix_code(3),
            "leak_pid_prefix4": prefix_code(4), "leak_pid_digit": digit}


def build_features(split: Split, text: pd.DataFrame | None, rows: pd.DataFrame | None, *,
                   query_stats: bool = True, leak: bool = False) -> FeatureTable:
    """Feature table for one split.

    split: keys + model outputs, row aligned. text: lexical features, one row per example_id.
    rows: ``example_id, query, product_title`` for number matching (None: skip those).
    """
    keys = split.keys
    codes = query_codes(keys["query_id"])
    table = FeatureTable(len(keys))
    outputs = model_outputs(split, codes)
    models = list(outputs)

    for m, frame in outputs.items():
        for col in frame.columns:
            table.add("model", f"{safe_name(m)}__{col}", frame[col])
    for a, b in itertools.combinations(models, 2):
        for col in PAIR_OUTPUTS:
            table.add("pairwise", f"diff__{safe_name(a)}__{safe_name(b)}__{col}",
                      outputs[a][col].to_numpy() - outputs[b][col].to_numpy())
    mixed = blend(outputs)
    for col in mixed.columns:
        table.add("blend", f"blend__{col}", mixed[col])

    if query_stats:
        table.add("query_stat", "query_n_products", np.bincount(codes)[codes])
        for m, frame in outputs.items():
            add_query_stats(table, codes, frame.drop(columns="score_rank"), safe_name(m))
        add_query_stats(table, codes, mixed[["eg", "rank_mean", "p_sub"]], "blend")

    if text is not None:
        ids = keys["example_id"].astype(str)
        lex = text.assign(example_id=text["example_id"].astype(str)).set_index("example_id")
        missing = ids[~ids.isin(lex.index)]
        if len(missing):
            raise ValueError(f"ensemble: text features lack {len(missing)} example_ids "
                             f"(e.g. {missing.head(3).tolist()})")
        lex = lex.loc[ids]
        for col in lex.columns:
            table.add("text", col, lex[col].to_numpy(dtype=float))
    if rows is not None:
        aligned = rows.assign(example_id=rows["example_id"].astype(str)).set_index(
            "example_id").loc[keys["example_id"].astype(str)]
        for name, values in number_features(aligned["query"], aligned["product_title"]).items():
            table.add("text", name, values)
    if leak:
        for name, values in leak_features(keys["product_id"]).items():
            table.add("leak", name, values)
    return table


def label_codes(labels: pd.Series) -> np.ndarray:
    """E, S, C, I -> 0..3 (the order of PROB_COLUMNS)."""
    codes = labels.map({label: i for i, label in enumerate(LABELS)})
    if codes.isna().any():
        bad = labels[codes.isna()].unique()[:5].tolist()
        raise ValueError(f"ensemble: esci_label has values outside {list(LABELS)}: {bad}")
    return codes.to_numpy(dtype=int)
