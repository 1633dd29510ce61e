"""Pipeline stage: stack every base model of the run into `stack` and `mean-blend`.

Reads ``oof/*.parquet`` and ``test/*.parquet`` of every base model, ``examples.parquet``,
``products.parquet``, ``folds.parquet`` and ``features/lexical.parquet``. Writes, per model, the
out-of-fold and test files in the artifact schema with a ``.meta.json``, and under
``runs/<run>/ensemble/``: the feature-importance table and chart, the task-1 ordering comparison,
the paired stack-versus-best-base comparison, the task-3 threshold and the resolved config.
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from esci import plots
from ensemble.compare import compare_pair, compare_to_best, task1_candidates
from ensemble.config import EnsembleConfig
from ensemble.features import FeatureTable, blend, build_features, label_codes, model_outputs, \
    query_codes
from ensemble.inputs import BaseModels, Split, is_own_output, load_base_models, load_text_features
from ensemble.stacker import TASKS, nested_cv
from esci.artifacts import PROB_COLUMNS, RunPaths, expected_gain, write_csv, write_json, \
    write_predictions, write_text
from esci.config import PipelineConfig
from esci.leaderboard import crossfit_task3
from esci.metrics import gains_of, ndcg, tune_threshold

STACK, STACK_LEAK, MEAN_BLEND = "stack", "stack-leak", "mean-blend"
STACK_NO_QU = "stack-no-qu"  # the stack without the query-understanding feature group, for comparison
QU_PREFIX = "qu_"


@contextlib.contextmanager
def timed(phase: str):
    """Print the phase's wall time (benchmarks/stack_scale.py reads these lines)."""
    start = time.perf_counter()
    yield
    print(f"[ensemble] time {phase} {time.perf_counter() - start:.1f}s", flush=True)


def _select(split: Split, models: list[str]) -> Split:
    return Split(split.keys, {m: split.outputs[m] for m in models})


def _side_rows(paths: RunPaths) -> tuple[pd.DataFrame, pd.DataFrame]:
    examples = pd.read_parquet(paths.examples)
    products = pd.read_parquet(paths.root / "products.parquet")
    return examples, products


def _number_rows(examples: pd.DataFrame, products: pd.DataFrame) -> pd.DataFrame:
    """example_id, query, product_title: the text the number/unit features compare."""
    key = ["product_id", "product_locale"]
    rows = examples[["example_id", "query"] + key].merge(
        products[key + ["product_title"]].drop_duplicates(key), on=key, how="left")
    return rows[["example_id", "query", "product_title"]].fillna({"product_title": ""})


def _frame(keys: pd.DataFrame, probs: np.ndarray, score: np.ndarray,
           p_sub: np.ndarray | None) -> pd.DataFrame:
    out = keys.copy()
    probs = probs / probs.sum(axis=1, keepdims=True)  # softmax rounding: sum exactly 1 to 1e-12
    out[PROB_COLUMNS] = probs
    out["score"] = score
    if p_sub is not None:
        out["p_sub"] = p_sub
    return out


def stack_predictions(base: BaseModels, models: list[str], text, rows, cfg: EnsembleConfig,
                      leak: bool) -> tuple[dict, FeatureTable]:
    """Nested-CV out-of-fold and fold-averaged test predictions of the three task stackers."""
    oof_split, test_split = _select(base.oof, models), _select(base.test, models)
    with timed("features"):
        oof_table = build_features(oof_split, text, rows, query_stats=cfg.query_stats, leak=leak)
        test_table = build_features(test_split, text, rows, query_stats=cfg.query_stats, leak=leak)
        names = oof_table.names
        x, x_test = oof_table.matrix(), test_table.matrix() if len(test_split.keys) else None
        del test_table
    print(f"[ensemble] {x.shape[0]} out-of-fold rows x {x.shape[1]} features", flush=True)
    keys = base.oof.keys
    label = label_codes(keys["esci_label"])
    fold = keys["fold"].to_numpy()
    query = query_codes(keys["query_id"])
    results = {}
    for task in TASKS:
        with timed(f"fit_{task}"):
            results[task] = nested_cv(task, x, label, fold, query, cfg, names, x_test)
    return results, oof_table


def _importance(results: dict, table: FeatureTable, model: str) -> pd.DataFrame:
    parts = []
    for task, res in results.items():
        imp = res.importance.groupby("feature", sort=False)[["gain", "split"]].mean().reset_index()
        total = imp["gain"].sum()
        imp["gain_share"] = imp["gain"] / total if total > 0 else 0.0
        parts.append(imp.assign(model=model, task=task))
    out = pd.concat(parts, ignore_index=True)
    out["group"] = out["feature"].map(table.group)
    out = out.sort_values(["model", "task", "gain"], ascending=[True, True, False], kind="mergesort")
    return out[["model", "task", "feature", "group", "gain", "gain_share", "split"]]


def _predictions(base: BaseModels, results: dict, task1: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    oof_eg = expected_gain(pd.DataFrame(results["task2"].oof, columns=PROB_COLUMNS)).to_numpy()
    oof_score = results["task1"].oof if task1 == "ranker" else oof_eg
    oof = _frame(base.oof.keys, results["task2"].oof, oof_score, results["task3"].oof)
    if results["task2"].test is None:
        return oof, _frame(base.test.keys, np.zeros((0, 4)), np.zeros(0), np.zeros(0))
    test_eg = expected_gain(pd.DataFrame(results["task2"].test, columns=PROB_COLUMNS)).to_numpy()
    test_score = results["task1"].test if task1 == "ranker" else test_eg
    return oof, _frame(base.test.keys, results["task2"].test, test_score, results["task3"].test)


def mean_blend(base: BaseModels, models: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mean of the probabilities, rank-mean of the scores, mean P(substitute)."""
    has_sub = any("p_sub" in base.oof.outputs[m].columns for m in models)
    out = []
    for split in (base.oof, base.test):
        split = _select(split, models)
        mixed = blend(model_outputs(split, query_codes(split.keys["query_id"])))
        out.append(_frame(split.keys, mixed[PROB_COLUMNS].to_numpy(), mixed["rank_mean"].to_numpy(),
                          mixed["p_sub"].to_numpy() if has_sub else None))
    return out[0], out[1]


def _write_model(paths: RunPaths, name: str, oof: pd.DataFrame, test: pd.DataFrame,
                 description: str, leak: bool) -> list[Path]:
    write_predictions(test, paths.test(name), oof=False)
    write_json({"description": description, "leak": leak}, paths.oof_dir / f"{name}.meta.json")
    write_predictions(oof, paths.oof(name), oof=True)  # last: its presence marks a finished model
    return [paths.test(name), paths.oof_dir / f"{name}.meta.json", paths.oof(name)]


def _remove_stale(paths: RunPaths, keep: set[str]) -> None:
    """Own models from an earlier config (e.g. stack-leak after the flag went off)."""
    for model in paths.models():
        if is_own_output(model) and model not in keep:
            for f in (paths.oof(model), paths.test(model), paths.oof_dir / f"{model}.meta.json"):
                f.unlink(missing_ok=True)


def _base_frame(base: BaseModels, model: str) -> pd.DataFrame:
    return base.oof.keys.join(base.oof.outputs[model].drop(columns="eg"))


def _task1_table(base: BaseModels, models: list[str], results: dict, blend_oof: pd.DataFrame,
                 cfg: EnsembleConfig) -> pd.DataFrame:
    scores = {}
    for m in models:
        scores[f"{m}: expected gain"] = base.oof.outputs[m]["eg"].to_numpy()
        scores[f"{m}: score"] = base.oof.outputs[m]["score"].to_numpy()
    scores["stack: LGBMRanker"] = results["task1"].oof
    scores["stack: expected gain"] = expected_gain(
        pd.DataFrame(results["task2"].oof, columns=PROB_COLUMNS)).to_numpy()
    scores["mean-blend: rank-mean"] = blend_oof["score"].to_numpy()
    # Reference: the base model whose expected gain orders best (ties: informative queries).
    keys = base.oof.keys
    gains = gains_of(keys["esci_label"])
    best = max(models, key=lambda m: tuple(
        ndcg(keys["query_id"], gains, base.oof.outputs[m]["eg"], informative_only=inf)
        for inf in (False, True)))
    return task1_candidates(keys, scores, f"{best}: expected gain", cfg.bootstrap, cfg.seed)


def upstream_features(cfg: PipelineConfig) -> tuple[str, ...]:
    """Feature files of enabled upstream stages that the stack joins to the lexical features."""
    return ("query_understanding",) if cfg.query_understanding.enabled else ()


def run(cfg: PipelineConfig, paths: RunPaths) -> list[Path]:
    ecfg: EnsembleConfig = cfg.ensemble
    if ecfg.task1 not in ("ranker", "expected_gain"):
        raise ValueError(f"config ensemble.task1: {ecfg.task1!r} is not ranker or expected_gain")
    with timed("read_base_models"):
        base = load_base_models(paths, include_leak=ecfg.leak_features, exclude=ecfg.exclude)
    clean = [m for m in base.names if not base.leak[m]]
    if not clean:
        raise ValueError(f"ensemble: every base model under {paths.oof_dir} is labelled leak")
    print(f"[ensemble] base models: {base.names}")
    text = rows = None
    with timed("read_inputs"):
        if ecfg.text_features:
            examples, products = _side_rows(paths)
            text = load_text_features(paths, examples, products, upstream_features(cfg))
            rows = _number_rows(examples, products)

    variants = [(STACK, clean, False, text)]
    if ecfg.leak_features:
        variants.append((STACK_LEAK, base.names, True, text))
    qu_columns = [c for c in text.columns if c.startswith(QU_PREFIX)] if text is not None else []
    if qu_columns:
        variants.append((STACK_NO_QU, clean, False, text.drop(columns=qu_columns)))
    outputs, importance, stacked = [], [], {}
    for name, models, leak, features in variants:
        results, table = stack_predictions(base, models, features, rows, ecfg, leak)
        desc = (f"LightGBM stack over {models} (task1 {ecfg.task1}, task2 multiclass, task3 "
                f"binary p_sub){'; with leak features' if leak else ''}"
                f"{'; without the query-understanding features' if name == STACK_NO_QU else ''}")
        with timed(f"write_{name}"):
            oof, test = _predictions(base, results, ecfg.task1)
            outputs += _write_model(paths, name, oof, test, desc,
                                    leak or any(base.leak[m] for m in models))
        importance.append(_importance(results, table, name))
        stacked[name] = (oof, results)
    with timed("mean_blend"):
        blend_oof, blend_test = mean_blend(base, clean)
        outputs += _write_model(paths, MEAN_BLEND, blend_oof, blend_test,
                                f"mean of probabilities, rank-mean of scores over {clean}", False)
    _remove_stale(paths, {v[0] for v in variants} | {MEAN_BLEND})
    with timed("diagnostics"):
        outputs += _diagnostics(paths, ecfg, base, clean, stacked, blend_oof,
                                pd.concat(importance, ignore_index=True))
    return outputs


def _diagnostics(paths: RunPaths, ecfg: EnsembleConfig, base: BaseModels, clean: list[str],
                 stacked: dict, blend_oof: pd.DataFrame, imp: pd.DataFrame) -> list[Path]:
    """Importance table and chart, task-1 orderings, paired gaps to the best base model,
    the task-3 threshold and the resolved config, under runs/<run>/ensemble/."""
    out_dir = paths.root / "ensemble"
    files = {name: out_dir / name for name in (
        "feature_importance.csv", "feature_importance.png", "task1_comparison.csv",
        "stack_vs_best.csv", "task3_threshold.json", "config.yaml")}
    write_csv(imp, files["feature_importance.csv"])
    shown = imp[imp["model"] == STACK].assign(importance=lambda t: t["gain_share"])
    plots.feature_importance(shown, files["feature_importance.png"], top=ecfg.importance_top)
    stack_oof, stack_results = stacked[STACK]
    task1 = _task1_table(base, clean, stack_results, blend_oof, ecfg)
    write_csv(task1, files["task1_comparison.csv"])
    candidates = {name: oof for name, (oof, _) in stacked.items()} | {MEAN_BLEND: blend_oof}
    gaps = compare_to_best(candidates, {m: _base_frame(base, m) for m in clean},
                           ecfg.bootstrap, ecfg.seed)
    write_csv(gaps, files["stack_vs_best.csv"])
    if STACK_LEAK in stacked:  # what the leak features add, on the same resamples
        files["leak_vs_clean.csv"] = out_dir / "leak_vs_clean.csv"
        leak_gap = compare_pair(stacked[STACK_LEAK][0], stack_oof, ecfg.bootstrap, ecfg.seed)
        write_csv(leak_gap.assign(a=STACK_LEAK, b=STACK), files["leak_vs_clean.csv"])
        print("[ensemble] stack-leak minus stack (leak features, labelled leak):")
        print(leak_gap.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    else:
        (out_dir / "leak_vs_clean.csv").unlink(missing_ok=True)  # from an earlier leak run
    if STACK_NO_QU in stacked:  # what the query-understanding features add, on the same resamples
        files["qu_vs_no_qu.csv"] = out_dir / "qu_vs_no_qu.csv"
        qu_gap = compare_pair(stack_oof, stacked[STACK_NO_QU][0], ecfg.bootstrap, ecfg.seed)
        write_csv(qu_gap.assign(a=STACK, b=STACK_NO_QU), files["qu_vs_no_qu.csv"])
        print("[ensemble] stack minus stack-no-qu (what the query-understanding features add):")
        print(qu_gap.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    else:
        (out_dir / "qu_vs_no_qu.csv").unlink(missing_ok=True)
    truth = stack_oof["esci_label"] == "S"
    write_json({"threshold": tune_threshold(truth, stack_oof["p_sub"]),
                "fraction_predicted_substitute_crossfit": float(crossfit_task3(stack_oof).mean()),
                "note": "tuned on out-of-fold rows only; the leaderboard cross-fits it per fold"},
               files["task3_threshold.json"])
    write_text(yaml.safe_dump(dataclasses.asdict(ecfg), sort_keys=False), files["config.yaml"])
    _report(task1, gaps)
    return list(files.values())


def _report(task1: pd.DataFrame, gaps: pd.DataFrame) -> None:
    cols = ["ordering", "task1_ndcg", "task1_ndcg_diff", "task1_ndcg_verdict",
            "task1_ndcg_informative", "task1_ndcg_informative_diff", "task1_ndcg_informative_verdict"]
    print(f"[ensemble] task-1 orderings vs {task1['reference'].iloc[0]}:")
    print(task1[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print("[ensemble] paired gaps to the best base model:")
    print(gaps[["model", "metric", "value", "best_base", "diff", "diff_lo", "diff_hi", "verdict"]]
          .to_string(index=False, float_format=lambda v: f"{v:.4f}"))
