"""The cross-encoder with the head of the source's Figure 2.

    [CLS] or mean-pooled encoder output
    + ID embeddings (brand, colour, locale)
    + multi-granular units (char-3-gram and word bags of query, title+brand+colour+bullets, description)
    -> concatenated -> MLP -> one linear head per task

Heads: task1 one logit (sigmoid = predicted gain), task2 four logits (E/S/C/I), task3 one logit
(sigmoid = P(substitute)).
"""
from __future__ import annotations

import torch
from torch import nn

from finetune.inputs import ID_FIELDS, UNIT_FIELDS

HEAD_SIZES = {"task1": 1, "task2": 4, "task3": 1}


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    if how == "cls":
        return hidden[:, 0]
    if how == "mean":
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-6)
    raise ValueError(f"config finetune.pooling: {how!r} is not cls or mean")


def _small_init(module: nn.Module) -> nn.Module:
    # The encoder's own init scale: N(0, 1) rows would drown the pooled output at the start.
    nn.init.normal_(module.weight, std=0.02)
    return module


class CrossEncoder(nn.Module):
    """``forward(batch, mix=None) -> {task: logits}``; ``mix`` is applied to the pooled features."""

    def __init__(self, encoder: nn.Module, cfg, tasks: list[str], id_sizes: dict[str, int],
                 id_tables: dict[str, torch.Tensor] | None = None):
        super().__init__()
        unknown = [t for t in tasks if t not in HEAD_SIZES]
        if unknown or not tasks:
            raise ValueError(f"CrossEncoder: tasks {tasks} must be a non-empty subset of {list(HEAD_SIZES)}")
        self.encoder = encoder
        self.pooling = cfg.pooling
        width = encoder.config.hidden_size
        tables = id_tables or {}
        self.id_emb = None
        if cfg.id_embeddings:
            self.id_emb = nn.ModuleDict({
                name: (nn.Embedding.from_pretrained(tables[name].float(), freeze=False) if name in tables
                       else _small_init(nn.Embedding(id_sizes[name], cfg.id_dim))) for name in ID_FIELDS})
            width += sum(e.embedding_dim for e in self.id_emb.values())
        self.char_bag = self.word_bag = None
        if cfg.units:
            self.char_bag = _small_init(nn.EmbeddingBag(cfg.char_buckets, cfg.unit_dim, mode="mean"))
            self.word_bag = _small_init(nn.EmbeddingBag(cfg.word_buckets, cfg.unit_dim, mode="mean"))
            width += cfg.unit_dim * len(UNIT_FIELDS)
        self.mlp = nn.Sequential(nn.Dropout(cfg.head_dropout), nn.Linear(width, cfg.mlp_hidden),
                                 nn.GELU(), nn.Dropout(cfg.head_dropout))
        self.heads = nn.ModuleDict({t: nn.Linear(cfg.mlp_hidden, HEAD_SIZES[t]) for t in tasks})

    @property
    def tasks(self) -> list[str]:
        return list(self.heads)

    def get_input_embeddings(self) -> nn.Module:
        return self.encoder.get_input_embeddings()

    def head_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if not name.startswith("encoder.")]

    def features(self, batch: dict) -> torch.Tensor:
        kwargs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
        hidden = self.encoder(**kwargs).last_hidden_state
        parts = [pool(hidden, batch["attention_mask"], self.pooling)]
        if self.id_emb is not None:
            parts += [self.id_emb[name](batch["ids"][name]) for name in ID_FIELDS]
        if self.char_bag is not None:
            for name, _, kind in UNIT_FIELDS:
                bag = self.char_bag if kind == "char" else self.word_bag
                flat, offsets = batch["units"][name]
                parts.append(bag(flat, offsets))
        return torch.cat(parts, dim=1)

    def forward(self, batch: dict, mix=None) -> dict[str, torch.Tensor]:
        feats = self.features(batch)
        if mix is not None:
            feats = mix.apply(feats)
        hidden = self.mlp(feats)
        return {task: head(hidden) for task, head in self.heads.items()}
