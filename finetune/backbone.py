"""The fine-tuning backbone: ``minilm``, ``scratch``, ``pretrain`` or a local checkpoint directory.

``pretrain`` means this run's ``runs/<run>/pretrain/`` (written by ``pretrain/``): a Hugging Face
checkpoint plus ``brand|color_embeddings.pt`` and ``brand|color_vocab.json``, which become the
starting rows of the brand and colour ID embeddings. Any checkpoint directory carrying those
files is used the same way.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer

from esci import backbones
from esci.config import fingerprint
from finetune.inputs import IdVocab

PRETRAIN = "pretrain"
TABLE_FIELDS = ("brand", "color")


@dataclass
class Backbone:
    where: Path | str  # checkpoint directory, or "scratch"
    tokenizer: object
    key: str  # identity of the tokenizer + weights, for caches and fold fingerprints
    tables: dict[str, tuple[list[str], torch.Tensor]] = field(default_factory=dict)

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)


def resolve_spec(spec: str, run_root: Path) -> str:
    if spec != PRETRAIN:
        return spec
    where = Path(run_root) / "pretrain"
    if not (where / "config.json").is_file():
        raise FileNotFoundError(f"finetune.backbone=pretrain: no pre-training checkpoint at {where} "
                                "(run pre-training for this run first, or use minilm/scratch)")
    return str(where)


def _file_stamp(where: Path) -> list:
    return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in where.iterdir() if p.is_file())


def _scratch_tokenizer(texts: list[str], vocab_size: int, cache_dir: Path) -> tuple[object, str]:
    """Trained once per corpus and saved, so every fold and rerun uses the same vocabulary."""
    key = fingerprint("scratch", vocab_size, len(texts), sorted(set(texts))[:2000], sum(map(len, texts)))
    saved = Path(cache_dir) / f"tokenizer-{key}"
    if not (saved / "tokenizer_config.json").is_file():
        tok = backbones.train_scratch_tokenizer(texts, vocab_size)
        saved.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{saved.name}.", dir=saved.parent))
        tok.save_pretrained(tmp)
        shutil.rmtree(saved, ignore_errors=True)
        os.replace(tmp, saved)
    return AutoTokenizer.from_pretrained(saved), key


def read_id_tables(where: Path) -> dict[str, tuple[list[str], torch.Tensor]]:
    """``{name: (values, table)}`` for each brand/colour table found beside the checkpoint."""
    out = {}
    for name in TABLE_FIELDS:
        vocab, table = where / f"{name}_vocab.json", where / f"{name}_embeddings.pt"
        if vocab.is_file() and table.is_file():
            values = json.loads(vocab.read_text())["values"]
            weight = torch.load(table, weights_only=True)
            if weight.ndim != 2 or weight.shape[0] != len(values):
                raise ValueError(f"finetune: {table} has shape {tuple(weight.shape)}, expected "
                                 f"({len(values)}, dim) for the values of {vocab}")
            out[name] = (values, weight)
    return out


def load_backbone(spec: str, run_root: Path, texts: list[str], cfg, cache_dir: Path) -> Backbone:
    where = backbones.resolve(resolve_spec(spec, run_root))
    if where == backbones.SCRATCH:
        tokenizer, key = _scratch_tokenizer(texts, cfg.scratch_vocab_size, cache_dir)
        return Backbone(where, tokenizer, fingerprint(key, cfg.scratch_hidden, cfg.scratch_layers,
                                                      cfg.scratch_heads))
    where = Path(where)
    tokenizer = AutoTokenizer.from_pretrained(where)
    return Backbone(where, tokenizer, fingerprint(str(where.resolve()), _file_stamp(where)),
                    read_id_tables(where))


def build_encoder(backbone: Backbone, cfg, seed: int):
    if backbone.where == backbones.SCRATCH:
        return backbones.load_encoder(backbones.SCRATCH, backbone.tokenizer, seed=seed, hidden=cfg.scratch_hidden,
                                      layers=cfg.scratch_layers, heads=cfg.scratch_heads,
                                      max_length=max(256, cfg.max_length))
    config = AutoConfig.from_pretrained(backbone.where)
    # A checkpoint whose tokenizer was extended may still say the old vocab_size in config.json;
    # its saved embedding matrix has the tokenizer's length.
    config.vocab_size = max(config.vocab_size, len(backbone.tokenizer))
    return AutoModel.from_pretrained(backbone.where, config=config)


def id_vocabs(pairs_frame, backbone: Backbone, min_count: int) -> tuple[dict[str, IdVocab], dict[str, torch.Tensor]]:
    """Vocabularies of the ID embeddings (values counted once per product), and their initial
    tables where pre-training made them: a pre-trained table keeps its value order, and row 0
    (unknown) is prepended as zeros."""
    products = pairs_frame.drop_duplicates(["product_id", "product_locale"])
    vocabs, tables = {}, {}
    for name in ("brand", "color", "locale"):
        if name in backbone.tables:
            values, weight = backbone.tables[name]
            vocabs[name] = IdVocab(values)
            tables[name] = torch.cat([torch.zeros(1, weight.shape[1]), weight.float()])
        else:
            vocabs[name] = IdVocab.from_counts(products[name], 1 if name == "locale" else min_count)
    return vocabs, tables
