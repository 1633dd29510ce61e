"""The fine-tuning ablation (the source's Tables 5 and 6, on the bundled sample): one k-fold run
per variant, metrics as mean ± std over folds.

    python -m finetune.ablation [--run ablation] [--folds 3] [--set finetune.key=value ...]
                                [--only baseline,ema] [--pretrain-dir runs/<run>/pretrain]

Variants: baseline (multi-task, no tricks), +EMA, +FGM, +R-Drop, +mixup, the full recipe (all
four), the full recipe with confident learning, three single-task models instead of one
multi-task model, and the baseline on the pre-trained backbone (when a checkpoint exists).
Every fold is checkpointed, so a rerun only trains what is missing. Writes
``runs/<run>/finetune_ablation.md|.csv``; each variant's predictions go to ``oof/abl_<name>``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import pandas as pd

from esci.artifacts import RunPaths, write_csv, write_text
from esci.config import load_config
from esci.leaderboard import evaluate_oof
from finetune.confident import label_issues, write_issues
from finetune.kfold import prepare_inputs, run_kfold
from finetune.stage import describe, write_model

COLUMNS = {"task1_ndcg": "task1 nDCG", "task1_ndcg_informative": "task1 nDCG (informative)",
           "task2_micro_f1": "task2 micro-F1", "task2_macro_f1": "task2 macro-F1",
           "task3_micro_f1": "task3 micro-F1"}
OFF = dict(ema=False, fgm=False, rdrop=False, mixup=False, cleanlab=False, multitask=True)
FULL = dict(ema=True, fgm=True, rdrop=True, mixup=True)
VARIANTS = [  # name, label, overrides of the baseline
    ("baseline", "baseline (multi-task, no tricks)", {}),
    ("ema", "+EMA", dict(ema=True)),
    ("fgm", "+FGM", dict(fgm=True)),
    ("rdrop", "+R-Drop", dict(rdrop=True)),
    ("mixup", "+mixup", dict(mixup=True)),
    ("full", "full recipe (EMA+FGM+R-Drop+mixup)", FULL),
    ("full_cl", "full recipe + confident learning", dict(FULL, cleanlab=True)),
    ("single_task", "baseline, three single-task models", dict(multitask=False)),
    ("pretrained", "baseline on the pre-trained backbone", dict(backbone="PRETRAIN")),
]

REFERENCES = [("lexical_lgbm", "reference: lexical LightGBM baseline"),
              ("prior", "reference: class prior (predicts E)")]


def fold_stats(oof: pd.DataFrame) -> dict:
    _, folds = evaluate_oof(oof, n_boot=1)  # only the per-fold scores are used
    out = {}
    for metric in COLUMNS:
        values = folds.loc[folds["metric"] == metric, "value"]
        out[metric], out[f"{metric}_std"] = float(values.mean()), float(values.std(ddof=1))
    return out


def train_seconds(model_dir: Path) -> float:
    # CPU seconds, not wall: the machine is shared, and load inflates wall time unevenly.
    return float(sum(json.loads(p.read_text()).get("cpu_seconds", 0.0) for p in model_dir.rglob("progress.json")))


def run_variant(name: str, overrides: dict, base, cfg, paths: RunPaths, prepared: dict, pretrain_dir: str | None):
    if overrides.get("backbone") == "PRETRAIN":
        if pretrain_dir is None or not (Path(pretrain_dir) / "config.json").is_file():
            return {"note": f"not run: no pre-training checkpoint at {pretrain_dir}"}
        overrides = dict(overrides, backbone=str(pretrain_dir))
    fcfg = dataclasses.replace(base, **overrides, model_name=f"abl_{name}")
    key = (fcfg.backbone, fcfg.max_length)
    if key not in prepared:
        prepared[key] = prepare_inputs(fcfg, cfg.data, paths.root, pd.read_parquet(paths.examples),
                                       pd.read_parquet(paths.root / "products.parquet"),
                                       pd.read_parquet(paths.folds))
    prep = prepared[key]
    model_dir = paths.root / "finetune" / "ablation" / name
    note = ""
    if fcfg.cleanlab:
        # Confident learning starts from the full recipe's out-of-fold probabilities.
        first = dataclasses.replace(fcfg, cleanlab=False)
        oof, _ = run_kfold(prep, first, paths.root / "finetune" / "ablation" / "full")
        issues = label_issues(oof, fcfg.cleanlab_fraction, fcfg.cleanlab_filter_by)
        write_issues(issues, len(oof), paths.root / "cleanlab", fcfg.model_name, "ablation")
        oof, test = run_kfold(prep, fcfg, model_dir, exclude_ids=issues["example_id"])
        note = f"{len(issues)} of {len(oof)} rows removed ({len(issues) / len(oof):.1%})"
    else:
        oof, test = run_kfold(prep, fcfg, model_dir)
    write_model(paths, fcfg.model_name, oof, test, describe(fcfg))
    return {**fold_stats(oof), "note": note, "train_s": train_seconds(model_dir)}


def to_markdown(rows: list[dict], setting: str) -> str:
    head = "| variant | " + " | ".join(COLUMNS.values()) + " | train CPU-s | note |\n"
    head += "|---|" + "---|" * (len(COLUMNS) + 2) + "\n"
    lines = []
    for r in rows:
        if "task2_micro_f1" not in r:
            lines.append(f"| {r['label']} | " + " | ".join("–" for _ in COLUMNS) + f" | – | {r['note']} |")
            continue
        cells = [f"{r[m]:.4f} ± {r[m + '_std']:.4f}" for m in COLUMNS]
        seconds = f"{r['train_s']:.0f}" if r.get("train_s") is not None else "–"
        lines.append(f"| {r['label']} | " + " | ".join(cells) + f" | {seconds} | {r['note']} |")
    return head + "\n".join(lines) + f"\n\n{setting}\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Fine-tuning ablation on the sample (Tables 5-6 style).")
    ap.add_argument("--config", default="configs/default.yaml")
    ap.add_argument("--run", default="ablation")
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--only", default="", help="comma-separated variant names (default: all)")
    ap.add_argument("--pretrain-dir", default=None, help="pre-training checkpoint (default: runs/<run>/pretrain)")
    args = ap.parse_args(argv)
    cfg = load_config(args.config, [f"run={args.run}", f"cv.n_folds={args.folds}", *args.overrides])
    paths = RunPaths(cfg.runs_dir, cfg.run)
    if not paths.folds.is_file():
        from esci.pipeline import prepare
        prepare(cfg, paths)
    base = dataclasses.replace(cfg.finetune, **OFF)
    pretrain_dir = args.pretrain_dir or str(paths.root / "pretrain")
    only = [s for s in args.only.split(",") if s]
    prepared, rows = {}, []
    for name, label, overrides in VARIANTS:
        if only and name not in only:
            continue
        print(f"[ablation] {name}", flush=True)
        rows.append({"variant": name, "label": label,
                     **run_variant(name, overrides, base, cfg, paths, prepared, pretrain_dir)})
    for ref, label in REFERENCES:  # the same folds' non-neural models, when the run has them
        if paths.oof(ref).is_file():
            rows.append({"variant": ref, "label": label, **fold_stats(pd.read_parquet(paths.oof(ref))),
                         "note": "reference, not a fine-tuned variant", "train_s": None})
    n_train = int((pd.read_parquet(paths.folds)["fold"] >= 0).sum())
    setting = (f"Setting: {n_train} labelled pairs of the bundled real sample, {args.folds}-fold query-grouped CV; "
               f"backbone {base.backbone}, max_length {base.max_length}, {base.epochs} epoch(s), batch "
               f"{base.batch_size}, lr {base.learning_rate:g} (head {base.head_learning_rate:g}); model selection "
               f"on an inner {base.valid_fraction:.0%} query-grouped validation slice of each training fold. "
               "Values: mean ± std over folds of each fold's metrics. train CPU-s: CPU seconds of training summed over folds (load-independent, unlike wall time).")
    table = to_markdown(rows, setting)
    write_text(table, paths.root / "finetune_ablation.md")
    write_csv(pd.DataFrame(rows), paths.root / "finetune_ablation.csv")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
