"""Confident learning (Northcutt et al. 2021) with cleanlab on out-of-fold task-2 probabilities.

``flag_label_issues`` ranks the training rows by cleanlab's label-quality score and flags either
a fixed share of the lowest (``fraction > 0``) or the rows ``cleanlab.filter.find_label_issues``
finds (``fraction == 0``). The stage then retrains without them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores

from esci.artifacts import LABELS, PROB_COLUMNS, write_csv, write_json
from finetune.batches import label_indices

ISSUE_COLUMNS = ["example_id", "given_label", "suggested_label", "label_quality"]


def flag_label_issues(labels: np.ndarray, pred_probs: np.ndarray, *, fraction: float = 0.0,
                      filter_by: str = "prune_by_noise_rate") -> tuple[np.ndarray, np.ndarray]:
    """(flagged row indices, lowest label quality first; label quality of every row).

    labels (n,) ints in 0..K-1; pred_probs (n, K) out-of-fold probabilities: in-sample
    probabilities have memorised the noisy labels and hide them.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"flag_label_issues: fraction must be in [0, 1), got {fraction}")
    quality = get_label_quality_scores(labels, pred_probs)
    order = np.argsort(quality, kind="mergesort")
    if fraction > 0:
        return order[:int(round(fraction * len(labels)))], quality
    mask = find_label_issues(labels, pred_probs, filter_by=filter_by)
    return order[mask[order]], quality


def label_issues(oof: pd.DataFrame, fraction: float = 0.0,
                 filter_by: str = "prune_by_noise_rate") -> pd.DataFrame:
    """The flagged rows of an out-of-fold frame: example_id, given and suggested label, quality."""
    labels = label_indices(oof["esci_label"])
    if (labels < 0).any():
        raise ValueError("cleanlab: out-of-fold frame has rows without an E/S/C/I label")
    probs = oof[PROB_COLUMNS].to_numpy(dtype=float)
    flagged, quality = flag_label_issues(labels, probs, fraction=fraction, filter_by=filter_by)
    return pd.DataFrame({"example_id": oof["example_id"].to_numpy()[flagged],
                         "given_label": np.array(LABELS)[labels[flagged]],
                         "suggested_label": np.array(LABELS)[probs[flagged].argmax(1)],
                         "label_quality": quality[flagged]})


def write_issues(issues: pd.DataFrame, n_rows: int, out_dir: Path, model: str, how: str) -> list[Path]:
    """``<out_dir>/<model>_issues.csv`` and a summary JSON beside it."""
    table, summary = Path(out_dir) / f"{model}_issues.csv", Path(out_dir) / f"{model}_summary.json"
    write_csv(issues[ISSUE_COLUMNS], table)
    write_json({"model": model, "selection": how, "n_training_rows": n_rows, "n_removed": len(issues),
                "share_removed": len(issues) / max(n_rows, 1),
                "removed_by_given_label": issues["given_label"].value_counts().to_dict(),
                "given_to_suggested": issues.groupby(["given_label", "suggested_label"]).size()
                .rename("n").reset_index().to_dict("records")}, summary)
    return [table, summary]
