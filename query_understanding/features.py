"""Per-example features for the relevance stack, from query-understanding predictions.

The QU model sees only the query (and, under EAMT, entities of *other* training queries); each
feature compares its prediction with the candidate product. Numeric columns only:

* ``qu_has_brand`` / ``qu_has_color``: the query has a predicted BRAND / COLOR entity (0/1).
* ``qu_brand_match`` / ``qu_color_match``: 1 when a predicted entity names the product's brand /
  colour (keys equal, or one contains the other with >= 3 characters), 0 when not, NaN when there
  is no predicted entity or the product has no brand / colour.
* ``qu_tw_overlap``: sum over query words of predicted term weight x [word in the title],
  divided by the sum of the weights (NaN when they sum to 0).
* ``qu_pt_agree`` / ``qu_qc_agree``: predicted probability of the product's PT / QC cluster.
* ``qu_pt_top``: 1 when the product's PT cluster is the query's most probable one.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from query_understanding.evaluate import decode_tags
from query_understanding.weak_labels import brand_keys, color_keys, entity_spans, title_vocab, word_key

FEATURE_COLUMNS = ["qu_has_brand", "qu_brand_match", "qu_has_color", "qu_color_match", "qu_tw_overlap",
                   "qu_pt_agree", "qu_qc_agree", "qu_pt_top"]


def _matches(pred_keys: list[str], value_keys: set[str]) -> float:
    if not pred_keys or not value_keys:
        return float("nan")
    for p in pred_keys:
        for v in value_keys:
            if p == v or (min(len(p), len(v)) >= 3 and (p in v or v in p)):
                return 1.0
    return 0.0


def query_predictions(words: pd.Series, outputs: dict) -> pd.DataFrame:
    """One row per query: predicted brand / colour entities (texts and keys), term weights,
    PT / QC probability vectors. ``outputs`` aligned with ``words`` (train.predict's format)."""
    out = pd.DataFrame({"words": list(words)})
    if "ner" in outputs:
        spans = [entity_spans(w, t) for w, t in zip(words, decode_tags(outputs["ner"]))]
        for kind, col in (("BRAND", "brand"), ("COLOR", "color")):
            out[f"pred_{col}"] = [[text for k, text in s if k == kind] for s in spans]
    for task in ("tw", "pt", "qc"):
        if task in outputs:
            out[f"{task}_probs"] = [np.asarray(x, dtype=np.float32) for x in outputs[task]]
    return out


def example_features(examples: pd.DataFrame, products: pd.DataFrame, assignments: pd.DataFrame,
                     per_query: pd.DataFrame) -> pd.DataFrame:
    """``examples`` rows (example_id, query_id, product_id, product_locale) -> FEATURE_COLUMNS.

    ``per_query``: query_predictions indexed by query_id; ``assignments``: product PT / QC clusters.
    """
    key = ["product_id", "product_locale"]
    df = examples[["example_id", "query_id"] + key].merge(
        products[key + ["product_title", "product_brand", "product_color"]], on=key, how="left").merge(
        assignments, on=key, how="left")
    rows = []
    for r in df.itertuples(index=False):
        q = per_query.loc[r.query_id]
        f = dict.fromkeys(FEATURE_COLUMNS, np.nan)
        if "pred_brand" in q:
            brands = [word_key(b) for b in q["pred_brand"]]
            colors = [word_key(c) for c in q["pred_color"]]
            f["qu_has_brand"], f["qu_has_color"] = float(bool(brands)), float(bool(colors))
            f["qu_brand_match"] = _matches(brands, brand_keys(r.product_brand))
            f["qu_color_match"] = _matches(colors, color_keys(r.product_color))
        if "tw_probs" in q and isinstance(r.product_title, str):
            weights = q["tw_probs"]
            vocab, _ = title_vocab([r.product_title])
            present = np.array([word_key(w) in vocab for w in q["words"]], dtype=np.float32)
            total = float(weights.sum())
            f["qu_tw_overlap"] = float((weights * present).sum() / total) if total > 0 else np.nan
        for task in ("pt", "qc"):
            cluster = getattr(r, task)
            if f"{task}_probs" in q and not pd.isna(cluster):
                f[f"qu_{task}_agree"] = float(q[f"{task}_probs"][int(cluster)])
                if task == "pt":
                    f["qu_pt_top"] = float(int(np.argmax(q["pt_probs"])) == int(cluster))
        rows.append(f)
    out = pd.DataFrame(rows, columns=FEATURE_COLUMNS, dtype=np.float32)
    out.insert(0, "example_id", df["example_id"].astype(str).to_numpy())
    return out
