"""Batches: dynamic padding (each batch padded to its own longest pair) and length grouping.

Training batches come from ``transformers``' ``LengthGroupedSampler`` (random mega-batches,
sorted by length inside), seeded per epoch so a resumed run sees the same order. Inference
batches walk the rows sorted by length.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch.utils.data import BatchSampler, DataLoader
from transformers.trainer_pt_utils import LengthGroupedSampler

from esci.artifacts import GAINS, LABELS
from finetune.inputs import ID_FIELDS, EncodedPairs

LABEL_INDEX = {label: i for i, label in enumerate(LABELS)}
SUBSTITUTE = LABEL_INDEX["S"]
GAIN_OF_INDEX = np.array([GAINS[label] for label in LABELS])


def label_indices(labels) -> np.ndarray:
    """E/S/C/I -> 0..3; missing (official test rows) -> -1."""
    return pd.Series(labels).map(LABEL_INDEX).fillna(-1).to_numpy(dtype=np.int64)


def target_probs(label_idx: torch.Tensor) -> dict[str, torch.Tensor]:
    """Soft targets of every task: task2 one-hot over E/S/C/I, task1/task3 as [1-p, p]."""
    onehot = torch.nn.functional.one_hot(label_idx.clamp(min=0), len(LABELS)).float()
    gain = onehot @ torch.tensor(GAIN_OF_INDEX, dtype=torch.float32)
    sub = onehot[:, SUBSTITUTE]
    return {"task1": torch.stack([1 - gain, gain], 1), "task2": onehot,
            "task3": torch.stack([1 - sub, sub], 1)}


def _pad(rows: list[np.ndarray], value: int, length: int) -> torch.Tensor:
    out = torch.full((len(rows), length), value, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.from_numpy(r[:length].astype(np.int64))  # cached ids are narrower
    return out


class PairCollator:
    """Row ids -> model batch. ``pad_to`` pads to a fixed length (the plain-loop benchmark only)."""

    def __init__(self, pairs: EncodedPairs, pad_id: int, labels: np.ndarray | None = None,
                 weights: np.ndarray | None = None, pad_to: int | None = None):
        self.pairs, self.pad_id, self.labels, self.weights, self.pad_to = pairs, pad_id, labels, weights, pad_to

    def __call__(self, rows) -> dict:
        rows = np.asarray(rows, dtype=np.int64)
        p = self.pairs
        toks = [p.tokens.row(i) for i in rows]
        length = self.pad_to or max(len(t) for t in toks)
        batch = {"input_ids": _pad(toks, self.pad_id, length)}
        batch["attention_mask"] = (_pad([np.ones(len(t), np.int64) for t in toks], 0, length))
        if p.token_types is not None:
            batch["token_type_ids"] = _pad([p.token_types.row(i) for i in rows], 0, length)
        units = {}
        for name, table in p.unit_tables.items():
            flat, starts = table.take(p.unit_rows[name][rows])
            units[name] = (torch.from_numpy(flat), torch.from_numpy(starts))
        batch["units"] = units
        batch["ids"] = {name: torch.from_numpy(p.ids[name][rows]) for name in ID_FIELDS}
        if self.labels is not None:
            label_idx = torch.from_numpy(self.labels[rows])
            batch["targets"] = target_probs(label_idx)
            w = self.weights[rows] if self.weights is not None else np.ones(len(rows))
            batch["weight"] = torch.as_tensor(w, dtype=torch.float32)
        return batch


def train_loader(rows: np.ndarray, pairs: EncodedPairs, collator: PairCollator, batch_size: int,
                 seed: int, epoch: int, length_grouped: bool = True) -> DataLoader:
    """Shuffled batches of ``rows`` for one epoch, deterministic in (seed, epoch)."""
    gen = torch.Generator().manual_seed(seed * 1000 + epoch)
    if length_grouped:
        sampler = LengthGroupedSampler(batch_size, lengths=pairs.lengths()[rows].tolist(), generator=gen)
    else:
        sampler = torch.randperm(len(rows), generator=gen).tolist()
    positions = BatchSampler(sampler, batch_size, drop_last=False)
    # Its own generator: iterating a DataLoader otherwise draws a seed from torch's global RNG,
    # which would shift the dropout and mixup draws of a resumed run against an uninterrupted one.
    return DataLoader(rows.tolist(), batch_sampler=positions, collate_fn=collator,
                      generator=torch.Generator().manual_seed(seed))


def inference_batches(rows: np.ndarray, pairs: EncodedPairs, batch_size: int,
                      length_sorted: bool = True) -> list[np.ndarray]:
    """``rows`` in batches; sorted by length so little padding is computed."""
    if length_sorted:
        rows = rows[np.argsort(pairs.lengths()[rows], kind="mergesort")]
    return [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]
