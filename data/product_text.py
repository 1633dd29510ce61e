"""The one renderer of a product for a model: every model's product text comes from here."""
from __future__ import annotations

import html
import re

import pandas as pd

FIELD_COLUMNS = {
    "title": "product_title",
    "brand": "product_brand",
    "color": "product_color",
    "bullets": "product_bullet_point",
    "description": "product_description",
}
_TAG = re.compile(r"<[^>]{0,200}>")
_SPACE = re.compile(r"\s+")


def clean_field(s: pd.Series, max_chars: int | None = None) -> pd.Series:
    """HTML tags and entities removed, whitespace collapsed, nulls to '', cut at ``max_chars``."""
    out = s.fillna("").astype(str)
    out = out.str.replace(_TAG, " ", regex=True).map(html.unescape)
    out = out.str.replace(_SPACE, " ", regex=True).str.strip()
    if max_chars:
        out = out.str.slice(0, max_chars)
    return out


def render_products(products: pd.DataFrame, fields: list[str] | tuple[str, ...] = tuple(FIELD_COLUMNS),
                    sep: str = " | ", max_field_chars: int | None = 1000,
                    locale_marker: bool = False) -> pd.Series:
    """Product text in ``fields`` order, empty fields skipped, joined by ``sep``.

    ``locale_marker`` prefixes ``<us>``/``<es>``/``<jp>`` so one model can tell marketplaces apart.
    """
    unknown = [f for f in fields if f not in FIELD_COLUMNS]
    if unknown:
        raise ValueError(f"product text: unknown field(s) {unknown}; known: {list(FIELD_COLUMNS)}")
    parts = [clean_field(products[FIELD_COLUMNS[f]], max_field_chars) for f in fields
             if FIELD_COLUMNS[f] in products]
    text = pd.Series("", index=products.index, dtype=object)
    for part in parts:  # vectorised join that skips empty fields
        both = (text != "") & (part != "")
        text = text.where(~both, text + sep) + part
    if locale_marker:
        text = "<" + products["product_locale"].astype(str) + "> " + text
    return text.astype(object)
