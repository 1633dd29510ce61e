"""Throughput and size of the fine-tuning input cache on SYNTHETIC pairs, projected to full size.

``finetune.pairs_cache.cached_pairs`` tokenises every (query, product text) pair with the
backbone's tokenizer, builds the unit bags and writes them shard by shard into
``pairs-<key>/``. This measures, at a few sizes in one run: the tokenizer call alone, the whole
cold build (tokens + unit bags + shards), the warm reload, the bytes on disk and the in-memory
size of the loaded arrays, and extrapolates linearly to the full 2.6M pairs.

    OMP_NUM_THREADS=1 RAYON_NUM_THREADS=1 python -m benchmarks.tokenise_scale [--pairs 5000 20000]
"""
from __future__ import annotations

import argparse
import os
import shutil
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
from finetune.inputs import IdVocab, pair_texts, text_settings
from finetune.pairs_cache import cached_pairs

FULL_PAIRS = 2_600_000
PRODUCTS_PER_QUERY = 20.0


def loaded_bytes(pairs) -> int:
    """Bytes of the arrays training holds (example ids excluded: the frame has them anyway)."""
    ragged = [pairs.tokens, *pairs.unit_tables.values()] + ([pairs.token_types] if pairs.token_types else [])
    arrays = [a for r in ragged for a in (r.values, r.offsets)]
    arrays = {id(a): a for a in arrays + list(pairs.unit_rows.values()) + list(pairs.ids.values())}
    return sum(a.nbytes for a in arrays.values())  # types share the tokens' offsets: count once


def measure(data_dir: Path, cache_dir: Path, tokenizer, cfg: FinetuneConfig, shard_pairs: int) -> dict:
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
    pairs = cached_pairs(cache_dir, texts, tokenizer, "minilm", ts, cfg, vocabs, shard_pairs)
    cold_s = time.perf_counter() - t
    t = time.perf_counter()
    cached_pairs(cache_dir, texts, tokenizer, "minilm", ts, cfg, vocabs, shard_pairs)
    warm_s = time.perf_counter() - t
    files = list(cache_dir.glob("pairs-*/rows-*.npz"))
    size = sum(p.stat().st_size for p in files)
    shutil.rmtree(cache_dir)
    n = len(texts)
    return {"pairs": n, "mean_tokens": float(pairs.lengths().mean()), "render_s": render_s,
            "tokenise_s": tokenise_s, "tokenise_pairs_per_s": n / tokenise_s,
            "cold_cache_s": cold_s, "cold_pairs_per_s": n / cold_s, "warm_load_s": warm_s,
            "shards": len(files), "cache_mib": size / 2 ** 20, "cache_bytes_per_pair": size / n,
            "loaded_bytes_per_pair": loaded_bytes(pairs) / n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, nargs="+", default=[5_000, 20_000])
    ap.add_argument("--shard-pairs", type=int, default=5_000,
                    help="pairs per shard (the pipeline default is 200k; small here so the sizes have several)")
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
            rows.append(measure(data_dir, Path(tmp) / "cache", tokenizer, cfg, args.shard_pairs))
            print({k: round(v, 3) for k, v in rows[-1].items()}, flush=True)
    t = pd.DataFrame(rows)
    # full-size projection from the largest size's per-pair rates (time and bytes are per pair)
    big = t.iloc[-1]
    proj = {"pairs": str(FULL_PAIRS), "tokenise_h": FULL_PAIRS / big["tokenise_pairs_per_s"] / 3600,
            "cold_cache_h": FULL_PAIRS / big["cold_pairs_per_s"] / 3600,
            "cache_gib": FULL_PAIRS * big["cache_bytes_per_pair"] / 2 ** 30,
            "loaded_gib": FULL_PAIRS * big["loaded_bytes_per_pair"] / 2 ** 30,
            "warm_load_min": FULL_PAIRS / big["pairs"] * big["warm_load_s"] / 60}
    threads = os.environ.get("RAYON_NUM_THREADS", "unset")
    omp = os.environ.get("OMP_NUM_THREADS", "unset")
    nice = f"nice -n {os.nice(0)} " if os.nice(0) else ""
    text = ("# Fine-tuning input cache at scale (SYNTHETIC pairs)\n\n"
            f"Command: `OMP_NUM_THREADS={omp} RAYON_NUM_THREADS={threads} {nice}python -m "
            "benchmarks.tokenise_scale "
            f"{' '.join(sys.argv[1:])}`. MiniLM (all-MiniLM-L6-v2) fast tokenizer, "
            f"`FinetuneConfig` defaults (max_length={cfg.max_length}, max_field_chars="
            f"{cfg.max_field_chars}, truncation={cfg.truncation}); SYNTHETIC data from "
            "`data.synthetic` (text_scale=1.5, 0.69 products per example). `tokenise_*`: the "
            "tokenizer call alone; `cold_cache_*`: `finetune.pairs_cache.cached_pairs` building and "
            f"writing every shard ({args.shard_pairs} pairs each; tokens, unit bags, ids) and "
            "loading the result; `warm_load_s`: a rerun reading every shard back; `cache_*`: "
            "bytes of the shards on disk; `loaded_bytes_per_pair`: the arrays held in memory "
            "after loading. The build holds one shard's encoding at a time (peak memory not "
            "measured here). The machine was shared with other jobs, so times are upper bounds.\n\n"
            + t.round(3).to_markdown(index=False) + "\n\n"
            "Projected to the full set from the largest size, linearly per pair:\n\n"
            + pd.DataFrame([proj]).round(2).to_markdown(index=False) + "\n")
    write_text(text, args.out)
    print(text)


if __name__ == "__main__":
    main()
