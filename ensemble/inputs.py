"""Read a run's base models and side tables, aligned row for row.

Every base model's out-of-fold file must cover the same example_ids with the same folds as
``folds.parquet`` and every test file the same test rows; a mismatch stops the stage with one
line naming the file, before anything is written.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from esci.artifacts import KEY_COLUMNS, PROB_COLUMNS, RunPaths, expected_gain


def is_own_output(model: str) -> bool:
    """The stage's own models, never read back as base models."""
    return model.startswith("stack") or model == "mean-blend"


@dataclass
class Split:
    """One split (out-of-fold or test): the key columns and each model's outputs, same row order."""
    keys: pd.DataFrame  # KEY_COLUMNS (+ fold, esci_label for out-of-fold)
    outputs: dict[str, pd.DataFrame]  # model -> p_E, p_S, p_C, p_I, score, eg[, p_sub]


@dataclass
class BaseModels:
    names: list[str]
    leak: dict[str, bool]
    oof: Split
    test: Split


def _meta(paths: RunPaths, model: str) -> dict:
    meta = paths.oof_dir / f"{model}.meta.json"
    return json.loads(meta.read_text()) if meta.is_file() else {}


def _outputs(df: pd.DataFrame) -> pd.DataFrame:
    cols = PROB_COLUMNS + ["score"]
    if "p_sub" in df.columns and df["p_sub"].notna().all():
        cols = cols + ["p_sub"]
    out = df[cols].astype("float64").copy()
    out["eg"] = expected_gain(out).to_numpy()
    return out.reset_index(drop=True)


def _align(df: pd.DataFrame, ref_ids: pd.Index, path: Path) -> pd.DataFrame:
    if df["example_id"].duplicated().any():
        raise ValueError(f"ensemble: {path} has duplicate example_id rows")
    ids = pd.Index(df["example_id"].astype(str))
    missing = ref_ids.difference(ids)
    extra = ids.difference(ref_ids)
    if len(missing) or len(extra):
        raise ValueError(f"ensemble: {path} covers different rows than the other base models: "
                         f"{len(missing)} missing (e.g. {list(missing[:3])}), {len(extra)} extra "
                         f"(e.g. {list(extra[:3])})")
    return df.set_index(ids).loc[ref_ids].reset_index(drop=True)


def _read(path: Path, columns_needed: list[str]) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"ensemble: base model file {path} does not exist")
    df = pd.read_parquet(path)
    missing = [c for c in columns_needed if c not in df.columns]
    if missing:
        raise ValueError(f"ensemble: {path} lacks columns {missing}")
    return df


def load_base_models(paths: RunPaths, include_leak: bool = False,
                     exclude: tuple[str, ...] | list[str] = ()) -> BaseModels:
    """Base models of the run: own outputs and ``exclude`` skipped, leak-labelled ones only if
    ``include_leak``."""
    names = [m for m in paths.models() if not is_own_output(m) and m not in exclude]
    leak = {m: bool(_meta(paths, m).get("leak", False)) for m in names}
    names = [m for m in names if include_leak or not leak[m]]
    if not names:
        raise ValueError(f"ensemble: no base model out-of-fold files under {paths.oof_dir}")

    folds = pd.read_parquet(paths.folds)[["example_id", "fold"]]
    fold_of = pd.Series(folds["fold"].to_numpy(), index=folds["example_id"].astype(str))
    ref_oof = ref_test = None
    oof_out, test_out = {}, {}
    for m in names:
        oof = _read(paths.oof(m), KEY_COLUMNS + ["fold", "esci_label"] + PROB_COLUMNS + ["score"])
        test = _read(paths.test(m), KEY_COLUMNS + PROB_COLUMNS + ["score"])
        if ref_oof is None:
            ref_oof = oof[KEY_COLUMNS + ["fold", "esci_label"]].astype({"example_id": str})
            ref_oof = ref_oof.sort_values("example_id", kind="mergesort").reset_index(drop=True)
            ref_test = test[KEY_COLUMNS].astype({"example_id": str})
            ref_test = ref_test.sort_values("example_id", kind="mergesort").reset_index(drop=True)
            expected = fold_of.reindex(ref_oof["example_id"]).to_numpy()
            bad = np.flatnonzero(expected != ref_oof["fold"].to_numpy())
            if len(bad):
                raise ValueError(f"ensemble: {paths.oof(m)} column 'fold' disagrees with "
                                 f"{paths.folds} on {len(bad)} rows (e.g. rows {bad[:5].tolist()})")
        oof = _align(oof, pd.Index(ref_oof["example_id"]), paths.oof(m))
        bad = np.flatnonzero(oof["fold"].to_numpy() != ref_oof["fold"].to_numpy())
        if len(bad):
            raise ValueError(f"ensemble: {paths.oof(m)} column 'fold' disagrees with the other "
                             f"base models on {len(bad)} rows (e.g. rows {bad[:5].tolist()})")
        oof_out[m] = _outputs(oof)
        test_out[m] = _outputs(_align(test, pd.Index(ref_test["example_id"]), paths.test(m)))
    return BaseModels(names, leak, Split(ref_oof, oof_out), Split(ref_test, test_out))


def load_text_features(paths: RunPaths, examples: pd.DataFrame, products: pd.DataFrame,
                       extra: tuple[str, ...] = ()) -> pd.DataFrame:
    """``features/lexical.parquet`` (built by the baseline; rebuilt in memory if absent) joined with
    ``features/<name>.parquet`` for each name in ``extra`` (upstream stages that are switched on,
    such as the out-of-fold ``query_understanding``: a disabled stage's stale file is not read).
    Feature files hold one row per example_id."""
    file = paths.features_dir / "lexical.parquet"
    if file.is_file():
        text = pd.read_parquet(file)
    else:
        print(f"[ensemble] {file} missing (baseline disabled?): building lexical features in memory")
        from baseline.lexical_features import build_lexical_features
        text = build_lexical_features(examples, products)
    text = text.assign(example_id=text["example_id"].astype(str))
    for name in extra:
        extra_file = paths.features_dir / f"{name}.parquet"
        if not extra_file.is_file():
            raise FileNotFoundError(f"ensemble: {extra_file} missing (stage {name} enabled but not run?)")
        more = pd.read_parquet(extra_file)
        more = more.assign(example_id=more["example_id"].astype(str))
        clash = sorted(set(more.columns) & set(text.columns) - {"example_id"})
        if clash:
            raise ValueError(f"ensemble: {extra_file} repeats feature columns {clash[:5]} of another feature file")
        text = text.merge(more, on="example_id", how="left", validate="one_to_one")
    return text
