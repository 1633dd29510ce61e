"""K-fold fine-tuning: one model per fold, out-of-fold predictions for the held-out fold,
test predictions averaged over the fold models, in the foundation's prediction schema.

``prepare_inputs`` does the per-run work once (texts, tokenizer, tokenised pairs); ``run_kfold``
trains a config on it, so the stage and every ablation variant share the same inputs.
Checkpoints live under ``<out_dir>/<member>/fold<k>/``; ``<out_dir>/fingerprint.json`` records what
they were trained from, and a different config or data wipes them rather than mixing.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import GroupShuffleSplit

from esci.artifacts import KEY_COLUMNS, LABELS, TEST_FOLD, write_json
from esci.config import fingerprint
from finetune.backbone import Backbone, build_encoder, id_vocabs, load_backbone
from finetune.batches import label_indices
from finetune.inputs import EncodedPairs, pair_texts, text_settings
from finetune.pairs_cache import cached_pairs
from finetune.model import CrossEncoder
from finetune.predict import prediction_columns
from finetune.train import FoldData, process_state, train_and_predict

# Config keys that change how a run is executed or reported, not what a fold model learns.
RUNTIME_KEYS = {"enabled", "model_name", "infer_batch_size", "checkpoint_every", "keep_fold_models",
                "num_threads", "cleanlab", "cleanlab_fraction", "cleanlab_filter_by"}


@dataclass
class Prepared:
    frame: pd.DataFrame  # examples + fold + query_norm; row i is row i of ``pairs``
    pairs: EncodedPairs
    backbone: Backbone
    tables: dict[str, torch.Tensor]
    labels: np.ndarray  # 0..3 for E/S/C/I, -1 for the official test rows


def prepare_inputs(cfg, data_cfg, run_root: Path, examples: pd.DataFrame, products: pd.DataFrame,
                   folds: pd.DataFrame) -> Prepared:
    frame = examples.merge(folds[["example_id", "fold", "query_norm"]], on="example_id", how="left",
                           validate="1:1")
    if frame["fold"].isna().any():
        rows = frame.index[frame["fold"].isna()][:5].tolist()
        raise ValueError(f"finetune: folds.parquet has no fold for examples at rows {rows}")
    frame["fold"] = frame["fold"].astype(int)
    ts = text_settings(cfg, data_cfg)
    texts = pair_texts(frame, products, ts)
    cache_dir = Path(run_root) / "finetune" / "cache"
    # Under accelerate launch the main process trains the tokenizer and fills the cache; the others read it.
    with process_state().main_process_first():
        backbone = load_backbone(cfg.backbone, run_root, tokenizer_corpus(texts, cfg.max_length), cfg, cache_dir)
        vocabs, tables = id_vocabs(texts, backbone, cfg.id_min_count)
        pairs = cached_pairs(cache_dir, texts, backbone.tokenizer, backbone.key, ts, cfg, vocabs)
    labels = label_indices(frame["esci_label"].where(frame["fold"] != TEST_FOLD))
    return Prepared(frame.reset_index(drop=True), pairs, backbone, tables, labels)


def tokenizer_corpus(texts: pd.DataFrame, max_length: int) -> list[str]:
    """What a scratch tokenizer learns from (and is keyed by): what the encoder will see; text
    past ~8 chars per token is cut anyway."""
    return (texts["query"].drop_duplicates().tolist()
            + texts["text"].drop_duplicates().str.slice(0, 8 * max_length).tolist())


def members(cfg) -> list[tuple[str, list[str]]]:
    """The models trained per fold: one multi-task model, or one model per task."""
    tasks = list(cfg.tasks)
    return [("multitask", tasks)] if cfg.multitask else [(t, [t]) for t in tasks]


def balanced_weights(labels: np.ndarray) -> np.ndarray:
    """n / (K * count(label)) over labelled rows; unlabelled rows weigh 0."""
    known = labels >= 0
    counts = np.bincount(labels[known], minlength=len(LABELS)).astype(float)
    per_label = known.sum() / (len(LABELS) * np.maximum(counts, 1))
    return np.where(known, per_label[np.clip(labels, 0, None)], 0.0)


def fold_rows(prep: Prepared, k: int, cfg, exclude: np.ndarray) -> tuple[np.ndarray, ...]:
    """(train, valid, predict) row indices of fold ``k``; ``exclude`` rows never train or validate."""
    fold = prep.frame["fold"].to_numpy()
    held = np.flatnonzero(fold == k)
    predict = np.concatenate([held, np.flatnonzero(fold == TEST_FOLD)])
    pool = np.flatnonzero((fold != k) & (fold != TEST_FOLD))
    if cfg.valid == "heldout":  # the competition habit: selection sees the rows it is scored on
        train, valid = pool, held
    else:
        split = GroupShuffleSplit(n_splits=1, test_size=cfg.valid_fraction, random_state=cfg.seed + k)
        tr, va = next(split.split(pool, groups=prep.frame["query_norm"].to_numpy()[pool]))
        train, valid = pool[tr], pool[va]
    return train[~exclude[train]], valid[~exclude[valid]], predict


def fold_assignment_digest(frame: pd.DataFrame) -> str:
    """Digest of the set of (example_id, fold) pairs (row order is covered by the labels' digest)."""
    return str(int(pd.util.hash_pandas_object(frame[["example_id", "fold"]], index=False).sum()))


def _reset_if_changed(out_dir: Path, fp: str) -> None:
    state = process_state()
    stamp = out_dir / "fingerprint.json"
    if state.is_main_process:
        if stamp.is_file() and json.loads(stamp.read_text())["fingerprint"] != fp:
            shutil.rmtree(out_dir)
        if not stamp.is_file():
            write_json({"fingerprint": fp}, stamp)
    state.wait_for_everyone()  # no process may look for finished folds in a directory being wiped


def run_kfold(prep: Prepared, cfg, out_dir: Path, labels: np.ndarray | None = None,
              exclude_ids=None, on_step: Callable[[int], None] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(out-of-fold frame, test frame) of ``cfg`` trained on ``labels`` (default: the real ones)
    without the rows whose example_id is in ``exclude_ids``."""
    labels = prep.labels if labels is None else labels
    exclude = prep.frame["example_id"].isin(set(() if exclude_ids is None else exclude_ids)).to_numpy()
    out_dir = Path(out_dir)
    learned = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in RUNTIME_KEYS}
    _reset_if_changed(out_dir, fingerprint(learned, prep.backbone.key,
                                           fold_assignment_digest(prep.frame),
                                           hashlib.sha256(labels.tobytes()).hexdigest(),
                                           hashlib.sha256(exclude.tobytes()).hexdigest()))
    weights = balanced_weights(labels) if cfg.sample_weight == "balanced" else None
    fold_ids = sorted(int(k) for k in prep.frame["fold"].unique() if k != TEST_FOLD)
    is_test = (prep.frame["fold"] == TEST_FOLD).to_numpy()
    combined: dict[str, np.ndarray] = {}
    for member, tasks in members(cfg):
        for k in fold_ids:
            train, valid, predict = fold_rows(prep, k, cfg, exclude)
            seed = cfg.seed + 1000 * k
            data = FoldData(prep.pairs, labels, prep.frame["query_id"].to_numpy(), train, valid, predict,
                            prep.backbone.pad_id, weights, seed)

            def build(tasks=tasks, seed=seed):
                return CrossEncoder(build_encoder(prep.backbone, cfg, seed), cfg, tasks,
                                    prep.pairs.id_sizes, prep.tables)
            outputs = train_and_predict(build, data, cfg, out_dir / member / f"fold{k}", on_step,
                                        desc=f"{member} fold {k}")
            for task, values in outputs.items():
                if task not in combined:
                    combined[task] = np.zeros((len(prep.frame),) + values.shape[1:])
                held = ~is_test[predict]
                combined[task][predict[held]] = values[held]
                combined[task][predict[~held]] += values[~held] / len(fold_ids)
    return assemble(prep.frame, combined, is_test)


def assemble(frame: pd.DataFrame, combined: dict[str, np.ndarray], is_test: np.ndarray):
    out = pd.concat([frame[KEY_COLUMNS + ["fold", "esci_label"]].reset_index(drop=True),
                     prediction_columns(combined)], axis=1)
    oof = out[~is_test].reset_index(drop=True)
    test = out[is_test].drop(columns=["fold", "esci_label"]).reset_index(drop=True)
    return oof, test
