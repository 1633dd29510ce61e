"""Query rows -> model batches: padded sub-token ids, word positions, one task's targets, and the
query's retrieved entities (each distinct product in the batch encoded once)."""
from __future__ import annotations

import numpy as np
import torch

from query_understanding.weak_labels import IGNORE, TAG_INDEX

SENTENCE_TASKS = ("pt", "qc")
TOKEN_TASKS = ("ner", "tw", "intent")


def labelled_rows(labels, task: str) -> np.ndarray:
    """Query rows that carry a label for ``task`` (the weak-label masks of weak_labels.py)."""
    if task in SENTENCE_TASKS:
        ok = labels[task].map(len) > 0
    elif task in ("ner", "intent"):
        ok = labels["has_es"]
    elif task == "tw":
        ok = labels["tw"].map(lambda w: any(x != IGNORE for x in w))
    else:
        raise ValueError(f"query understanding: unknown task {task!r}")
    return np.flatnonzero(ok.to_numpy())


def _pad(rows: list[np.ndarray], value: int) -> torch.Tensor:
    length = max(1, max(len(r) for r in rows))
    out = torch.full((len(rows), length), value, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.as_tensor(r, dtype=torch.long)
    return out


class Collator:
    """``collator(rows, task)`` -> batch dict; ``task=None`` builds inputs only (inference)."""

    def __init__(self, data, entity_rows: np.ndarray | None = None, entity_gains: np.ndarray | None = None):
        self.data = data
        self.pad_id = data.tokenizer.pad_token_id
        self.entity_rows, self.entity_gains = entity_rows, entity_gains
        self.n = {"pt": data.clusters.n_pt, "qc": data.clusters.n_qc}

    def __call__(self, rows, task: str | None = None) -> dict:
        d = self.data
        rows = np.asarray(rows, dtype=np.int64)
        toks = [d.query_tokens[i] for i in rows]
        batch = {"input_ids": _pad(toks, self.pad_id),
                 "attention_mask": _pad([np.ones(len(t), np.int64) for t in toks], 0)}
        pos = [d.word_pos[i] for i in rows]
        word_pos = _pad(pos, -1)
        batch["word_mask"] = word_pos >= 0
        batch["word_pos"] = word_pos.clamp(min=0)
        if task is not None:
            batch["task"] = task
            batch["target"] = self.targets(rows, task, batch["word_mask"])
        if self.entity_rows is not None:
            self._add_entities(batch, rows)
        return batch

    def targets(self, rows, task, word_mask) -> torch.Tensor:
        lab = self.data.labels
        if task in SENTENCE_TASKS:
            out = torch.zeros(len(rows), self.n[task])
            for i, r in enumerate(rows):
                out[i, lab[task].iat[r]] = 1.0
            return out
        if task == "ner":
            seqs = [[TAG_INDEX[t] for t in lab["ner"].iat[r]] for r in rows]
        elif task == "tw":
            seqs = [lab["tw"].iat[r] for r in rows]
        else:  # intent: the query's label on every word (Target's per-token intent)
            seqs = [[lab["intent"].iat[r]] * len(lab["words"].iat[r]) for r in rows]
        target = torch.full(word_mask.shape, IGNORE, dtype=torch.long)
        for i, s in enumerate(seqs):
            target[i, :len(s)] = torch.as_tensor(s, dtype=torch.long)
        return target.masked_fill(~word_mask, IGNORE)  # words cut off by max_length have no state

    def _add_entities(self, batch: dict, rows) -> None:
        ent = self.entity_rows[rows]
        unique, inverse = np.unique(ent[ent >= 0], return_inverse=True)
        index = np.full(ent.shape, -1, dtype=np.int64)
        index[ent >= 0] = inverse
        toks = [self.data.entity_tokens[p] for p in unique] or [np.zeros(1, np.int64)]
        batch["entity_input_ids"] = _pad(toks, self.pad_id)
        batch["entity_attention_mask"] = _pad([np.ones(len(t), np.int64) for t in toks], 0)
        batch["entity_index"] = torch.from_numpy(index)
        batch["entity_gain"] = torch.from_numpy(self.entity_gains[rows])
