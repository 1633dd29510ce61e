"""SYNTHETIC data in the official ESCI layout, at any size, deterministic by seed.

For scale/speed benchmarks and tests only: never for a reported quality number. The text is
made of invented words; labels follow lexical overlap so that models have something to learn.

    python -m data.synthetic --out runs/synthetic_data --queries 2000 --seed 0
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from esci.artifacts import write_parquet, write_text, write_csv

LOCALES = np.array(["us", "es", "jp"])
LOCALE_P = [0.7, 0.15, 0.15]
COLORS = np.array(["black", "white", "red", "blue", "green", "silver", "pink", "grey"])
LABELS = np.array(["E", "S", "C", "I"])
LABEL_P = [0.65, 0.22, 0.03, 0.10]
SYLLABLES = ["ka", "to", "ri", "mo", "sen", "lu", "par", "vi", "dor", "ex", "qua", "bel", "zo", "tan"]
KANA = list("アイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモ")


def _lexicon(rng: np.random.Generator, n: int, locale: str) -> np.ndarray:
    if locale == "jp":
        return np.array(["".join(rng.choice(KANA, size=rng.integers(2, 5))) for _ in range(n)])
    return np.array(["".join(rng.choice(SYLLABLES, size=rng.integers(2, 4))) for _ in range(n)])


def _join(words: np.ndarray, idx: np.ndarray, lengths: np.ndarray, sep: str = " ") -> list[str]:
    """Join ``words[idx]`` into strings of ``lengths`` consecutive words each."""
    flat = words[idx].tolist()
    ends = np.cumsum(lengths)
    return [sep.join(flat[a:b]) for a, b in zip((ends - lengths).tolist(), ends.tolist())]


def generate(n_queries: int = 1000, products_per_query: float = 20.0, seed: int = 0,
             test_fraction: float = 0.1) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Return (examples, products, sources) frames in the official layout (vectorised: the
    full dataset's 2.6M rows take about a minute)."""
    rng = np.random.default_rng(seed)
    n_words, n_brands = 3000, 300
    # one vocabulary for all locales; locale k owns words [k*n_words, (k+1)*n_words)
    words = np.concatenate([_lexicon(rng, n_words, loc) for loc in LOCALES]).astype(object)
    brands = np.concatenate([_lexicon(rng, n_brands, loc) for loc in LOCALES]).astype(object)

    sizes = np.maximum(1, rng.poisson(products_per_query, size=n_queries))
    n = int(sizes.sum())
    q_of_row = np.repeat(np.arange(n_queries), sizes)
    q_loc = rng.choice(len(LOCALES), size=n_queries, p=LOCALE_P)
    loc = q_loc[q_of_row]
    label = rng.choice(LABELS, size=n, p=LABEL_P)
    q_words = rng.integers(0, n_words, size=(n_queries, 3)) + (q_loc * n_words)[:, None]
    queries = np.array(_join(words, q_words.ravel(), np.full(n_queries, 3)), dtype=object)

    # Relevance shows in overlap: E shares all 3 query words, S two, C one, I none.
    share = np.select([label == "E", label == "S", label == "C"], [3, 2, 1], 0)
    title_idx = rng.integers(0, n_words, size=(n, 10)) + (loc * n_words)[:, None]
    take = np.arange(3)[None, :] < share[:, None]
    title_idx[:, :3] = np.where(take, q_words[q_of_row], title_idx[:, :3])
    brand = brands[rng.integers(0, n_brands, size=n) + loc * n_brands]
    titles = [f"{b} {t}" for b, t in zip(brand.tolist(), _join(words, title_idx.ravel(), np.full(n, 10)))]

    desc_len = rng.integers(5, 80, size=n)
    desc_idx = rng.integers(0, n_words, size=int(desc_len.sum())) + np.repeat(loc * n_words, desc_len)
    descriptions = np.array(["<p>" + d + "</p>" for d in _join(words, desc_idx, desc_len)], dtype=object)
    descriptions[desc_len < 12] = None
    bullet_len = np.full(n, 60)
    bullet_idx = rng.integers(0, n_words, size=n * 60) + np.repeat(loc * n_words, 60)
    bullets = [b.replace(" ~ ", "\n") for b in _join(np.append(words, "~"), np.where(
        (np.arange(n * 60) % 12) == 11, len(words), bullet_idx), bullet_len)]

    product_id = np.char.add("SYN", np.char.zfill(np.arange(n).astype(str), 9))
    test_q = rng.random(n_queries) < test_fraction
    examples = pd.DataFrame({
        "example_id": np.arange(n, dtype=np.int64),
        "query": queries[q_of_row],
        "query_id": q_of_row.astype(np.int64),
        "product_id": product_id,
        "product_locale": LOCALES[loc],
        "esci_label": label,
        "small_version": (rng.random(n_queries) < 0.5).astype(np.int64)[q_of_row],
        "large_version": np.ones(n, dtype=np.int64),
        "split": np.where(test_q[q_of_row], "test", "train"),
    })
    products = pd.DataFrame({
        "product_id": product_id, "product_title": titles, "product_description": descriptions,
        "product_bullet_point": bullets, "product_brand": brand,
        "product_color": rng.choice(COLORS, size=n), "product_locale": LOCALES[loc],
    })
    sources = pd.DataFrame({"query_id": np.arange(n_queries),
                            "source": rng.choice(["other", "negations", "parse_pattern", "behavioral"],
                                                 size=n_queries, p=[0.85, 0.05, 0.05, 0.05])})
    return examples, products, sources


def write_synthetic(out_dir: str | Path, n_queries: int = 1000, products_per_query: float = 20.0,
                    seed: int = 0) -> Path:
    out = Path(out_dir)
    examples, products, sources = generate(n_queries, products_per_query, seed)
    write_parquet(examples, out / "shopping_queries_dataset_examples.parquet")
    write_parquet(products, out / "shopping_queries_dataset_products.parquet")
    write_csv(sources, out / "shopping_queries_dataset_sources.csv")
    write_text(f"# SYNTHETIC ESCI-layout data\n\nGenerated by `python -m data.synthetic` with "
               f"n_queries={n_queries}, products_per_query={products_per_query}, seed={seed}.\n"
               "Invented words, not real products. For speed and scale tests only; never report a "
               "quality number on it.\n", out / "SOURCE.md")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--products-per-query", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(write_synthetic(args.out, args.queries, args.products_per_query, args.seed))


if __name__ == "__main__":
    main()
