"""Ablation of the pre-training tasks, in the spirit of the source's Table 3.

    python -m pretrain.ablation --config configs/pretrain_cpu.yaml [--run NAME] [--set k=v] [--force]

Rows: no pre-training, MLM only, +Product2Query, +Product2Brand/Color, +Contrastive (tasks
accumulate top to bottom, each at the preset's weight), and MLM without the vocabulary
extension. Columns: held-out MLM loss, then task-2 micro-F1 and task-1 nDCG (informative
queries) of a FROZEN-ENCODER PROBE (pretrain/probe.py: logistic regression on pooled query and
product embeddings), mean ± std over the folds. The probe stands in for the fine-tuning stage
until that exists. Writes ``runs/<run>/ablation.{csv,md}``, ``ablation_locales.{csv,md}``
(task-2 micro-F1 per locale with and without the extension, [UNK] rates) and
``ablation_folds.csv``. A variant whose pre-trained output and probe scores already exist for
the same config is not recomputed (``--force`` recomputes).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import pandas as pd
import torch
import yaml
from transformers import AutoModel, AutoTokenizer

from data.esci_io import EsciDataError, load_esci
from data.folds import make_folds
from esci import backbones
from esci.artifacts import write_csv, write_parquet, write_text
from esci.config import fingerprint, load_config
from pretrain.config import TASK_WEIGHTS, PretrainConfig, checked
from pretrain.corpus import load_corpus
from pretrain.probe import fold_scores, locale_scores, probe_encoder
from pretrain.train import train

MLM = ("mlm_weight",)
P2Q = MLM + ("p2q_weight",)
BRAND_COLOR = P2Q + ("brand_weight", "color_weight")
CONTRASTIVE = BRAND_COLOR + ("infonce_weight", "simcse_weight")
# (slug, row label, tasks switched on, vocabulary extension)
VARIANTS = [  # in run order, cheapest first
    ("mlm", "MLM", MLM, True),
    ("mlm_no_ext", "MLM, no vocab extension", MLM, False),
    ("p2q", "+Product2Query", P2Q, True),
    ("brand_color", "+Product2Brand/Color", BRAND_COLOR, True),
    ("contrastive", "+Contrastive (InfoNCE + SimCSE)", CONTRASTIVE, True),
]
HEAD_ONLY = ("mlm_head_only", "MLM head only, encoder frozen", MLM, True)
NO_PRETRAIN = ("none", "no pre-training")


def variant_config(cfg: PretrainConfig, base: str, slug: str, tasks: tuple, extend: bool,
                   freeze_encoder: bool = False) -> PretrainConfig:
    weights = {w: (getattr(cfg, w) or 1.0) if w in tasks else 0.0 for w in TASK_WEIGHTS}
    return dataclasses.replace(cfg, run=f"{base}_{slug}", extend_vocab=extend,
                               freeze_encoder=freeze_encoder, **weights)


def probe_inputs(cfg: PretrainConfig) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Examples and folds: the pipeline run's files when ``probe_run`` is set, else made here."""
    if cfg.probe_run:
        run = Path(cfg.probe_run)
        for name in ("examples.parquet", "folds.parquet"):
            if not (run / name).is_file():
                raise FileNotFoundError(f"ablation: probe_run {run} has no {name} (run the pipeline first)")
        return (pd.read_parquet(run / "examples.parquet"), pd.read_parquet(run / "folds.parquet"),
                f"{run}/folds.parquet")
    data = load_esci(cfg.data_dir, cfg.subset)
    return (data.examples, make_folds(data.examples, cfg.probe_folds, 42),
            f"{cfg.probe_folds} folds made by data.folds.make_folds(seed=42)")


def _training_keys(cfg_dict: dict) -> dict:
    """The keys a pre-trained encoder depends on (not the probe's, not checkpoint frequency)."""
    return {k: v for k, v in cfg_dict.items() if not k.startswith("probe_") and k != "save_every"}


def _trained(cfg: PretrainConfig) -> bool:
    """The variant's output exists and was trained with the same (non-probe) config."""
    saved = Path(cfg.runs_dir) / cfg.run / "pretrain" / "pretrain_config.yaml"
    return (saved.is_file() and (saved.parent / "metrics.json").is_file()
            and _training_keys(yaml.safe_load(saved.read_text()))
            == _training_keys(dataclasses.asdict(checked(cfg))))


def _probe_file(probe_dir: Path, name: str, cfg: PretrainConfig) -> Path:
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k.startswith("probe_")}
    return probe_dir / f"{name}_{fingerprint(settings, cfg.pooling, cfg.seed)}_oof.parquet"


def run_variant(cfg: PretrainConfig, examples, folds, product_text, probe_dir: Path,
                force: bool) -> tuple[dict, pd.DataFrame]:
    probe_file = _probe_file(probe_dir, cfg.run, cfg)
    out = Path(cfg.runs_dir) / cfg.run / "pretrain"
    if force or not _trained(cfg):
        train(cfg)
    if force or not probe_file.is_file():
        encoder = AutoModel.from_pretrained(out)
        tokenizer = AutoTokenizer.from_pretrained(out)
        _, oof = probe_encoder(encoder, tokenizer, examples, product_text, folds,
                               cfg.probe_max_length, cfg.probe_c, cfg.pooling, cfg.seed)
        write_parquet(oof, probe_file)
    metrics = json.loads((out / "metrics.json").read_text())
    return metrics, pd.read_parquet(probe_file)


def no_pretrain_probe(cfg: PretrainConfig, corpus, examples, folds, product_text, probe_dir: Path,
                      force: bool) -> pd.DataFrame:
    """The backbone as shipped, with its own tokenizer (scratch: random weights)."""
    probe_file = _probe_file(probe_dir, cfg.run, cfg)
    if force or not probe_file.is_file():
        texts = corpus.train["text"].str.slice(0, cfg.tokenizer_text_chars or None).tolist()
        tokenizer = backbones.load_tokenizer(cfg.backbone, texts, cfg.scratch_vocab_size)
        encoder = backbones.load_encoder(cfg.backbone, tokenizer, AutoModel, cfg.seed)
        _, oof = probe_encoder(encoder, tokenizer, examples, product_text, folds,
                               cfg.probe_max_length, cfg.probe_c, cfg.pooling, cfg.seed)
        write_parquet(oof, probe_file)
    return pd.read_parquet(probe_file)


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub markdown table (no tabulate dependency); floats with 4 decimals."""
    def cell(v):
        return f"{v:.4f}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def _mean_std(values: pd.Series) -> str:
    return f"{values.mean():.4f} ± {values.std(ddof=1):.4f}"


def summarise(rows: list[dict], fold_frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    table = []
    for row in rows:
        scores = fold_frames[row["variant"]]
        table.append({**row,
                      "task2_micro_f1": _mean_std(scores["task2_micro_f1"]),
                      "task1_ndcg_informative": _mean_std(scores["task1_ndcg_informative"]),
                      "task1_ndcg_informative_cosine": _mean_std(scores["task1_ndcg_informative_cosine"]),
                      "folds": len(scores)})
    return pd.DataFrame(table)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Ablation of the pre-training tasks (frozen-encoder probe).")
    ap.add_argument("--config", default="configs/pretrain_cpu.yaml")
    ap.add_argument("--run", default="pretrain_ablation", help="tables go to runs/<run>/")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--force", action="store_true", help="retrain and reprobe every variant")
    args = ap.parse_args(argv)
    try:
        cfg = checked(load_config(args.config, args.overrides, cls=PretrainConfig))
        if cfg.torch_threads:  # the probes too, not only the training runs
            torch.set_num_threads(cfg.torch_threads)
        run_ablation(cfg, args.run, args.force)
    except (EsciDataError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def run_ablation(cfg: PretrainConfig, base: str, force: bool = False) -> Path:
    """Train and probe every variant, cheapest first; the tables are rewritten after each one,
    so an interrupted ablation leaves the rows it finished (and a rerun reuses them)."""
    out_dir = Path(cfg.runs_dir) / base
    probe_dir = out_dir / "probe"
    examples, folds, folds_source = probe_inputs(cfg)
    corpus = load_corpus(cfg)
    product_text = corpus.frame.set_index(["product_id", "product_locale"])["text"]
    done = Ablation(cfg, base, folds_source)

    print("[ablation] no pre-training: probing the backbone as shipped", flush=True)
    none_cfg = dataclasses.replace(cfg, run=f"{base}_{NO_PRETRAIN[0]}")
    done.oofs["none"] = no_pretrain_probe(none_cfg, corpus, examples, folds, product_text,
                                          probe_dir, force)
    # its held-out MLM loss: the shipped encoder frozen, with an MLM head fitted for the same
    # steps (the step-0 loss of a checkpoint without an MLM head is a random head's)
    slug, label, tasks, extend = HEAD_ONLY
    print(f"[ablation] {label}: fitting the MLM head on the frozen backbone", flush=True)
    head_cfg = variant_config(cfg, base, slug, tasks, extend, freeze_encoder=True)
    if force or not _trained(head_cfg):
        train(head_cfg)
    head = json.loads((Path(cfg.runs_dir) / head_cfg.run / "pretrain" / "metrics.json").read_text())
    done.add("none", NO_PRETRAIN[1], "-", False, head, done.oofs["none"])
    done.write(out_dir)

    for slug, label, tasks, extend in VARIANTS:
        vcfg = variant_config(cfg, base, slug, tasks, extend)
        print(f"[ablation] {label}: pre-training {vcfg.run}", flush=True)
        metrics, oof = run_variant(vcfg, examples, folds, product_text, probe_dir, force)
        done.add(slug, label, "+".join(t.removesuffix("_weight") for t in tasks), extend, metrics, oof)
        done.write(out_dir)
    print(done.note())
    print(markdown_table(done.table()))
    print()
    print(markdown_table(done.locales()))
    return out_dir


ROW_ORDER = ["none", "mlm", "p2q", "brand_color", "contrastive", "mlm_no_ext"]


class Ablation:
    """The rows finished so far, and the tables made from them."""

    def __init__(self, cfg: PretrainConfig, base: str, folds_source: str):
        self.cfg, self.base, self.folds_source = cfg, base, folds_source
        self.rows: dict[str, dict] = {}
        self.fold_frames: dict[str, pd.DataFrame] = {}
        self.oofs: dict[str, pd.DataFrame] = {}
        self.metrics: dict[str, dict] = {}

    def add(self, slug: str, label: str, tasks: str, extend: bool, metrics: dict, oof) -> None:
        self.metrics[slug], self.oofs[slug] = metrics, oof
        self.fold_frames[label] = fold_scores(oof)
        loss_key = "heldout_mlm_loss_after"
        self.rows[slug] = {"variant": label, "tasks": tasks, "vocab_extension": extend,
                           "heldout_mlm_loss": round(metrics[loss_key], 4),
                           "pretrain_seconds": metrics["seconds"]}

    def table(self) -> pd.DataFrame:
        rows = [self.rows[s] for s in ROW_ORDER if s in self.rows]
        return summarise(rows, self.fold_frames)

    def locales(self) -> pd.DataFrame:
        return locale_table(self.oofs, Path(self.cfg.runs_dir) / f"{self.base}_mlm_head_only"
                            / "pretrain" / "vocab_coverage.csv")

    def note(self) -> str:
        cfg = self.cfg
        step0 = self.metrics.get("mlm", {}).get("heldout_mlm_loss_before", float("nan"))
        return (f"Backbone `{cfg.backbone}`, {cfg.max_steps} steps x {cfg.batch_size} products, "
                f"max_length {cfg.max_length}, seed {cfg.seed}. Task columns: FROZEN-ENCODER PROBE "
                "(logistic regression on [q, p, |q-p|, q*p, cos] of mean-pooled embeddings, "
                f"max_length {cfg.probe_max_length}, C={cfg.probe_c}), not fine-tuning; "
                "task1_ndcg_informative_cosine ranks by cos(q, p) with no classifier; "
                f"mean ± std over {self.folds_source}. Held-out MLM loss: mean cross-entropy per "
                "masked token on the held-out products, same masks for every row ('no "
                "pre-training' = the shipped encoder frozen, MLM head fitted for the same steps; "
                f"step 0 of the MLM run, random MLM head: {step0:.4f}); comparable only between "
                "rows with the same tokenizer, so not for the 'no vocab extension' row.\n")

    def write(self, out_dir: Path) -> None:
        table = self.table()
        per_fold = pd.concat([f.assign(variant=v) for v, f in self.fold_frames.items()],
                             ignore_index=True)
        write_csv(table, out_dir / "ablation.csv")
        write_csv(per_fold, out_dir / "ablation_folds.csv")
        write_text(self.note() + "\n" + markdown_table(table) + "\n", out_dir / "ablation.md")
        locales = self.locales()
        write_csv(locales, out_dir / "ablation_locales.csv")
        write_text(markdown_table(locales) + "\n", out_dir / "ablation_locales.md")


def locale_table(oofs: dict[str, pd.DataFrame], coverage_csv: Path) -> pd.DataFrame:
    """[UNK] rates before/after the extension, and task-2 micro-F1 per locale of the rows done."""
    columns = {"none": "task2_f1_no_pretraining", "mlm_no_ext": "task2_f1_mlm_no_extension",
               "mlm": "task2_f1_mlm_with_extension"}
    f1 = pd.DataFrame({col: locale_scores(oofs[slug]) for slug, col in columns.items() if slug in oofs})
    f1.index.name = "locale"
    f1 = f1.reset_index()
    any_oof = next(iter(oofs.values()))
    counts = any_oof["product_locale"].value_counts()
    counts["all"] = counts.sum()
    f1["probe_rows"] = f1["locale"].map(counts).astype(int)
    if not coverage_csv.is_file():
        return f1.round(4)
    coverage = pd.read_csv(coverage_csv)
    cols = ["locale", "unk_token_rate_before", "unk_token_rate_after", "unk_char_rate_before",
            "unk_char_rate_after"]
    return coverage[cols].merge(f1, on="locale", how="left").round(4)


if __name__ == "__main__":
    sys.exit(main())
