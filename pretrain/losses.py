"""The pre-training losses, one function each; every one returns a finite scalar.

A batch with nothing to learn from (no masked token, every label ignored) gives a zero that
still hangs on the graph, so the backward pass and DDP see the same parameters every step.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100


def masked_lm(head, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``head`` on the masked positions only (labels != -100).

    hidden: (batch, seq, dim); labels: (batch, seq).
    """
    picked = labels != IGNORE
    if not picked.any():
        return hidden.sum() * 0.0
    logits = head(hidden[picked])
    return F.cross_entropy(logits.float(), labels[picked])


def classification(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over (batch, classes) logits; rows labelled -100 are ignored."""
    if not (labels != IGNORE).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), labels, ignore_index=IGNORE)


def binary(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of (batch,) logits against 0/1 targets."""
    return F.binary_cross_entropy_with_logits(logits.float(), targets.float())


def info_nce(anchors: torch.Tensor, positives: torch.Tensor, temperature: float) -> torch.Tensor:
    """In-batch InfoNCE: row i of ``anchors`` should match row i of ``positives`` (both (batch, dim)).

    The other rows of the batch are the negatives; cosine similarity over ``temperature``.
    With two dropout views of the same texts this is SimCSE.
    """
    if temperature <= 0:
        raise ValueError(f"info_nce: temperature must be > 0, got {temperature}")
    a = F.normalize(anchors.float(), dim=-1)
    b = F.normalize(positives.float(), dim=-1)
    logits = a @ b.T / temperature
    return F.cross_entropy(logits, torch.arange(len(a), device=a.device))
