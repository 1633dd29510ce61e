"""Decoding and metrics of the QU tasks on held-out queries.

* PT / QC (multi-label): a cluster is predicted when its probability is >= 0.5, and the most
  probable cluster always is (every labelled query has at least one); micro- and macro-F1, the
  macro over clusters present in the truth or the predictions of the evaluated queries.
* NER: argmax tag per word; entity-level precision / recall / F1 with seqeval's span matching.
* TW: F1 of weight 1 over the unmasked words, probability >= 0.5.
* Intent: a query is brand lookup when the mean of its per-token intent probabilities >= 0.5.
* Gating (Target's thresholds): a predicted entity span of one type survives when the mean of a
  per-token score over its words is >= tau, tau tuned on validation queries.
"""
from __future__ import annotations

import numpy as np
from seqeval.metrics import f1_score as span_f1
from seqeval.metrics import precision_score as span_precision
from seqeval.metrics import recall_score as span_recall
from sklearn.metrics import f1_score, precision_recall_fscore_support

from query_understanding.weak_labels import IGNORE, TAGS

GATE_GRID = np.round(np.arange(0.0, 1.0001, 0.05), 2)


def decode_multilabel(probs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    pred = probs >= threshold
    pred[np.arange(len(probs)), probs.argmax(1)] = True
    return pred


def multilabel_f1(true_lists, probs: np.ndarray) -> dict[str, float]:
    truth = np.zeros(probs.shape, dtype=bool)
    for i, labels in enumerate(true_lists):
        truth[i, list(labels)] = True
    pred = decode_multilabel(probs)
    present = truth.any(0) | pred.any(0)
    return {"micro_f1": float(f1_score(truth, pred, average="micro", zero_division=0)),
            "macro_f1": float(f1_score(truth[:, present], pred[:, present], average="macro", zero_division=0))}


def decode_tags(ner_probs) -> list[list[str]]:
    return [[TAGS[i] for i in p.argmax(-1)] for p in ner_probs]


def only_type(tags: list[list[str]], kind: str) -> list[list[str]]:
    return [[t if t[2:] == kind else "O" for t in seq] for seq in tags]


def ner_prf(true: list[list[str]], pred: list[list[str]], kind: str | None = None) -> dict[str, float]:
    if kind is not None:
        true, pred = only_type(true, kind), only_type(pred, kind)
    return {"precision": float(span_precision(true, pred, zero_division=0)),
            "recall": float(span_recall(true, pred, zero_division=0)),
            "f1": float(span_f1(true, pred, zero_division=0))}


def gate_spans(tags: list[list[str]], scores, kind: str, tau: float) -> list[list[str]]:
    """Drop predicted ``kind`` spans whose mean per-token score is below ``tau``."""
    out = []
    for seq, score in zip(tags, scores):
        seq = list(seq)
        i = 0
        while i < len(seq):
            if seq[i][2:] == kind and (seq[i].startswith("B-") or i == 0 or seq[i - 1][2:] != kind):
                j = i + 1
                while j < len(seq) and seq[j] == f"I-{kind}":
                    j += 1
                if float(np.mean(score[i:j])) < tau:
                    seq[i:j] = ["O"] * (j - i)
                i = j
            else:
                i += 1
        out.append(seq)
    return out


def tune_gate(true, pred, scores, kind: str, grid=GATE_GRID) -> float:
    """The tau of ``grid`` with the best ``kind`` F1 (the smallest such tau on ties)."""
    f1s = [ner_prf(true, gate_spans(pred, scores, kind, tau), kind)["f1"] for tau in grid]
    return float(grid[int(np.argmax(f1s))])


def brand_scores(ner_probs) -> list[np.ndarray]:
    """Per-token BRAND probability mass, the NER-only model's own score for gating."""
    b, i = TAGS.index("B-BRAND"), TAGS.index("I-BRAND")
    return [p[:, b] + p[:, i] for p in ner_probs]


def tw_f1(true_lists, prob_lists) -> float:
    t, p = [], []
    for labels, probs in zip(true_lists, prob_lists):
        for y, q in zip(labels, probs):
            if y != IGNORE:
                t.append(y)
                p.append(q >= 0.5)
    return float(f1_score(t, p, zero_division=0)) if t else float("nan")


def query_intent(prob_lists) -> np.ndarray:
    return np.array([float(np.mean(p)) if len(p) else 0.0 for p in prob_lists])


def intent_prf(true: np.ndarray, prob_lists, threshold: float = 0.5) -> dict[str, float]:
    p, r, f, _ = precision_recall_fscore_support(true, query_intent(prob_lists) >= threshold,
                                                 average="binary", zero_division=0)
    return {"precision": float(p), "recall": float(r), "f1": float(f)}
