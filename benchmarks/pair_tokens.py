"""Tokens per (query, product text) pair on the sample: the input of docs/gpu.md's time estimate.

    python -m benchmarks.pair_tokens [--tokenizer minilm|<local HF dir>] [--max-lengths 64,128,256]

Pairs are rendered exactly as the fine-tuning stage renders them (``finetune.inputs.pair_texts``)
and tokenised as it does (``longest_first`` to ``max_length``). "padded" is what training pays:
tokens per pair after length-grouped batching (``LengthGroupedSampler``, batch ``--batch-size``)
pads each batch to its longest pair. Writes ``benchmarks/results/pair_tokens.md``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer
from transformers.trainer_pt_utils import LengthGroupedSampler

from data.esci_io import load_esci
from esci import backbones
from esci.artifacts import write_text
from esci.config import DataConfig
from finetune.config import FinetuneConfig
from finetune.inputs import pair_texts, text_settings

REPO = Path(__file__).resolve().parents[1]


def padded_per_pair(lengths: np.ndarray, batch_size: int, seed: int = 0) -> float:
    order = list(LengthGroupedSampler(batch_size, lengths=lengths.tolist(),
                                      generator=torch.Generator().manual_seed(seed)))
    batches = [lengths[order[i:i + batch_size]] for i in range(0, len(order), batch_size)]
    return float(sum(b.max() * len(b) for b in batches) / len(lengths))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Tokens per fine-tuning pair on the sample.")
    ap.add_argument("--tokenizer", default="minilm", help="minilm or a local Hugging Face directory")
    ap.add_argument("--data-dir", default=str(REPO / "data" / "esci_sample"))
    ap.add_argument("--max-lengths", default="64,128,256")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "pair_tokens.md"))
    args = ap.parse_args(argv)
    data = load_esci(args.data_dir)
    tok = AutoTokenizer.from_pretrained(backbones.resolve(args.tokenizer))
    lines = ["| max_length | pairs | mean tokens | share at max_length | padded tokens / pair (length-grouped) |",
             "|---|---|---|---|---|"]
    full = None
    for length in (int(x) for x in args.max_lengths.split(",")):
        texts = pair_texts(data.examples, data.products, text_settings(FinetuneConfig(max_length=length), DataConfig()))
        if full is None:  # untruncated, for reference (the product text itself is cut at max_field_chars)
            full = np.array([len(x) for x in tok(texts["query"].tolist(), texts["text"].tolist())["input_ids"]])
        enc = tok(texts["query"].tolist(), texts["text"].tolist(), truncation="longest_first", max_length=length)
        n = np.array([len(x) for x in enc["input_ids"]])
        lines.append(f"| {length} | {len(n)} | {n.mean():.1f} | {(n == length).mean():.0%} | "
                     f"{padded_per_pair(n, args.batch_size):.1f} |")
    table = ("\n".join(lines) + "\n\n"
             f"Tokenizer {args.tokenizer}, real sample pairs rendered by the fine-tuning stage (product "
             f"fields cut at {FinetuneConfig().max_field_chars} characters), batch {args.batch_size}. "
             f"Untruncated: mean {full.mean():.1f} tokens, median {np.median(full):.0f}.\n")
    write_text(table, args.out)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
