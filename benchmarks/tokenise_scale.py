"""Throughput and size of the fine-tuning input cache on SYNTHETIC pairs, projected to full size.

``finetune.inputs.cached_pairs`` tokenises every (query, product text) pair with the backbone's
tokenizer, builds the unit bags and writes one ``pairs-<key>.npz`` per run. This measures, at a
few sizes in one run: the tokenizer call alone, the whole cold build (tokens + unit bags + save),
the warm reload, and the file size, and extrapolates linearly to the full 2.6M pairs.

    RAYON_NUM_THREADS=1 python -m benchmarks.tokenise_scale [--pairs 10000 40000]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from data.esci_io import load_esci
from data.synthetic import write_synthetic
from esci.artifacts import write_text
from esci.backbones import load_tokenizer
from esci.config import DataConfig
from finetune.config import FinetuneConfig
from finetune.inputs import IdVocab, cached_pairs, pair_texts, text_settings

FULL_PAIRS = 2_600_000
PRODUCTS_PER_QUERY = 20.0


def measure(data_dir: Path, cache_dir: Path, tokenizer, cfg: FinetuneConfig) -> dict:
    data = load_esci(data_dir)
    ts = text_settings(cfg, DataConfig())
    t = time.perf_counter()
    texts = pair_texts(data.examples, data.products, ts)
    render_s = time.perf_counter() - t
    t = time.perf_counter()
    tokenizer(texts["query"].tolist(), texts["text"].tolist(), truncation=ts.truncation,
              max_length=ts.max_length, padding=False)
    tokenise_s = time.perf_counter() - t
    products = texts.drop_duplicates(["product_id", "product_locale"])
    vocabs = {name: IdVocab.from_counts(products[name], 1 if name == "locale" else cfg.id_min_count)
              for name in ("brand", "color", "locale")}
    t = time.perf_counter()
    pairs = cached_pairs(cache_dir, texts, tokenizer, "minilm", ts, cfg, vocabs)
    cold_s = time.perf_counter() - t
    t = time.perf_counter()
    cached_pairs(cache_dir, texts, tokenizer, "minilm", ts, cfg, vocabs)
    warm_s = time.perf_counter() - t
    size = sum(p.stat().st_size for p in cache_dir.glob("pairs-*.npz"))
    for p in cache_dir.glob("pairs-*.npz"):
        p.unlink()
    n = len(texts)
    return {"pairs": n, "mean_tokens": float(pairs.lengths().mean()), "render_s": render_s,
            "tokenise_s": tokenise_s, "tokenise_pairs_per_s": n / tokenise_s,
            "cold_cache_s": cold_s, "cold_pairs_per_s": n / cold_s, "warm_load_s": warm_s,
            "cache_mib": size / 2 ** 20, "cache_bytes_per_pair": size / n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, nargs="+", default=[10_000, 40_000])
    ap.add_argument("--out", default="benchmarks/results/tokenise_scale.md")
    args = ap.parse_args()
    cfg = FinetuneConfig()
    tokenizer = load_tokenizer("minilm")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sorted(args.pairs):
            data_dir = write_synthetic(Path(tmp) / f"syn_{n}", max(5, round(n / PRODUCTS_PER_QUERY)),
                                       PRODUCTS_PER_QUERY, seed=0, products_per_example=1.8 / 2.6,
                                       text_scale=1.5)
            rows.append(measure(data_dir, Path(tmp) / "cache", tokenizer, cfg))
            print({k: round(v, 3) for k, v in rows[-1].items()}, flush=True)
    t = pd.DataFrame(rows)
    # full-size projection from the largest size's per-pair rates (time and bytes are per pair)
    big = t.iloc[-1]
    proj = {"pairs": str(FULL_PAIRS), "tokenise_h": FULL_PAIRS / big["tokenise_pairs_per_s"] / 3600,
            "cold_cache_h": FULL_PAIRS / big["cold_pairs_per_s"] / 3600,
            "cache_gib": FULL_PAIRS * big["cache_bytes_per_pair"] / 2 ** 30}
    threads = os.environ.get("RAYON_NUM_THREADS", "unset")
    text = ("# Fine-tuning input cache at scale (SYNTHETIC pairs)\n\n"
            f"Command: `RAYON_NUM_THREADS={threads} python -m benchmarks.tokenise_scale "
            f"{' '.join(sys.argv[1:])}`. MiniLM (all-MiniLM-L6-v2) fast tokenizer, "
            f"`FinetuneConfig` defaults (max_length={cfg.max_length}, max_field_chars="
            f"{cfg.max_field_chars}, truncation={cfg.truncation}); SYNTHETIC data from "
            "`data.synthetic` (text_scale=1.5, 0.69 products per example). `tokenise_*`: the "
            "tokenizer call alone; `cold_cache_*`: `finetune.inputs.cached_pairs` building and "
            "saving everything (tokens, unit bags, ids); `warm_load_s`: reading it back. The "
            "machine was shared with other jobs, so times are upper bounds.\n\n"
            + t.round(3).to_markdown(index=False) + "\n\n"
            "Projected to the full set from the largest size, linearly per pair:\n\n"
            + pd.DataFrame([proj]).round(2).to_markdown(index=False) + "\n")
    write_text(text, args.out)
    print(text)


if __name__ == "__main__":
    main()
