"""SYNTHETIC data in the official ESCI layout, at any size, deterministic by seed.

For scale/speed benchmarks and tests only: never for a reported quality number. The text is
made of invented words; labels follow lexical overlap so that models have something to learn.

    python -m data.synthetic --out runs/synthetic_data --queries 2000 --seed 0

Full size (the real set's 2.6M examples over 1.8M products, its text lengths) in bounded memory:

    python -m data.synthetic --out /tmp/esci_full --queries 130000 \
        --products-per-example 0.69 --text-scale 1.5
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from esci.artifacts import atomic_path, write_text

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
             test_fraction: float = 0.1, *, products_per_example: float = 1.0,
             text_scale: float = 1.0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Return (examples, products, sources) frames in the official layout (vectorised).

    ``products_per_example`` < 1 lets that share of rows keep its own product and points the
    others at another query's product of the same locale, labelled I (no overlap), as the real
    set shares 1.8M products among 2.6M pairs. ``text_scale`` stretches titles, descriptions and
    bullets (1.5 gives about the real sample's raw characters per product, ~1.1k).
    """
    rng = np.random.default_rng(seed)
    return _generate_part(rng, _vocabulary(rng), n_queries, products_per_query, test_fraction,
                          products_per_example, text_scale)[:3]


def _vocabulary(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    n_words, n_brands = 3000, 300
    # one vocabulary for all locales; locale k owns words [k*n_words, (k+1)*n_words)
    words = np.concatenate([_lexicon(rng, n_words, loc) for loc in LOCALES]).astype(object)
    brands = np.concatenate([_lexicon(rng, n_brands, loc) for loc in LOCALES]).astype(object)
    return words, brands


def _generate_part(rng: np.random.Generator, vocabulary: tuple[np.ndarray, np.ndarray], n_queries: int,
                   products_per_query: float, test_fraction: float, products_per_example: float,
                   text_scale: float, first_query: int = 0, first_row: int = 0):
    words, brands = vocabulary
    n_words, n_brands = len(words) // len(LOCALES), len(brands) // len(LOCALES)
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
    n_title = max(3, round(10 * text_scale))
    title_idx = rng.integers(0, n_words, size=(n, n_title)) + (loc * n_words)[:, None]
    take = np.arange(3)[None, :] < share[:, None]
    title_idx[:, :3] = np.where(take, q_words[q_of_row], title_idx[:, :3])
    brand = brands[rng.integers(0, n_brands, size=n) + loc * n_brands]
    titles = [f"{b} {t}" for b, t in zip(brand.tolist(), _join(words, title_idx.ravel(), np.full(n, n_title)))]

    desc_len = rng.integers(round(5 * text_scale), round(80 * text_scale), size=n)
    desc_idx = rng.integers(0, n_words, size=int(desc_len.sum())) + np.repeat(loc * n_words, desc_len)
    descriptions = np.array(["<p>" + d + "</p>" for d in _join(words, desc_idx, desc_len)], dtype=object)
    descriptions[desc_len < round(12 * text_scale)] = None
    n_bullet = round(60 * text_scale)
    bullet_len = np.full(n, n_bullet)
    bullet_idx = rng.integers(0, n_words, size=n * n_bullet) + np.repeat(loc * n_words, n_bullet)
    bullets = [b.replace(" ~ ", "\n") for b in _join(np.append(words, "~"), np.where(
        (np.arange(n * n_bullet) % 12) == 11, len(words), bullet_idx), bullet_len)]

    product_id = np.char.add("SYN", np.char.zfill(np.arange(first_row, first_row + n).astype(str), 9))
    test_q = rng.random(n_queries) < test_fraction
    examples = pd.DataFrame({
        "example_id": np.arange(first_row, first_row + n, dtype=np.int64),
        "query": queries[q_of_row],
        "query_id": (q_of_row + first_query).astype(np.int64),
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
    sources = pd.DataFrame({"query_id": np.arange(first_query, first_query + n_queries),
                            "source": rng.choice(["other", "negations", "parse_pattern", "behavioral"],
                                                 size=n_queries, p=[0.85, 0.05, 0.05, 0.05])})
    if products_per_example < 1.0:
        examples, products = _share_products(rng, examples, products, loc, products_per_example)
    return examples, products, sources, n


def _share_products(rng: np.random.Generator, examples: pd.DataFrame, products: pd.DataFrame,
                    loc: np.ndarray, keep_share: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Point ``1 - keep_share`` of the rows at a kept product of the same locale, labelled I."""
    reuse = rng.random(len(examples)) >= keep_share
    target = np.arange(len(examples))
    for k in range(len(LOCALES)):
        owners = np.flatnonzero(~reuse & (loc == k))
        rows = np.flatnonzero(reuse & (loc == k))
        if len(owners) == 0:  # no product of this locale kept: these rows keep their own
            reuse[rows] = False
            continue
        target[rows] = owners[rng.integers(0, len(owners), size=len(rows))]
    examples = examples.assign(product_id=examples["product_id"].to_numpy()[target],
                               esci_label=np.where(reuse, "I", examples["esci_label"].to_numpy()))
    # a query may have drawn the same product twice, or its own: one judgement per pair
    examples = examples[~examples.duplicated(["query_id", "product_id"])].reset_index(drop=True)
    return examples, products[~reuse].reset_index(drop=True)


def write_synthetic(out_dir: str | Path, n_queries: int = 1000, products_per_query: float = 20.0,
                    seed: int = 0, *, products_per_example: float = 1.0, text_scale: float = 1.0,
                    chunk_queries: int = 10_000) -> Path:
    """Write the official layout, ``chunk_queries`` queries at a time, so memory stays bounded.

    Deterministic by (seed, chunk_queries); up to ``chunk_queries`` queries it writes exactly
    ``generate(...)``. Later chunks share the vocabulary and draw from seed ``[seed, chunk]``.
    """
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    vocabulary = _vocabulary(rng)
    files = {name: out / f"shopping_queries_dataset_{name}.parquet" for name in ("examples", "products")}
    sources, writers, first_row = [], {}, 0
    with atomic_path(files["examples"]) as ex_tmp, atomic_path(files["products"]) as pr_tmp:
        tmp = {"examples": ex_tmp, "products": pr_tmp}
        try:
            for chunk, first_query in enumerate(range(0, n_queries, chunk_queries)):
                part_rng = rng if chunk == 0 else np.random.default_rng([seed, chunk])
                ex, pr, src, n_rows = _generate_part(part_rng, vocabulary, min(chunk_queries, n_queries - first_query),
                                             products_per_query, 0.1, products_per_example, text_scale,
                                             first_query, first_row)
                first_row += n_rows
                sources.append(src)
                for name, frame in (("examples", ex), ("products", pr)):
                    table = pa.Table.from_pandas(frame, preserve_index=False)
                    if name not in writers:
                        # large strings throughout: a chunk's all-null column must not fix the type
                        schema = pa.schema([pa.field(f.name, pa.large_string()) if f.type in (
                            pa.string(), pa.large_string(), pa.null()) else f for f in table.schema])
                        writers[name] = pq.ParquetWriter(tmp[name], schema)
                    writers[name].write_table(table.cast(writers[name].schema))
        finally:
            for writer in writers.values():
                writer.close()
    with atomic_path(out / "shopping_queries_dataset_sources.csv") as tmp_csv:
        pd.concat(sources, ignore_index=True).to_csv(tmp_csv, index=False)
    write_text(f"# SYNTHETIC ESCI-layout data\n\nGenerated by `python -m data.synthetic` with "
               f"n_queries={n_queries}, products_per_query={products_per_query}, seed={seed}, "
               f"products_per_example={products_per_example}, text_scale={text_scale}, "
               f"chunk_queries={chunk_queries}.\n"
               "Invented words, not real products. For speed and scale tests only; never report a "
               "quality number on it.\n", out / "SOURCE.md")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--products-per-query", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--products-per-example", type=float, default=1.0)
    ap.add_argument("--text-scale", type=float, default=1.0)
    args = ap.parse_args()
    print(write_synthetic(args.out, args.queries, args.products_per_query, args.seed,
                          products_per_example=args.products_per_example, text_scale=args.text_scale))


if __name__ == "__main__":
    main()
