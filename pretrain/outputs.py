"""The ``runs/<run>/pretrain/`` directory, written whole into a temp dir and renamed into place.

Contents:
* ``config.json``, ``model.safetensors``, tokenizer files: ``save_pretrained`` of the encoder and
  its (extended) tokenizer; a fine-tuning backbone spec can point at this directory;
* ``brand_embeddings.pt`` / ``color_embeddings.pt``: float tensors (n_values, hidden), the rows of
  the Product2Brand/Color classifiers, row i belonging to value i of
* ``brand_vocab.json`` / ``color_vocab.json``: ``{"values": [...], "normalize": ..., "trained": ...}``
  (values normalised by ``pretrain.corpus.normalize_value``; a value not listed has no row);
* ``pretrain_config.yaml`` (resolved config), ``loss_log.jsonl`` (one row per optimizer step),
  ``vocab_coverage.csv`` ([UNK] rates per locale before/after the extension), ``metrics.json``.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from esci.artifacts import write_json
from pretrain.corpus import Corpus

NORMALIZE = "pretrain.corpus.normalize_value: NFKC, casefold, collapsed whitespace"


def _table(head: torch.nn.Linear, n_values: int) -> torch.Tensor:
    return head.weight.detach()[:n_values].float().cpu().clone()


def write_pretrain_dir(final: Path, model, tokenizer, corpus: Corpus, config_yaml: str, work: Path,
                       metrics: dict) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        model.encoder.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        for name, head, vocab in (("brand", model.brand_head, corpus.brand_vocab),
                                  ("color", model.color_head, corpus.color_vocab)):
            torch.save(_table(head, len(vocab)), tmp / f"{name}_embeddings.pt")
            trained = bool(head.weight.requires_grad)
            write_json({"values": vocab.values, "normalize": NORMALIZE, "trained": trained,
                        "rows": f"{name}_embeddings.pt row i is values[i]"}, tmp / f"{name}_vocab.json")
        (tmp / "pretrain_config.yaml").write_text(config_yaml, encoding="utf-8")
        for name in ("loss_log.jsonl", "vocab_coverage.csv", "extension_chars.json"):
            if (work / name).is_file():
                shutil.copy2(work / name, tmp / name)
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n")
        _swap_in(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return final


def _swap_in(tmp: Path, final: Path) -> None:
    """Replace ``final`` by ``tmp``; the old directory survives until the new one is in place."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old)
