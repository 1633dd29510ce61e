"""One QU variant on one outer fold: split, retrieve entities, train, predict, score.

Outer fold k holds out the run's fold k; the model trains on the other folds less a query-grouped
inner validation slice (``valid_fraction``), which picks the best epoch and tunes the gating threshold.
The entity index holds exactly the training queries of the model, so no held-out, validation or
test query ever lends its products. Official test queries (fold -1) are predicted by every fold
model and never trained on. Training is the fine-tuning loop's (``finetune.train.run_loop``) with
the QU recipe of ``train.py``; each fold model keeps its checkpoints, ``progress.json`` and
``predictions.npz`` in its own directory (``model_dir``), so a finished model is read back and a
killed one resumes.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupShuffleSplit

from esci.artifacts import TEST_FOLD
from esci.config import fingerprint
from finetune.backbone import build_encoder
from finetune.train import run_loop
from query_understanding.batches import Collator, labelled_rows
from query_understanding.entity_retrieval import EntityRetriever, entity_arrays, own_candidates
from query_understanding.evaluate import (brand_scores, decode_tags, gate_spans, intent_prf,
                                          multilabel_f1, ner_prf, tune_gate, tw_f1)
from query_understanding.inputs import QUData
from query_understanding.model import QUModel
from query_understanding.train import QURecipe, unpad
from query_understanding.weak_labels import IGNORE, TAGS

TASK_F1 = {"pt": "pt_micro_f1", "qc": "qc_micro_f1", "ner": "ner_f1", "tw": "tw_f1"}


@dataclass
class FoldResult:
    fold: int
    metrics: dict[str, float]
    rows: np.ndarray  # query rows predicted: held-out fold, then official test queries
    outputs: dict  # task -> predictions aligned with ``rows`` (train.predict's format)
    gate_tau: float | None


# Config keys that change how models are run or reported, not what a model learns.
RUNTIME_KEYS = {"enabled", "table_folds", "paper_ner_fraction", "table_entity_nums", "table_oversample",
                "num_threads"}


def learned_settings(cfg) -> dict:
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in RUNTIME_KEYS}


def model_dir(root: Path, data: QUData, cfg, fold: int) -> Path:
    """``root/<fingerprint>/fold<k>``: where the loop keeps one variant's fold model. The fingerprint
    covers what the model learns from (config, backbone, the run's queries, folds and weak labels),
    so a change trains afresh instead of reading stale predictions back."""
    labels = pd.util.hash_pandas_object(data.labels.astype(str), index=False).to_numpy()
    return Path(root) / fingerprint(learned_settings(cfg), data.backbone.key, labels.tobytes().hex()) / f"fold{fold}"


def split_rows(data: QUData, fold: int, valid_fraction: float, seed: int):
    """(train, valid, held-out, test) query rows for outer fold ``fold``."""
    folds = data.fold
    training = np.flatnonzero((folds != fold) & (folds != TEST_FOLD))
    heldout = np.flatnonzero(folds == fold)
    test = np.flatnonzero(folds == TEST_FOLD)
    if not len(heldout):
        raise ValueError(f"query understanding: fold {fold} has no queries in folds.parquet")
    if valid_fraction <= 0:
        return training, training[:0], heldout, test
    groups = data.labels["query_norm"].to_numpy()[training]
    split = GroupShuffleSplit(n_splits=1, test_size=valid_fraction, random_state=seed)
    fit, valid = next(split.split(training, groups=groups))
    return training[fit], training[valid], heldout, test


def entities_for(data: QUData, index_rows: np.ndarray, cfg) -> tuple[np.ndarray, np.ndarray]:
    """(entity product rows, gains), (n_queries, entity_num), for every query of the run."""
    lab = data.labels
    retriever = EntityRetriever(data.examples, lab["query_id"].to_numpy()[index_rows],
                                same_locale=cfg.same_locale, depth=cfg.retrieval_depth)
    found = retriever.retrieve(lab[["query_id", "query", "product_locale"]], cfg.entity_num,
                               own_candidates(data.examples))
    return entity_arrays(found, data.product_row, cfg.entity_num)


def training_rows_by_task(data: QUData, train_rows: np.ndarray, tasks: list[str], ner_fraction: float,
                          seed: int) -> dict[str, np.ndarray]:
    """Labelled training rows per task; NER keeps a seeded ``ner_fraction`` of its queries (a small
    NER set, as in the paper), drawn the same for every variant so they stay comparable."""
    out = {}
    for task in tasks:
        rows = np.intersect1d(labelled_rows(data.labels, task), train_rows)
        if task == "ner" and ner_fraction < 1.0:
            keep = np.random.default_rng(seed).random(len(data.labels)) < ner_fraction
            rows = rows[keep[rows]]
        out[task] = rows
    return out


def build_model_fn(data: QUData, cfg):
    tasks = list(cfg.tasks) + (["intent"] if cfg.joint_intent else [])

    def build() -> QUModel:
        encoder = build_encoder(data.backbone, cfg, cfg.seed)
        return QUModel(encoder, tasks, data.clusters.n_pt, data.clusters.n_qc, body=cfg.body,
                       entity_aware=cfg.entity_aware, entity_grad=cfg.entity_grad,
                       n_experts=cfg.n_experts, expert_dim=cfg.expert_dim,
                       ple_layers=cfg.ple_layers, dropout=cfg.head_dropout)
    return build


def score(data: QUData, rows: np.ndarray, outputs: dict, tasks: list[str], gate_tau: float | None = None,
          gate_scores=None) -> dict[str, float]:
    """Metrics of ``outputs`` (aligned with ``rows``) on the rows that carry each task's label."""
    lab = data.labels.iloc[rows].reset_index(drop=True)
    m: dict[str, float] = {}
    for task in ("pt", "qc"):
        if task in outputs:
            ok = lab[task].map(len).to_numpy() > 0
            m.update({f"{task}_{k}": v for k, v in multilabel_f1(lab[task][ok], outputs[task][ok]).items()})
            m[f"n_{task}"] = int(ok.sum())
    ok = np.flatnonzero(lab["has_es"].to_numpy())
    if "ner" in outputs:
        true = [lab["ner"][i] for i in ok]
        pred = decode_tags([outputs["ner"][i] for i in ok])
        m.update({f"ner_{k}": v for k, v in ner_prf(true, pred).items()})
        m.update({f"brand_{k}": v for k, v in ner_prf(true, pred, "BRAND").items()})
        if gate_tau is not None:
            gated = gate_spans(pred, [gate_scores[i] for i in ok], "BRAND", gate_tau)
            m.update({f"brand_gated_{k}": v for k, v in ner_prf(true, gated, "BRAND").items()})
            m["gate_tau"] = gate_tau
        m["n_ner"] = len(ok)
    if "intent" in outputs:
        m.update({f"intent_{k}": v for k, v in intent_prf(lab["intent"].to_numpy()[ok],
                                                          [outputs["intent"][i] for i in ok]).items()})
    if "tw" in outputs:
        m["tw_f1"] = tw_f1(lab["tw"], outputs["tw"])
        m["n_tw"] = int(sum(any(x >= 0 for x in w) for w in lab["tw"]))
    present = [t for t in tasks if TASK_F1[t] in m]
    if present:  # Table 3's ALL columns: macro = mean of task F1s, micro = weighted by evaluated queries
        f1s = np.array([m[TASK_F1[t]] for t in present])
        sizes = np.array([m[f"n_{t}"] for t in present], dtype=float)
        m["all_macro_f1"] = float(f1s.mean())
        m["all_micro_f1"] = float((f1s * sizes).sum() / sizes.sum())
    return m


def gate_score_lists(outputs: dict) -> list:
    """Per-token scores for gating BRAND spans: the intent head when there is one, else NER's own
    BRAND probability, so the NER-only model gets the same chance to tune a threshold."""
    return outputs["intent"] if "intent" in outputs else brand_scores(outputs["ner"])


def _take(outputs: dict, idx: np.ndarray) -> dict:
    return {t: (v[idx] if isinstance(v, np.ndarray) else [v[i] for i in idx]) for t, v in outputs.items()}


def prior_metrics(data: QUData, cfg, fold: int) -> dict[str, float]:
    """The trivial reference on outer fold ``fold``: the training folds' label frequencies as
    probabilities (the most frequent PT / QC cluster, TW 1 when most words weigh 1, no entity)."""
    train, _, heldout, _ = split_rows(data, fold, cfg.valid_fraction, cfg.seed)
    lab = data.labels
    outputs = {}
    for task, n in (("pt", data.clusters.n_pt), ("qc", data.clusters.n_qc)):
        counts = np.zeros(n)
        for clusters in lab[task].iloc[train]:
            counts[clusters] += 1
        outputs[task] = np.tile(counts / max(1, (lab[task].iloc[train].map(len) > 0).sum()), (len(heldout), 1))
    words = lab["words"].iloc[heldout]
    outputs["ner"] = [np.eye(len(TAGS))[np.zeros(len(w), dtype=int)] for w in words]
    tw = [x for w in lab["tw"].iloc[train] for x in w if x != IGNORE]
    outputs["tw"] = [np.full(len(w), float(np.mean(tw)) if tw else 0.0) for w in words]
    return score(data, heldout, outputs, list(TASK_F1))


def run_fold(data: QUData, cfg, fold: int, out_dir: Path, desc: str = "qu",
             on_step: Callable[[int], None] | None = None) -> FoldResult:
    """Train (or resume, or read back) the model of outer fold ``fold`` in ``out_dir`` and score it."""
    train, valid, heldout, test = split_rows(data, fold, cfg.valid_fraction, cfg.seed)
    ent_rows = ent_gains = None
    if cfg.entity_aware:
        ent_rows, ent_gains = entities_for(data, train, cfg)
    collator = Collator(data, ent_rows, ent_gains)
    rows_by_task = training_rows_by_task(data, train, list(cfg.tasks), cfg.ner_label_fraction, cfg.seed)
    rows = np.concatenate([valid, heldout, test])
    recipe = QURecipe(collator, rows_by_task, cfg, valid, rows,
                      judge=lambda r, outputs: score(data, r, outputs, list(cfg.tasks)))
    outputs = unpad(run_loop(build_model_fn(data, cfg), recipe, cfg, out_dir, on_step, desc=f"{desc} fold {fold}"))
    v = np.arange(len(valid))
    h = np.arange(len(valid), len(valid) + len(heldout) + len(test))
    out_v, out_h = _take(outputs, v), _take(outputs, h)
    tau = None
    if "ner" in outputs and len(valid):
        ok = np.flatnonzero(data.labels["has_es"].to_numpy()[valid])
        true = [data.labels["ner"].iat[valid[i]] for i in ok]
        pred = decode_tags([out_v["ner"][i] for i in ok])
        scores = gate_score_lists(out_v)
        tau = tune_gate(true, pred, [scores[i] for i in ok], "BRAND")
    n_held = len(heldout)
    held_only = _take(out_h, np.arange(n_held))
    metrics = score(data, heldout, held_only, list(cfg.tasks), tau,
                    gate_score_lists(held_only) if tau is not None else None)
    return FoldResult(fold, metrics, np.concatenate([heldout, test]), out_h, tau)
