"""Model inputs, built once per run and cached: token ids of each (query, product text) pair,
multi-granular unit bags, and brand / colour / locale ids.

The sharded on-disk cache of these arrays is ``finetune.pairs_cache``.
"""
from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from data.product_text import clean_field, render_products
from finetune.units import Ragged, char_units, word_units

# Unit bags: (name, which text, granularity). "main" is title+brand+colour+bullets.
UNIT_FIELDS = (("query_char", "query", "char"), ("query_word", "query", "word"),
               ("main_char", "main", "char"), ("main_word", "main", "word"),
               ("desc_char", "desc", "char"), ("desc_word", "desc", "word"))
ID_FIELDS = ("brand", "color", "locale")
UNKNOWN = 0  # row 0 of every ID table: missing or rare value


@dataclass
class TextSettings:
    product_fields: list[str]
    field_sep: str
    max_field_chars: int | None
    locale_marker: bool
    max_length: int
    truncation: str


def text_settings(cfg, data_cfg) -> TextSettings:
    """The finetune section's text options, each falling back to the run's ``data`` section."""
    pick = lambda ours, theirs: theirs if ours is None else ours  # noqa: E731
    return TextSettings(pick(cfg.product_fields, data_cfg.product_fields),
                        pick(cfg.field_sep, data_cfg.field_sep),
                        pick(cfg.max_field_chars, data_cfg.max_field_chars),
                        pick(cfg.locale_marker, data_cfg.locale_marker),
                        cfg.max_length, cfg.truncation)


def normalise_value(s: pd.Series) -> pd.Series:
    """NFKC, case-folded, collapsed whitespace: the rule the pre-training brand/colour vocabularies use."""
    folded = clean_field(s).map(lambda v: unicodedata.normalize("NFKC", v).casefold())
    return folded.str.replace(r"\s+", " ", regex=True).str.strip()


class IdVocab:
    """Value -> row of an ID embedding table; row 0 holds unknown and rare values."""

    def __init__(self, values: list[str]):
        self.values = list(values)
        self.index = {v: i + 1 for i, v in enumerate(self.values)}

    @classmethod
    def from_counts(cls, column: pd.Series, min_count: int) -> "IdVocab":
        counts = column[column != ""].value_counts()
        return cls(sorted(counts.index[counts >= min_count]))

    def __len__(self) -> int:
        return len(self.values) + 1

    def lookup(self, column: pd.Series) -> np.ndarray:
        return column.map(self.index).fillna(UNKNOWN).to_numpy(dtype=np.int64)


@dataclass
class EncodedPairs:
    """Per-example model inputs, rows aligned with the examples frame they were built from."""

    example_id: np.ndarray
    tokens: Ragged
    token_types: Ragged | None
    unit_tables: dict[str, Ragged]  # per unique query / product text
    unit_rows: dict[str, np.ndarray]  # example -> row of its unit table
    ids: dict[str, np.ndarray]
    id_sizes: dict[str, int]

    def __len__(self) -> int:
        return len(self.example_id)

    def lengths(self) -> np.ndarray:
        return self.tokens.lengths()


def pair_texts(examples: pd.DataFrame, products: pd.DataFrame, ts: TextSettings) -> pd.DataFrame:
    """One row per example: query, product text for the encoder, unit texts, ID values."""
    prod = products.copy()
    prod["text"] = render_products(prod, ts.product_fields, ts.field_sep, ts.max_field_chars,
                                   ts.locale_marker)
    prod["main"] = render_products(prod, ["title", "brand", "color", "bullets"], " ", ts.max_field_chars)
    prod["desc"] = clean_field(prod["product_description"], ts.max_field_chars)
    prod["brand"] = normalise_value(prod["product_brand"])
    prod["color"] = normalise_value(prod["product_color"])
    cols = ["product_id", "product_locale", "text", "main", "desc", "brand", "color"]
    df = examples[["example_id", "query", "product_id", "product_locale"]].merge(
        prod[cols], on=["product_id", "product_locale"], how="left", validate="m:1")
    missing = df["text"].isna()
    if missing.any():
        rows = df.index[missing][:5].tolist()
        raise ValueError(f"finetune: products.parquet lacks the product of examples at rows {rows}")
    df["query"] = df["query"].fillna("").astype(str)
    df["locale"] = df["product_locale"].astype(str)
    return df


def _unit_table(texts: pd.Series, kind: str, n_buckets: int, desc: str) -> tuple[Ragged, np.ndarray]:
    codes, uniques = pd.factorize(texts, sort=False)
    make = char_units if kind == "char" else word_units
    arrays = [make(t, n_buckets) for t in tqdm(uniques, desc=desc, leave=False, mininterval=2)]
    return Ragged.from_arrays(arrays), codes.astype(np.int64)


def encode_pairs(df: pd.DataFrame, tokenizer, ts: TextSettings, cfg,
                 vocabs: dict[str, IdVocab]) -> EncodedPairs:
    enc = tokenizer(df["query"].tolist(), df["text"].tolist(), truncation=ts.truncation,
                    max_length=ts.max_length, padding=False)
    tokens = Ragged.from_arrays([np.asarray(x, dtype=np.int64) for x in enc["input_ids"]])
    types = (Ragged.from_arrays([np.asarray(x, dtype=np.int64) for x in enc["token_type_ids"]])
             if "token_type_ids" in enc else None)
    tables, rows = {}, {}
    for name, text, kind in UNIT_FIELDS:
        n = cfg.char_buckets if kind == "char" else cfg.word_buckets
        tables[name], rows[name] = _unit_table(df[text], kind, n, f"units {name}")
    ids = {name: vocabs[name].lookup(df[name]) for name in ID_FIELDS}
    return EncodedPairs(df["example_id"].to_numpy(dtype=object), tokens, types, tables, rows, ids,
                        {name: len(vocabs[name]) for name in ID_FIELDS})


def frame_digest(df: pd.DataFrame) -> str:
    """Content and row order: cached arrays are aligned with the frame's rows."""
    return hashlib.sha256(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes()).hexdigest()
