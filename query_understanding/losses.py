"""Losses of the query-understanding heads and the EAMT entity rank loss.

Per the Walmart paper: PT, QC and TW binary cross-entropy, NER cross-entropy, and
rankloss = sum_k -softmax(y)_k log softmax(s)_k (ListNet top-1) over the retrieved entities.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from query_understanding.weak_labels import IGNORE


def listnet_loss(scores: torch.Tensor, gains: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """ListNet cross-entropy between softmax(gains) and softmax(scores) over valid entities.

    scores, gains, mask: (B, K); mask True where an entity exists. Rows with fewer than two
    entities carry no ranking and are skipped; returns 0 when no row has two.
    """
    rows = mask.sum(1) >= 2
    if not rows.any():
        return scores.sum() * 0.0
    s, y, m = scores[rows].float(), gains[rows].float(), mask[rows]
    neg = torch.finfo(s.dtype).min
    target = torch.softmax(y.masked_fill(~m, neg), dim=1)
    logp = torch.log_softmax(s.masked_fill(~m, neg), dim=1)
    return -(target * logp.masked_fill(~m, 0.0)).sum(1).mean()


def multilabel_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B, C) logits against (B, C) 0/1 targets."""
    return F.binary_cross_entropy_with_logits(logits.float(), targets.float())


def token_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B, W, C) logits against (B, W) class ids; IGNORE words do not count."""
    return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE)


def token_bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B, W) logits against (B, W) 0/1 labels; IGNORE words do not count."""
    keep = labels != IGNORE
    if not keep.any():
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits[keep].float(), labels[keep].float())
