"""The query-understanding model: shared encoder -> (entity fusion) -> body -> task heads.

    query sub-tokens --encoder--> token states H (B, T, d)
    EAMT: entities --same encoder, mean pool--> E (B, K, d) (no gradient with entity_grad=False);
          scores s = (W q) . E_k / sqrt(d)
          with q the mean-pooled query; context c = softmax(s) E; H <- LayerNorm(H + W_c c)
    body (MTDNN | MMoE | PLE) -> one state sequence per task
    heads: PT, QC on the mean-pooled task states (multi-label logits);
           NER, TW, intent on each word's first sub-token (tag logits / one logit).

``forward(batch, tasks)`` returns {task: logits, "entity_scores": (B, K), "entity_mask": (B, K)}.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from query_understanding.batches import SENTENCE_TASKS
from query_understanding.bodies import make_body
from query_understanding.weak_labels import TAGS


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(-2) / m.sum(-2).clamp(min=1e-6)


class EntityFusion(nn.Module):
    """Attention of the query over its K entity vectors, added to every query token state."""

    def __init__(self, width: int):
        super().__init__()
        self.query = nn.Linear(width, width)
        self.fuse = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width)

    def forward(self, hidden, query_vec, entities, mask):
        scores = torch.einsum("bd,bkd->bk", self.query(query_vec), entities) / math.sqrt(entities.shape[-1])
        weights = torch.softmax(scores.masked_fill(~mask, -1e4), dim=-1) * mask  # no entity: no context
        context = torch.einsum("bk,bkd->bd", weights, entities)
        return self.norm(hidden + self.fuse(context).unsqueeze(1)), scores


class QUModel(nn.Module):
    def __init__(self, encoder: nn.Module, tasks: list[str], n_pt: int, n_qc: int, *, body: str = "mtdnn",
                 entity_aware: bool = False, entity_grad: bool = True, n_experts: int = 3, expert_dim: int = 64,
                 ple_layers: int = 2, dropout: float = 0.1):
        super().__init__()
        sizes = {"pt": n_pt, "qc": n_qc, "ner": len(TAGS), "tw": 1, "intent": 1}
        unknown = [t for t in tasks if t not in sizes]
        if unknown or not tasks:
            raise ValueError(f"QUModel: tasks {tasks} must be a non-empty subset of {list(sizes)}")
        self.encoder = encoder
        width = encoder.config.hidden_size
        self.fusion = EntityFusion(width) if entity_aware else None
        self.entity_grad = entity_grad
        self.body = make_body(body, width, tasks, n_experts=n_experts, expert_dim=expert_dim,
                              ple_layers=ple_layers, dropout=dropout)
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleDict({t: nn.Linear(self.body.out_dim, sizes[t]) for t in tasks})

    @property
    def tasks(self) -> list[str]:
        return list(self.heads)

    def encoder_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())

    def head_parameters(self, exclude: tuple[str, ...] = ()) -> list[nn.Parameter]:
        skip = tuple(f"heads.{t}." for t in exclude)
        return [p for n, p in self.named_parameters() if not n.startswith("encoder.") and not n.startswith(skip)]

    def _encode(self, input_ids, attention_mask) -> torch.Tensor:
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def forward(self, batch: dict, tasks: list[str] | None = None) -> dict[str, torch.Tensor]:
        tasks = tasks or self.tasks
        mask = batch["attention_mask"]
        hidden = self._encode(batch["input_ids"], mask)
        out = {}
        if self.fusion is not None:
            with torch.set_grad_enabled(self.entity_grad and torch.is_grad_enabled()):
                ent = mean_pool(self._encode(batch["entity_input_ids"], batch["entity_attention_mask"]),
                                batch["entity_attention_mask"])
            index = batch["entity_index"]
            ent_mask = index >= 0
            entities = ent[index.clamp(min=0)] * ent_mask.unsqueeze(-1)
            hidden, out["entity_scores"] = self.fusion(hidden, mean_pool(hidden, mask), entities, ent_mask)
            out["entity_mask"] = ent_mask
        states = self.body(hidden)
        for task in tasks:
            h = self.dropout(states[task])
            if task in SENTENCE_TASKS:
                out[task] = self.heads[task](mean_pool(h, mask))
            else:
                words = torch.gather(h, 1, batch["word_pos"].unsqueeze(-1).expand(-1, -1, h.shape[-1]))
                logits = self.heads[task](words)
                out[task] = logits.squeeze(-1) if logits.shape[-1] == 1 else logits
        return out
