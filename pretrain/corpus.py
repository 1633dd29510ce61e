"""The pre-training corpus: one row per product of the data directory, labels never read.

Products of the official test split are included: their text carries no label. Columns:
``product_id, product_locale, text`` (the full rendered product, for MLM and the contrastive
tasks), ``anon_text`` (the product with its brand and colour names removed, for the brand/colour
classifiers), ``query_source`` (title + brand + colour, where pseudo queries are drawn from),
``brand``/``color`` (normalised values), ``brand_label``/``color_label`` (vocabulary index or
``IGNORE``) and ``heldout`` (the slice kept for the held-out MLM loss).
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from data.esci_io import load_esci
from data.product_text import clean_field, render_products
from pretrain.config import PretrainConfig

IGNORE = -100  # label of a brand/colour too rare for the vocabulary (and of a missing one)
_SPACE = re.compile(r"\s+")


class EmptyCorpusError(ValueError):
    """The data directory holds no product text to pre-train on."""


def normalize_value(value: str) -> str:
    """NFKC, case-folded, collapsed whitespace: 'Black' and 'BLACK ' are one colour."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", value).casefold()).strip()


def remove_names(text: str, names: list[str]) -> str:
    """``text`` with every case-insensitive occurrence of each name removed.

    Removal repeats until no occurrence is left, because cutting one can join two halves into a
    new one ('BlBlackack'). Matching is on NFKC text so a full-width 'ＮＩＫＥ' goes too.
    """
    names = sorted({n for n in names if n}, key=len, reverse=True)
    out = _cut(unicodedata.normalize("NFKC", text), names)
    folded = normalize_value(out)
    if any(name in folded for name in names):
        # case folding can expand a character ('ß' -> 'ss') where IGNORECASE does not match;
        # then work on the folded text, losing its case but keeping the guarantee
        out = _cut(folded, names)
    return out


def _cut(text: str, names: list[str]) -> str:
    for name in names:
        pattern = re.compile(re.escape(name), re.IGNORECASE)
        while pattern.search(text):
            text = pattern.sub(" ", text)
    return _SPACE.sub(" ", text).strip()


@dataclass
class LabelVocab:
    """Values seen at least ``min_count`` times, most frequent first; index = class id."""
    values: list[str]

    @classmethod
    def fit(cls, values: pd.Series, min_count: int) -> "LabelVocab":
        counts = values[values != ""].value_counts()
        kept = counts[counts >= min_count]
        # sort by count then value, so the vocabulary does not depend on row order
        ordered = sorted(kept.items(), key=lambda kv: (-kv[1], kv[0]))
        return cls([v for v, _ in ordered])

    def encode(self, values: pd.Series) -> np.ndarray:
        index = {v: i for i, v in enumerate(self.values)}
        return values.map(lambda v: index.get(v, IGNORE)).to_numpy(dtype=np.int64)

    def __len__(self) -> int:
        return len(self.values)


@dataclass
class Corpus:
    frame: pd.DataFrame
    brand_vocab: LabelVocab
    color_vocab: LabelVocab
    source: str

    @property
    def train(self) -> pd.DataFrame:
        return self.frame[~self.frame["heldout"]].reset_index(drop=True)

    @property
    def heldout(self) -> pd.DataFrame:
        return self.frame[self.frame["heldout"]].reset_index(drop=True)


def read_products(data_dir: str | Path, subset: str = "all") -> tuple[pd.DataFrame, str]:
    """Products of an official-layout directory, or of a run directory's products.parquet."""
    data_dir = Path(data_dir)
    run_products = data_dir / "products.parquet"
    if run_products.is_file():
        return pd.read_parquet(run_products), str(run_products)
    return load_esci(data_dir, subset).products, str(data_dir)


def build_corpus(products: pd.DataFrame, cfg: PretrainConfig, source: str = "products") -> Corpus:
    """Render, anonymise, label and split ``products`` (one row per product_id, product_locale)."""
    products = products.reset_index(drop=True)
    text = render_products(products, cfg.product_fields, cfg.field_sep, cfg.max_field_chars,
                           cfg.locale_marker)
    title = clean_field(products["product_title"], cfg.max_field_chars)
    has_text = title != ""
    if not has_text.any():
        raise EmptyCorpusError(f"pretrain corpus: {source} has no product with a non-empty "
                               f"'product_title' ({len(products)} rows); nothing to pre-train on")
    products, text, title = products[has_text], text[has_text], title[has_text]

    brand_raw = clean_field(products["product_brand"], cfg.max_field_chars)
    color_raw = clean_field(products["product_color"], cfg.max_field_chars)
    brand, color = brand_raw.map(normalize_value), color_raw.map(normalize_value)
    anon_fields = [f for f in cfg.product_fields if f not in ("brand", "color")]
    anon_source = render_products(products, anon_fields, cfg.field_sep, cfg.max_field_chars,
                                  cfg.locale_marker)
    anon = [remove_names(t, [b, c]) for t, b, c in zip(anon_source, brand, color)]
    query_source = (title + " " + brand_raw + " " + color_raw).str.replace(_SPACE, " ", regex=True)

    frame = pd.DataFrame({
        "product_id": products["product_id"].astype(str).to_numpy(),
        "product_locale": products["product_locale"].astype(str).to_numpy(),
        "text": text.to_numpy(), "anon_text": anon, "query_source": query_source.str.strip().to_numpy(),
        "brand": brand.to_numpy(), "color": color.to_numpy(),
    })
    frame = frame.sort_values(["product_locale", "product_id"], kind="mergesort").reset_index(drop=True)
    frame["heldout"] = heldout_mask(frame, cfg.heldout_fraction, cfg.seed)
    # Vocabularies come from the training slice only, so held-out products stay unseen.
    train = frame[~frame["heldout"]]
    brand_vocab = LabelVocab.fit(train["brand"], cfg.label_min_count)
    color_vocab = LabelVocab.fit(train["color"], cfg.label_min_count)
    frame["brand_label"] = brand_vocab.encode(frame["brand"])
    frame["color_label"] = color_vocab.encode(frame["color"])
    return Corpus(frame, brand_vocab, color_vocab, source)


def heldout_mask(frame: pd.DataFrame, fraction: float, seed: int) -> np.ndarray:
    """A seeded ``fraction`` of products (at least one when fraction > 0, never all)."""
    n = len(frame)
    k = min(int(round(n * fraction)), n - 1)
    if fraction > 0:
        k = max(k, 1) if n > 1 else 0
    mask = np.zeros(n, dtype=bool)
    mask[np.random.default_rng(seed).permutation(n)[:k]] = True
    return mask


def load_corpus(cfg: PretrainConfig) -> Corpus:
    products, source = read_products(cfg.data_dir, cfg.subset)
    if products.empty:
        raise EmptyCorpusError(f"pretrain corpus: {source} has no products; nothing to pre-train on")
    return build_corpus(products, cfg, source)
