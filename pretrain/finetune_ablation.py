"""The pre-training ablation with REAL fine-tuning columns (the source's Table 3 shape): every
checkpoint of ``python -m pretrain.ablation`` (and the shipped encoder, "no pre-training") is
fine-tuned by the fine-tuning stage's k-fold trainer with one fixed config.

    python -m pretrain.finetune_ablation [--base pretrain_ablation] [--folds 3] [--only mlm,p2q]
                                         [--set finetune.key=value ...]

Each row is ``finetune.ablation``'s baseline variant (multi-task, no tricks) on that backbone, in
its own run ``runs/ft_<base>_<slug>/`` (same data, seed and folds), so rows can be trained by
several processes (``--only``) and a final call without ``--only`` only reads them back. Held-out
MLM loss comes from each checkpoint's ``metrics.json``. Writes ``runs/<base>/ablation_finetuned.md|.csv``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from esci.artifacts import write_csv, write_text
from finetune import ablation as ft
from pretrain.ablation import NO_PRETRAIN, VARIANTS

# The fine-tuning config of every row: the fine-tuning ablation's setting.
DEFAULT_SETTINGS = ["finetune.max_length=32", "finetune.learning_rate=0.0001", "finetune.eval_every=25",
                    "finetune.num_threads=1"]
METRICS = ["task2_micro_f1", "task2_macro_f1", "task1_ndcg_informative", "task3_micro_f1"]


def _row(runs: Path, base: str, slug: str, label: str, folds: int, settings: list[str]) -> dict:
    run = f"ft_{base}_{slug}"
    args = ["--run", run, "--folds", str(folds), *sum((["--set", s] for s in settings), [])]
    if slug == NO_PRETRAIN[0]:
        args += ["--only", "baseline"]
        heldout = None
    else:
        ckpt = runs / f"{base}_{slug}" / "pretrain"
        if not (ckpt / "config.json").is_file():
            return {"variant": slug, "label": label, "note": f"no checkpoint at {ckpt}: run pretrain.ablation first"}
        args += ["--only", "pretrained", "--pretrain-dir", str(ckpt)]
        heldout = json.loads((ckpt / "metrics.json").read_text()).get("heldout_mlm_loss_after")
    ft.main(args)
    table = pd.read_csv(runs / run / "finetune_ablation.csv")
    scores = table[table["variant"].isin(["baseline", "pretrained"])].iloc[0]
    return {"variant": slug, "label": label, "heldout_mlm_loss": heldout,
            **{m: scores[m] for m in METRICS}, **{f"{m}_std": scores[f"{m}_std"] for m in METRICS},
            "train_cpu_s": scores["train_s"], "note": ""}


def to_markdown(rows: list[dict]) -> str:
    head = ("| variant | held-out MLM loss | " + " | ".join(METRICS) + " | fine-tune CPU-s |\n"
            "|---|---|" + "---|" * len(METRICS) + "---|\n")
    lines = []
    for r in rows:
        if "task2_micro_f1" not in r:
            lines.append(f"| {r['label']} | – | " + " | ".join("–" for _ in METRICS) + f" | {r['note']} |")
            continue
        loss = f"{r['heldout_mlm_loss']:.4f}" if r["heldout_mlm_loss"] is not None else "–"
        cells = [f"{r[m]:.4f} ± {r[m + '_std']:.4f}" for m in METRICS]
        lines.append(f"| {r['label']} | {loss} | " + " | ".join(cells) + f" | {r['train_cpu_s']:.0f} |")
    return head + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Pre-training ablation, fine-tuned (Table 3 shape).")
    ap.add_argument("--base", default="pretrain_ablation", help="the pretrain.ablation run name")
    ap.add_argument("--runs-dir", default="runs")
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--only", default="", help="comma-separated slugs (none, mlm, mlm_no_ext, p2q, ...)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    runs = Path(args.runs_dir)
    settings = [f"runs_dir={runs}", *DEFAULT_SETTINGS, *args.overrides]
    only = {s for s in args.only.split(",") if s}
    variants = [NO_PRETRAIN] + [(slug, label) for slug, label, _, _ in VARIANTS]
    rows = [_row(runs, args.base, slug, label, args.folds, settings)
            for slug, label in variants if not only or slug in only]
    table = to_markdown(rows) + (
        f"\nEach row: the fine-tuning stage's baseline (multi-task cross-encoder, no tricks, "
        f"{args.folds}-fold query-grouped CV on the bundled real sample; {', '.join(settings[1:])}) on "
        "that backbone. Values: mean ± std over folds. Held-out MLM loss: the checkpoint's, comparable "
        "only between rows with the same tokenizer (not for 'no vocab extension').\n")
    if not only:
        write_text(table, runs / args.base / "ablation_finetuned.md")
        write_csv(pd.DataFrame(rows), runs / args.base / "ablation_finetuned.csv")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
