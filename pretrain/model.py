"""The multi-task model: one encoder shared by every task, plus one small head per task.

The encoder is the backbone's full ``AutoModel`` (pooler included), so ``save_pretrained`` of it
reloads with ``AutoModel.from_pretrained`` exactly. The MLM head is the head of the backbone's
``AutoModelForMaskedLM`` (pretrained when the checkpoint has one; all-MiniLM-L6-v2 does not),
with its decoder tied to the encoder's input embeddings; it is applied to masked positions only,
which on a small encoder saves more compute than the encoder costs.
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import AutoModel, AutoModelForMaskedLM

from esci import backbones
from pretrain import losses
from pretrain.config import PretrainConfig


def _scratch_kwargs(cfg: PretrainConfig) -> dict:
    return dict(hidden=cfg.scratch_hidden, layers=cfg.scratch_layers, heads=cfg.scratch_heads,
                max_length=max(256, cfg.max_length))


def load_backbone(cfg: PretrainConfig, tokenizer) -> tuple[nn.Module, nn.Module, bool]:
    """``(encoder, mlm_head, head_is_new)`` for ``cfg.backbone``, embeddings sized to ``tokenizer``."""
    where = backbones.resolve(cfg.backbone)
    if where == backbones.SCRATCH:
        mlm = backbones.load_encoder(cfg.backbone, tokenizer, AutoModelForMaskedLM, cfg.seed,
                                     **_scratch_kwargs(cfg))
        encoder = backbones.load_encoder(cfg.backbone, tokenizer, AutoModel, cfg.seed,
                                         **_scratch_kwargs(cfg))
        head_is_new = True
    else:
        try:
            mlm, info = AutoModelForMaskedLM.from_pretrained(where, output_loading_info=True)
        except ValueError as exc:
            raise ValueError(f"backbone {cfg.backbone!r}: no masked-LM model class for it "
                             f"({str(exc).splitlines()[0]})") from exc
        encoder = backbones.load_encoder(str(where))
        prefix = mlm.base_model_prefix
        head_is_new = any(not k.startswith(prefix) and "decoder.weight" not in k
                          for k in info["missing_keys"])
    setattr(mlm, mlm.base_model_prefix, encoder)  # the full encoder, pooler included
    mlm.tie_weights()
    if mlm.get_input_embeddings().num_embeddings != len(tokenizer):
        mlm.resize_token_embeddings(len(tokenizer))  # new rows drawn around the old rows' mean
        # the wrapper updates its own config only; the encoder's is the one save_pretrained writes
        encoder.config.vocab_size = len(tokenizer)
    heads = [m for name, m in mlm.named_children() if name != mlm.base_model_prefix]
    if len(heads) != 1:
        raise ValueError(f"backbone {cfg.backbone!r}: expected one masked-LM head beside the "
                         f"encoder, found {len(heads)}")
    head = heads[0]
    if mlm.get_output_embeddings().weight is not encoder.get_input_embeddings().weight:
        raise ValueError(f"backbone {cfg.backbone!r}: MLM decoder is not tied to the input embeddings")
    return encoder, head, head_is_new


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    if how == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-6)


class MultiTaskModel(nn.Module):
    """``forward(batch) -> {task: loss}`` for the tasks present in ``batch``."""

    def __init__(self, encoder: nn.Module, mlm_head: nn.Module, cfg: PretrainConfig,
                 n_brands: int, n_colors: int):
        super().__init__()
        self.encoder = encoder
        self.mlm_head = mlm_head
        hidden = encoder.config.hidden_size
        self.pooling = cfg.pooling
        self.temperature = cfg.temperature
        self.p2q_head = nn.Linear(hidden, 1)
        self.brand_head = nn.Linear(hidden, max(n_brands, 1))
        self.color_head = nn.Linear(hidden, max(n_colors, 1))
        self.simcse = cfg.simcse_weight != 0
        self._freeze_unused(cfg)

    def _freeze_unused(self, cfg: PretrainConfig) -> None:
        """Parameters no enabled task reaches get no gradient; freezing them keeps DDP happy."""
        unused = {"p2q_head": cfg.p2q_weight == 0, "brand_head": cfg.brand_weight == 0,
                  "color_head": cfg.color_weight == 0}
        for name, off in unused.items():
            getattr(self, name).requires_grad_(not off)
        decoder = self.mlm_head_decoder_weight()
        for p in self.mlm_head.parameters():
            if p is not decoder:
                p.requires_grad_(cfg.mlm_weight != 0)
        pooler = getattr(self.encoder, "pooler", None)
        if pooler is not None:  # only the Product2Query head reads the pooler
            pooler.requires_grad_(cfg.p2q_weight != 0)
        if cfg.freeze_encoder:  # the tied MLM decoder (= input embeddings) freezes with it
            self.encoder.requires_grad_(False)

    def mlm_head_decoder_weight(self):
        return self.encoder.get_input_embeddings().weight

    def encode(self, inputs: dict) -> tuple[torch.Tensor, object]:
        out = self.encoder(**{k: v for k, v in inputs.items() if k in _ENCODER_KEYS})
        return out.last_hidden_state, out

    def embed(self, inputs: dict) -> torch.Tensor:
        hidden, _ = self.encode(inputs)
        return pool(hidden, inputs["attention_mask"], self.pooling)

    def mlm_loss(self, inputs: dict) -> torch.Tensor:
        hidden, _ = self.encode(inputs)
        return losses.masked_lm(self.mlm_head, hidden, inputs["labels"])

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        if "mlm" in batch:
            out["mlm"] = self.mlm_loss(batch["mlm"])
        if "p2q" in batch:
            hidden, enc = self.encode(batch["p2q"])
            pooled = getattr(enc, "pooler_output", None)
            pooled = hidden[:, 0] if pooled is None else pooled
            out["p2q"] = losses.binary(self.p2q_head(pooled).squeeze(-1), batch["p2q"]["targets"])
        if "anon" in batch:
            emb = self.embed(batch["anon"])
            if "brand_labels" in batch["anon"]:
                out["brand"] = losses.classification(self.brand_head(emb), batch["anon"]["brand_labels"])
            if "color_labels" in batch["anon"]:
                out["color"] = losses.classification(self.color_head(emb), batch["anon"]["color_labels"])
        if "product" in batch:
            view1 = self.embed(batch["product"])
            if "query" in batch:
                out["infonce"] = losses.info_nce(self.embed(batch["query"]), view1, self.temperature)
            if self.simcse:
                view2 = self.embed(batch["product"])  # same input, another dropout mask
                out["simcse"] = losses.info_nce(view1, view2, self.temperature)
        return out


_ENCODER_KEYS = ("input_ids", "attention_mask", "token_type_ids")
