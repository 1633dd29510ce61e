"""Weak-label rules of query understanding, on hand-written queries."""
from __future__ import annotations

import pandas as pd
import pytest

from query_understanding.clusters import fit_title_clusters
from query_understanding.weak_labels import (IGNORE, brand_intent, build_labels, entity_spans, ner_tags,
                                             query_words, size_spans, term_weights)


def tags(query, brands=(), colors=()):
    return ner_tags(query_words(query), list(brands), list(colors))


def test_brand_needs_an_engaged_product_of_that_brand():
    # Target's "orange store" vs "buy an orange": the same word is an entity only in one query.
    assert tags("apple watch band", brands=["Apple"]) == ["B-BRAND", "O", "O"]
    assert tags("apple slicer", brands=["OXO"]) == ["O", "O"]
    assert brand_intent(tags("apple watch band", brands=["Apple"])) == 1
    assert brand_intent(tags("apple slicer", brands=["OXO"])) == 0


def test_brand_spans_normalise_case_punctuation_spacing_and_suffixes():
    assert tags("Power Acoustik receiver", brands=["POWER ACOUSTIK"]) == ["B-BRAND", "I-BRAND", "O"]
    assert tags("loreal shampoo", brands=["L'Oréal"]) == ["O", "O"]  # accents are kept: not the same key
    assert tags("l'oréal shampoo", brands=["L'Oréal Paris Inc"]) == ["O", "O"]  # "paris" is not in the query
    assert tags("scosche harness", brands=["Scosche Inc."]) == ["B-BRAND", "O"]
    assert tags("poweracoustik radio", brands=["Power Acoustik"]) == ["B-BRAND", "O"]


def test_colour_rule_and_brand_precedence():
    assert tags("red running shoes", colors=["Red"]) == ["B-COLOR", "O", "O"]
    assert tags("navy blue rug", colors=["Navy Blue/White"]) == ["B-COLOR", "I-COLOR", "O"]
    assert tags("white rug", colors=["Navy Blue/White"]) == ["B-COLOR", "O"]
    # Colour values with digits are variant names, never colours (3gb is a size by the SIZE rule).
    assert tags("standard 3gb", colors=["Standard 3GB"]) == ["O", "B-SIZE"]
    # The same word named as brand and as colour of engaged products: BRAND wins.
    assert tags("black diamond harness", brands=["Black Diamond"], colors=["Black"]) == ["B-BRAND", "I-BRAND", "O"]


@pytest.mark.parametrize("query, expected", [
    ("0.5cc syringe", ["B-SIZE", "O"]),
    ("20 x 40 rug", ["B-SIZE", "I-SIZE", "I-SIZE", "O"]),
    ("20x40cm frame", ["B-SIZE", "O"]),
    ("1 inch pipe", ["B-SIZE", "I-SIZE", "O"]),
    ("9 volt battery", ["B-SIZE", "I-SIZE", "O"]),
    ("hdmi splitter 3", ["O", "O", "O"]),  # a bare number is no size
    ("plug in charger", ["O", "O", "O"]),  # "in" is a unit only after a number
])
def test_size_rule(query, expected):
    assert tags(query) == expected


def test_size_does_not_overwrite_an_entity():
    assert size_spans(query_words("1 inch")) == [(0, 2, "SIZE")]
    assert tags("3m tape 1 inch", brands=["3M"]) == ["B-BRAND", "O", "B-SIZE", "I-SIZE"]


def test_entity_spans_read_bio():
    words = ["power", "acoustik", "red", "1", "inch"]
    t = ["B-BRAND", "I-BRAND", "B-COLOR", "B-SIZE", "I-SIZE"]
    assert entity_spans(words, t) == [("BRAND", "power acoustik"), ("COLOR", "red"), ("SIZE", "1 inch")]


def test_term_weight_rule():
    assert term_weights(query_words("apple watch band"), ["Apple Watch Band 44mm, Silicone"]) == [1, 1, 1]
    assert term_weights(query_words("apple slicer"), ["OXO Good Grips Apple Corer"]) == [1, 0]
    assert term_weights(query_words("apple slicer"), []) == [IGNORE, IGNORE]  # no E product: masked
    assert term_weights(["-", "band"], ["Watch band"]) == [IGNORE, 1]  # punctuation carries no weight
    # CJK titles have no spaces: a CJK query word counts when it is a substring of the title.
    assert term_weights(["テープ", "黒"], ["強力両面テープ ホワイト"]) == [1, 0]


def test_build_labels_uses_e_products_for_tw_pt_qc_and_es_for_ner():
    examples = pd.DataFrame({
        "example_id": ["1", "2", "3", "4"], "query_id": ["a", "a", "b", "c"],
        "query": ["apple watch band", "apple watch band", "apple slicer", "red rug"],
        "product_id": ["p1", "p2", "p3", "p4"], "product_locale": ["us"] * 4,
        "esci_label": ["E", "S", "E", "I"]})
    products = pd.DataFrame({
        "product_id": ["p1", "p2", "p3", "p4"], "product_locale": ["us"] * 4,
        "product_title": ["Apple Watch Band", "Nike Sport Band", "OXO Apple Slicer", "Red Rug"],
        "product_brand": ["Apple", "Nike", "OXO", "RugCo"], "product_color": ["Black", None, "Red", "Red"]})
    idx = pd.MultiIndex.from_frame(products[["product_id", "product_locale"]])
    pt = pd.Series([0, 1, 2, 3], index=idx)
    qc = pd.Series([0, 0, 1, 1], index=idx)
    lab = build_labels(examples, products, pt, qc).set_index("query_id")
    assert lab.loc["a", "ner"] == ["B-BRAND", "O", "O"] and lab.loc["a", "intent"] == 1
    assert lab.loc["a", "pt"] == [0] and lab.loc["a", "qc"] == [0]  # the S product's cluster is no label
    assert lab.loc["b", "ner"] == ["O", "O"] and lab.loc["b", "intent"] == 0
    assert lab.loc["b", "tw"] == [1, 1]
    # Only an irrelevant product: no NER label, TW / PT / QC masked.
    assert lab.loc["c", "ner"] is None and lab.loc["c", "intent"] == -1
    assert lab.loc["c", "tw"] == [IGNORE, IGNORE] and lab.loc["c", "pt"] == [] and not lab.loc["c", "has_e"]


def test_title_clusters_group_product_types_and_name_them():
    kinds = ["stainless steel chef knife {} inch blade", "cotton crew socks pack of {} pairs",
             "usb c charging cable {} ft braided", "ceramic coffee mug {} oz handle"]
    titles = [k.format(i) for k in kinds for i in range(5)]
    products = pd.DataFrame({"product_id": [str(i) for i in range(20)], "product_locale": "us",
                             "product_title": titles})
    c = fit_title_clusters(products, n_pt=4, n_qc=2, seed=0, svd_dims=8, top_terms=7)
    pt = c.assignments["pt"].to_numpy()
    assert all(len(set(pt[i:i + 5])) == 1 for i in range(0, 20, 5))
    assert len(set(pt)) == 4
    terms = dict(zip(c.pt_terms["cluster"], c.pt_terms["top_terms"]))
    for i, word in zip(range(0, 20, 5), ["knife", "socks", "cable", "mug"]):
        assert word in terms[pt[i]]
    # Each fine cluster sits in one coarse cluster, as in a category tree.
    qc_of_pt = dict(zip(c.pt_terms["cluster"], c.pt_terms["qc"]))
    assert all(c.assignments["qc"].to_numpy() == [qc_of_pt[p] for p in pt])
    assert c.qc_terms["size"].sum() == 20
