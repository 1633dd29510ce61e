"""Pipeline stage: k-fold fine-tuning of the cross-encoder, then (optionally) confident learning.

Writes ``oof/<model>.parquet``, ``test/<model>.parquet`` and ``oof/<model>.meta.json``; with
``finetune.cleanlab`` also ``cleanlab/<model>_issues.csv`` and the retrained ``<model>_cl``.
Training state lives under ``finetune/<model>/`` (resolved config, fold checkpoints, predictions).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import yaml

from esci.artifacts import RunPaths, write_json, write_predictions, write_text
from finetune.confident import label_issues, write_issues
from finetune.inputs import text_settings
from finetune.kfold import prepare_inputs, run_kfold
from finetune.train import process_state


def describe(cfg) -> str:
    tricks = [name for name in ("ema", "fgm", "rdrop", "mixup") if getattr(cfg, name)]
    heads = "+".join(cfg.tasks) + (" multi-task" if cfg.multitask else " single-task models")
    return (f"cross-encoder ({cfg.backbone}, {cfg.pooling} pooling, max_length {cfg.max_length}, "
            f"{cfg.epochs} epoch(s)); heads {heads}; tricks: {', '.join(tricks) or 'none'}")


def write_model(paths: RunPaths, model: str, oof: pd.DataFrame, test: pd.DataFrame, description: str) -> list[Path]:
    """The model's prediction files; under ``accelerate launch`` every process holds the gathered
    predictions and only the main process writes them."""
    if not process_state().is_main_process:
        return [paths.test(model), paths.oof_dir / f"{model}.meta.json", paths.oof(model)]
    write_predictions(test, paths.test(model), oof=False)
    meta = paths.oof_dir / f"{model}.meta.json"
    write_json({"description": description, "leak": False}, meta)
    write_predictions(oof, paths.oof(model), oof=True)  # last: the leaderboard lists models by this file
    return [paths.test(model), meta, paths.oof(model)]


def run(cfg, paths: RunPaths) -> list[Path]:
    fcfg = cfg.finetune
    model_dir = paths.root / "finetune" / fcfg.model_name
    resolved = {"finetune": dataclasses.asdict(fcfg), "text": text_settings(fcfg, cfg.data).__dict__}
    main = process_state().is_main_process
    if main:
        write_text(yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True), model_dir / "config.yaml")
    prep = prepare_inputs(fcfg, cfg.data, paths.root, pd.read_parquet(paths.examples),
                          pd.read_parquet(paths.root / "products.parquet"), pd.read_parquet(paths.folds))
    oof, test = run_kfold(prep, fcfg, model_dir / "folds")
    outputs = [model_dir / "config.yaml"] + write_model(paths, fcfg.model_name, oof, test, describe(fcfg))
    if fcfg.cleanlab:
        issues = label_issues(oof, fcfg.cleanlab_fraction, fcfg.cleanlab_filter_by)
        how = (f"lowest label quality, fraction {fcfg.cleanlab_fraction}" if fcfg.cleanlab_fraction
               else f"cleanlab.filter.find_label_issues(filter_by={fcfg.cleanlab_filter_by!r})")
        if main:
            outputs += write_issues(issues, len(oof), paths.root / "cleanlab", fcfg.model_name, how)
        print(f"[finetune] cleanlab flagged {len(issues)} of {len(oof)} training rows; retraining without them")
        oof_cl, test_cl = run_kfold(prep, fcfg, model_dir / "cleanlab", exclude_ids=issues["example_id"])
        outputs += write_model(paths, f"{fcfg.model_name}_cl", oof_cl, test_cl,
                               describe(fcfg) + f"; trained without {len(issues)} cleanlab-flagged rows")
    return outputs
