"""Pipeline stage: lexical features, then the per-fold LightGBM baseline."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from baseline.lexical_features import build_lexical_features
from baseline.lgbm_baseline import class_prior_predictions, train_baseline
from esci.artifacts import RunPaths, write_json, write_parquet, write_predictions
from esci.config import PipelineConfig

MODEL = "lexical_lgbm"
PRIOR = "prior"


def run(cfg: PipelineConfig, paths: RunPaths) -> list[Path]:
    examples = pd.read_parquet(paths.root / "examples.parquet")
    products = pd.read_parquet(paths.root / "products.parquet")
    folds = pd.read_parquet(paths.folds)
    feature_file = paths.features_dir / "lexical.parquet"
    features = build_lexical_features(examples, products)
    write_parquet(features, feature_file)
    oof, test = train_baseline(features, examples, folds, cfg.baseline)
    write_predictions(test, paths.test(MODEL), oof=False)
    write_json({"description": f"lexical features + LightGBM (task1: {cfg.baseline.task1})",
                "leak": False}, paths.oof_dir / f"{MODEL}.meta.json")
    write_predictions(oof, paths.oof(MODEL), oof=True)
    outputs = [feature_file, paths.test(MODEL), paths.oof(MODEL)]
    if cfg.baseline.prior_model:
        oof, test = class_prior_predictions(examples, folds)
        write_predictions(test, paths.test(PRIOR), oof=False)
        write_json({"description": "class priors of the training folds; constant score",
                    "leak": False}, paths.oof_dir / f"{PRIOR}.meta.json")
        write_predictions(oof, paths.oof(PRIOR), oof=True)
        outputs += [paths.test(PRIOR), paths.oof(PRIOR)]
    return outputs
