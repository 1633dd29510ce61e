"""The ``predict`` command: score new (query, product) pairs with a trained run's fold models.

    python -m finetune.score_pairs --run <run> --pairs pairs.csv --out scored.csv
    python -m finetune.score_pairs --run <run> --query "usb c cable" --locale us --out ranked.parquet

Each fold model scores every pair; the outputs are averaged over the folds (as the stage does for
the test rows). The fold models are the ``best-step<N>.pt`` weights the stage keeps under
``runs/<run>/finetune/<model>/folds/<member>/fold<k>/`` with ``finetune.keep_fold_models=true``.
Engines: ``onnx`` (default; ONNX Runtime fp32, agrees with PyTorch to 1e-4), ``onnx-int8``
(dynamic int8 quantisation: faster, slightly different), ``torch`` (``finetune.predict``). The
ONNX files are exported once per fold model and kept beside the fold models, under
``finetune/<model>/folds/onnx/`` (so a retrain, which clears ``folds/``, clears them too).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from tqdm.auto import tqdm

from esci.artifacts import TEST_FOLD, write_csv, write_parquet
from finetune.backbone import Backbone, build_encoder, id_vocabs, load_backbone
from finetune.batches import PairCollator, inference_batches
from finetune.config import FinetuneConfig
from finetune.inputs import EncodedPairs, IdVocab, TextSettings, encode_pairs, pair_texts
from finetune.kfold import members, tokenizer_corpus
from finetune.model import CrossEncoder
from finetune.predict import prediction_columns, predict_outputs
from finetune.train import PREDICTIONS

ENGINES = ("onnx", "onnx-int8", "torch")
PAIR_COLUMNS = ["query", "product_id", "product_locale"]
PRODUCT_COLUMNS = ["product_id", "product_locale", "product_title"]
OPTIONAL_PRODUCT_COLUMNS = ["product_description", "product_bullet_point", "product_brand", "product_color"]
CHUNK_BATCHES = 8  # batches per progress-bar tick


class InputError(ValueError):
    """Bad input named in one line; the command prints it and writes nothing."""


@dataclass
class FoldModel:
    member: str
    tasks: list[str]
    fold: int
    weights: Path


@dataclass
class RunModels:
    """Everything needed to rebuild a run's fold models and encode new pairs like its own."""

    root: Path
    name: str
    cfg: FinetuneConfig
    ts: TextSettings
    backbone: Backbone
    vocabs: dict[str, IdVocab]
    tables: dict[str, torch.Tensor]
    folds: list[FoldModel]
    folds_dir: Path

    @property
    def id_sizes(self) -> dict[str, int]:
        return {name: len(v) for name, v in self.vocabs.items()}

    @property
    def onnx_dir(self) -> Path:
        return self.folds_dir / "onnx"


def _model_dirs(root: Path, name: str) -> tuple[Path, Path]:
    """(directory with config.yaml, directory with the fold models) of model ``name``."""
    if name.endswith("_cl") and (root / "finetune" / name.removesuffix("_cl") / "cleanlab").is_dir():
        base = root / "finetune" / name.removesuffix("_cl")
        return base, base / "cleanlab"
    return root / "finetune" / name, root / "finetune" / name / "folds"


def load_run(root: Path, name: str | None = None) -> RunModels:
    """The run's fine-tuning config, tokenizer, ID vocabularies and finished fold models."""
    root = Path(root)
    if not (root / "examples.parquet").is_file():
        raise InputError(f"run {root} has no examples.parquet (is the run name right?)")
    if name is None:
        run_cfg = yaml.safe_load((root / "config.yaml").read_text()) if (root / "config.yaml").is_file() else {}
        name = (run_cfg.get("finetune") or {}).get("model_name") or FinetuneConfig().model_name
    base, folds_dir = _model_dirs(root, name)
    if not (base / "config.yaml").is_file():
        raise InputError(f"run {root} has no fine-tuned model {name!r} ({base / 'config.yaml'} is missing; "
                         "run the stage with finetune.enabled=true)")
    saved = yaml.safe_load((base / "config.yaml").read_text())
    try:
        cfg, ts = FinetuneConfig(**saved["finetune"]), TextSettings(**saved["text"])
    except (TypeError, KeyError) as err:
        raise InputError(f"{base / 'config.yaml'} does not match this code's finetune config: {err}") from None
    fold_ids = sorted(int(k) for k in pd.read_parquet(root / "folds.parquet", columns=["fold"])["fold"].unique()
                      if k != TEST_FOLD)
    folds, missing = [], []
    for member, tasks in members(cfg):
        for k in fold_ids:
            fold_dir = folds_dir / member / f"fold{k}"
            kept = sorted(fold_dir.glob("best-step*.pt"))
            if (fold_dir / PREDICTIONS).is_file() and len(kept) == 1:
                folds.append(FoldModel(member, tasks, k, kept[0]))
            else:
                missing.append(f"{member}/fold{k}")
    if missing:
        raise InputError(f"run {root} model {name!r} has no kept fold model for {', '.join(missing)}: train it with "
                         f"finetune.keep_fold_models=true (remove {folds_dir} first: finished folds are not retrained)")
    texts = pair_texts(pd.read_parquet(root / "examples.parquet"), pd.read_parquet(root / "products.parquet"), ts)
    backbone = load_backbone(cfg.backbone, root, tokenizer_corpus(texts, cfg.max_length), cfg,
                             root / "finetune" / "cache")
    vocabs, tables = id_vocabs(texts, backbone, cfg.id_min_count)
    return RunModels(root, name, cfg, ts, backbone, vocabs, tables, folds, folds_dir)


def build_fold_model(run: RunModels, fold: FoldModel) -> CrossEncoder:
    model = CrossEncoder(build_encoder(run.backbone, run.cfg, run.cfg.seed), run.cfg, fold.tasks,
                         run.id_sizes, run.tables)
    try:
        model.load_state_dict(torch.load(fold.weights, weights_only=True))
    except RuntimeError as err:
        first = str(err).strip().splitlines()[1:2] or [str(err)]
        raise InputError(f"{fold.weights} does not fit the model rebuilt from the run's config and data "
                         f"(were examples/products changed after training?): {first[0].strip()}") from None
    return model.eval()


def onnx_file(run: RunModels, fold: FoldModel, model: CrossEncoder, pairs: EncodedPairs, int8: bool) -> Path:
    """The fold model's ONNX file, exported (and quantised) on first use."""
    from finetune.onnx_export import export_onnx, quantize_int8
    stem = f"{fold.member}-fold{fold.fold}-{fold.weights.stem}"
    fp32 = run.onnx_dir / f"{stem}.onnx"
    if not fp32.is_file() or fp32.stat().st_mtime < fold.weights.stat().st_mtime:
        example = PairCollator(pairs, run.backbone.pad_id)(np.arange(min(2, len(pairs))))
        export_onnx(model, example, fp32)
    if not int8:
        return fp32
    q = run.onnx_dir / f"{stem}.int8.onnx"
    if not q.is_file() or q.stat().st_mtime < fp32.stat().st_mtime:
        quantize_int8(fp32, q)
    return q


def encode_new_pairs(run: RunModels, pairs: pd.DataFrame, products: pd.DataFrame) -> EncodedPairs:
    frame = pairs[PAIR_COLUMNS].copy()
    frame.insert(0, "example_id", np.arange(len(frame)).astype(str))
    texts = pair_texts(frame, products, run.ts)
    return encode_pairs(texts, run.backbone.tokenizer, run.ts, run.cfg, run.vocabs)


def score_encoded(run: RunModels, pairs: EncodedPairs, engine: str = "onnx", batch_size: int | None = None,
                  threads: int = 1, progress: bool = True) -> pd.DataFrame:
    """p_E..p_I, score (and p_sub with a task-3 head) of every pair, averaged over the fold models."""
    from finetune.onnx_runtime import ort_outputs, session
    if engine not in ENGINES:
        raise InputError(f"--engine {engine!r} is not one of {list(ENGINES)}")
    batch_size = batch_size or run.cfg.infer_batch_size
    rows = np.arange(len(pairs))
    # Sorted once here, chunked for the progress bar: the engines then cut the same batches.
    chunks = inference_batches(rows, pairs, batch_size * CHUNK_BATCHES, length_sorted=True)
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        bar = tqdm(total=len(run.folds) * len(chunks), desc=f"scoring ({engine})", unit="chunk", mininterval=1,
                   disable=not progress)
        for fold in run.folds:
            model = build_fold_model(run, fold)
            if engine == "torch":
                def infer(r):
                    return predict_outputs(model, pairs, r, run.backbone.pad_id, batch_size)
            else:
                sess = session(onnx_file(run, fold, model, pairs, engine == "onnx-int8"), threads)

                def infer(r):
                    return ort_outputs(sess, pairs, r, run.backbone.pad_id, batch_size)
            parts = []
            for chunk in chunks:
                parts.append(infer(chunk))
                bar.update(1)
            order = np.argsort(np.concatenate(chunks), kind="mergesort")
            for task in parts[0]:
                values = np.concatenate([p[task] for p in parts])[order]
                sums[task] = sums.get(task, 0) + values
                counts[task] = counts.get(task, 0) + 1
        bar.close()
    finally:
        torch.set_num_threads(torch_threads)
    return prediction_columns({task: sums[task] / counts[task] for task in sums})


# --- command line -------------------------------------------------------------------------------

def _read_table(path: Path, what: str) -> pd.DataFrame:
    if not path.is_file():
        raise InputError(f"{what} file {path} does not exist")
    if path.suffix == ".csv":
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    raise InputError(f"{what} file {path}: expected a .csv or .parquet file")


def _require(df: pd.DataFrame, columns: list[str], path) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputError(f"{path} lacks column(s) {missing} (has {list(df.columns)})")


def read_products(path: Path) -> pd.DataFrame:
    products = _read_table(path, "products")
    _require(products, PRODUCT_COLUMNS, path)
    for col in OPTIONAL_PRODUCT_COLUMNS:
        if col not in products:
            products[col] = None
    products["product_id"] = products["product_id"].astype(str)
    products["product_locale"] = products["product_locale"].astype(str)
    dup = products.duplicated(["product_id", "product_locale"])
    if dup.any():
        raise InputError(f"{path}: duplicate (product_id, product_locale) at rows {np.flatnonzero(dup)[:5].tolist()}")
    return products


def read_pairs(path: Path, products: pd.DataFrame, products_path) -> pd.DataFrame:
    pairs = _read_table(path, "pairs")
    _require(pairs, PAIR_COLUMNS, path)
    if pairs.empty:
        raise InputError(f"{path} has no rows")
    for col in PAIR_COLUMNS:
        bad = pairs[col].isna() | (pairs[col].astype(str).str.strip() == "")
        if bad.any():
            raise InputError(f"{path}: empty {col} at rows {np.flatnonzero(bad)[:5].tolist()}")
        pairs[col] = pairs[col].astype(str)
    known = pd.MultiIndex.from_frame(products[["product_id", "product_locale"]])
    unknown = ~pd.MultiIndex.from_frame(pairs[["product_id", "product_locale"]]).isin(known)
    if unknown.any():
        first = pairs[unknown].iloc[0]
        raise InputError(f"{path}: {int(unknown.sum())} pair(s) name products not in {products_path}, rows "
                         f"{np.flatnonzero(unknown)[:5].tolist()} (first: product_id {first['product_id']!r}, "
                         f"locale {first['product_locale']!r})")
    return pairs


def query_pairs(query: str, locale: str, products: pd.DataFrame, products_path) -> pd.DataFrame:
    if not query.strip():
        raise InputError("--query is empty")
    mine = products[products["product_locale"] == locale]
    if mine.empty:
        raise InputError(f"{products_path} has no products of locale {locale!r} "
                         f"(has {sorted(products['product_locale'].unique())})")
    return pd.DataFrame({"query": query, "product_id": mine["product_id"].to_numpy(),
                         "product_locale": locale, "product_title": mine["product_title"].to_numpy()})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Score (query, product) pairs with a trained run's fold models.")
    ap.add_argument("--run", required=True, help="run name (under --runs-dir) or a run directory")
    ap.add_argument("--runs-dir", default="runs")
    ap.add_argument("--model", default=None, help="fine-tuned model name (default: the run's finetune.model_name)")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--pairs", type=Path, help=".csv or .parquet with columns query, product_id, product_locale")
    src.add_argument("--query", help="one query, scored against every product of --locale")
    ap.add_argument("--locale", help="with --query: us | es | jp")
    ap.add_argument("--products", type=Path, default=None, help="products file (default: the run's products.parquet)")
    ap.add_argument("--engine", choices=ENGINES, default="onnx")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True, help=".csv or .parquet")
    args = ap.parse_args(argv)
    try:
        if args.out.suffix not in (".csv", ".parquet"):
            raise InputError(f"--out {args.out}: expected a .csv or .parquet file")
        if args.query is not None and not args.locale:
            raise InputError("--query needs --locale (us, es or jp)")
        root = Path(args.runs_dir) / args.run
        if not root.is_dir() and Path(args.run).is_dir():
            root = Path(args.run)
        if not (root / "examples.parquet").is_file():
            raise InputError(f"run {args.run!r} not found: no {root / 'examples.parquet'} (see --runs-dir)")
        products_path = args.products or root / "products.parquet"
        products = read_products(products_path)
        if args.pairs is not None:
            pairs = read_pairs(args.pairs, products, products_path)
        else:
            pairs = query_pairs(args.query, args.locale, products, products_path)
        run = load_run(root, args.model)
        encoded = encode_new_pairs(run, pairs, products)
        scored = pd.concat([pairs.reset_index(drop=True), score_encoded(run, encoded, args.engine, args.batch_size,
                                                                        args.threads)], axis=1)
        if args.query is not None:
            scored = scored.sort_values("score", ascending=False, kind="mergesort").reset_index(drop=True)
            scored.insert(0, "rank", np.arange(1, len(scored) + 1))
        (write_csv if args.out.suffix == ".csv" else write_parquet)(scored, args.out)
    except (InputError, FileNotFoundError) as err:
        print(f"score_pairs: error: {err}", file=sys.stderr)
        return 2
    print(f"[score_pairs] {len(scored)} pairs scored with {len(run.folds)} fold model(s) ({args.engine}) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
