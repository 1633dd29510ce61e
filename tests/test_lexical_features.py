import bm25s
import numpy as np
import pandas as pd
import pytest

from baseline.lexical_features import _bm25_pair_scores, build_lexical_features
from data.text_tokens import numbers_with_units, tokenize


def test_pairwise_bm25_equals_bm25s_full_scoring():
    docs = [["red", "mug", "ceramic"], ["blue", "mug"], ["red", "red", "shoe"], ["ceramic", "bowl"]]
    queries = [["red", "mug"], ["ceramic", "bowl", "unknown"]]
    pair_doc = np.array([0, 1, 2, 3, 0, 2])
    pair_query = np.array([0, 0, 0, 1, 1, 1])
    got = _bm25_pair_scores(docs, queries, pair_doc, pair_query)
    ref = bm25s.BM25()
    ref.index(docs, show_progress=False)
    full = {q: ref.get_scores([t for t in queries[q] if t in ref.vocab_dict]) for q in (0, 1)}
    want = [full[q][d] for d, q in zip(pair_doc, pair_query)]
    assert np.allclose(got, want, atol=1e-5)


def test_tokens_split_japanese_into_bigrams_and_keep_units():
    assert tokenize("ワイヤレス Bluetooth") == ["ワイ", "イヤ", "ヤレ", "レス", "bluetooth"]
    assert numbers_with_units("0.5cc syringe, 20 x 40 cm, 1 inch") >= {"0.5cc", "20", "40cm", "1inch"}


def test_feature_rows_follow_examples_and_see_brand_and_colour():
    products = pd.DataFrame({"product_id": ["a", "b"], "product_locale": ["us", "us"],
                             "product_title": ["Acme red mug 12oz", "blue bowl"],
                             "product_brand": ["Acme", None], "product_color": ["Red", None],
                             "product_bullet_point": [None, None], "product_description": [None, None]})
    examples = pd.DataFrame({"example_id": ["1", "2", "3"], "query": ["acme mug", "acme mug", "red 12oz"],
                             "product_id": ["a", "b", "a"], "product_locale": ["us"] * 3})
    f = build_lexical_features(examples, products).set_index("example_id")
    assert f.loc["1", "brand_in_query"] == 1 and f.loc["2", "brand_in_query"] == 0
    assert f.loc["3", "color_in_query"] == 1 and f.loc["3", "num_match"] == 1
    assert f.loc["1", "bm25_title"] > f.loc["2", "bm25_title"] == 0
    assert f.loc["1", "tok_frac_title"] == pytest.approx(1.0)
